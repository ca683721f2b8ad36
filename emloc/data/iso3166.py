"""The embedded default task: which country does an ISO 3166-2 subdivision belong to?

Real, offline data: the Debian `iso-codes` JSON (`iso_3166-2.json`), or the PyPI `pycountry` package as a
fallback. Subdivision names are cleaned (bracketed alternates dropped) and names that occur more than once
among the chosen countries are removed, so every question has exactly one correct label. Queries are
class-balanced by default. This module deliberately does not download anything, translate names or use the
subdivision hierarchy (`parent`).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from emloc.data.base import Example, Task, balanced_sample

NATURAL_NAMES = {
    "GB": "United Kingdom", "SI": "Slovenia", "IT": "Italy", "FR": "France", "PH": "Philippines", "TR": "Turkey",
    "TH": "Thailand", "RU": "Russia", "UG": "Uganda", "EE": "Estonia", "CZ": "Czech Republic", "MA": "Morocco",
    "BD": "Bangladesh", "ES": "Spain", "VN": "Vietnam", "JP": "Japan",
}  # fmt: skip
DEFAULT_COUNTRIES = tuple(NATURAL_NAMES)
_SEARCH_DIRS = ("/usr/share/iso-codes/json", "/usr/local/share/iso-codes/json", "/opt/homebrew/share/iso-codes/json",
                f"{sys.prefix}/share/iso-codes/json")  # fmt: skip


def _find_json(filename: str) -> Path | None:
    for folder in _SEARCH_DIRS:
        if (Path(folder) / filename).is_file():
            return Path(folder) / filename
    try:  # non-standard prefix: ask the package manager where iso-codes put its files
        out = subprocess.run(["dpkg", "-L", "iso-codes"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return next((Path(p) for p in out.splitlines() if p.endswith(f"/json/{filename}")), None)


@lru_cache(maxsize=1)
def load_subdivisions() -> tuple[tuple[tuple[str, str, str], ...], str]:
    """All ISO 3166-2 records as (code, name, type) plus a description of the source they came from."""
    path = _find_json("iso_3166-2.json")
    if path is not None:
        records = json.loads(path.read_text(encoding="utf-8"))["3166-2"]
        return tuple((r["code"], r["name"], r.get("type", "")) for r in records), f"iso-codes:{path}"
    try:
        import pycountry
    except ImportError:
        raise FileNotFoundError(
            "ISO 3166-2 data not found: install the Debian package 'iso-codes' (iso_3166-2.json, looked in "
            f"{', '.join(_SEARCH_DIRS)} and `dpkg -L iso-codes`) or the PyPI package 'pycountry'"
        ) from None
    version = getattr(pycountry, "__version__", "unknown")
    records = tuple((s.code, s.name, getattr(s, "type", "")) for s in pycountry.subdivisions)
    return records, f"pycountry:{version}"


def country_name(code: str) -> str:
    """A readable country name: the built-in natural name, else the ISO 3166-1 (common) name."""
    if code in NATURAL_NAMES:
        return NATURAL_NAMES[code]
    path = _find_json("iso_3166-1.json")
    if path is not None:
        rows = json.loads(path.read_text(encoding="utf-8"))["3166-1"]
        found = next((r.get("common_name", r["name"]) for r in rows if r["alpha_2"] == code), None)
    else:
        load_subdivisions()  # raises the FileNotFoundError naming both sources if pycountry is missing too
        import pycountry

        c = pycountry.countries.get(alpha_2=code)
        found = c and getattr(c, "common_name", c.name)
    if not found:
        raise ValueError(f"unknown ISO 3166-1 alpha-2 country code {code!r}")
    return found


def clean_name(name: str) -> str:
    """'Newport [Casnewydd GB-CNW]' -> 'Newport'."""
    return " ".join(re.sub(r"\[[^\]]*\]", " ", name).split())


@dataclass
class Iso3166Task(Task):
    """Subdivision name -> country, over `countries`; labels are country names or arbitrary letters."""

    countries: tuple[str, ...] = DEFAULT_COUNTRIES
    label_style: Literal["natural", "letters"] = "natural"
    balanced_queries: bool = True

    name = "iso3166"
    metric = "exact_match"

    def __post_init__(self) -> None:
        self.countries = tuple(c.upper() for c in self.countries)
        if len(set(self.countries)) != len(self.countries) or len(self.countries) < 2:
            raise ValueError(f"countries must be >= 2 distinct codes, got {self.countries}")
        if self.label_style == "natural":
            self.labels = {c: country_name(c) for c in self.countries}
            names = ", ".join(self.labels.values())
            self.instruction = f"Name the country each region belongs to. Answer with one of: {names}."
        elif self.label_style == "letters":
            if len(self.countries) > 26:
                raise ValueError(f"label_style='letters' supports at most 26 countries, got {len(self.countries)}")
            self.labels = {c: chr(ord("A") + i) for i, c in enumerate(self.countries)}
            self.instruction = f"Classify each input as one of {', '.join(self.labels.values())}."
        else:
            raise ValueError(f"label_style must be 'natural' or 'letters', got {self.label_style!r}")

    def items(self) -> list[tuple[str, str, str]]:
        """Sorted (subdivision code, clean name, country code) with ambiguous names removed."""
        records, _ = load_subdivisions()
        chosen = [(code, clean_name(name), code[:2]) for code, name, _ in records if code[:2] in self.labels]
        missing = set(self.countries) - {c for _, _, c in chosen}
        if missing:
            raise ValueError(f"no ISO 3166-2 subdivisions for countries {sorted(missing)} in {self.source}")
        counts = Counter(name for _, name, _ in chosen)
        return sorted(item for item in chosen if counts[item[1]] == 1)

    @property
    def source(self) -> str:
        """Where the data came from ('iso-codes:<path>' or 'pycountry:<version>')."""
        return load_subdivisions()[1]

    def data_fingerprint(self) -> str:
        """sha1 of the sorted item list (iso-codes and pycountry versions differ; provenance records this)."""
        return hashlib.sha1(json.dumps(self.items()).encode("utf-8")).hexdigest()

    def load(self) -> tuple[list[Example], list[Example]]:
        choices = tuple(self.labels.values())
        pool = [
            Example(uid=code, question=f"Region: {name}", answer=self.labels[cc], choices=choices, meta={"country": cc})
            for code, name, cc in self.items()
        ]
        return pool, pool

    def draw_queries(self, candidates: list[Example], num_queries: int | None, rng: random.Random) -> list[Example]:
        """With `balanced_queries` (and a query count) each class gets num_queries // classes queries, the remainder
        going to seeded-random classes."""
        if not self.balanced_queries or num_queries is None:
            return super().draw_queries(candidates, num_queries, rng)
        if num_queries > len(candidates):
            raise ValueError(f"num_queries={num_queries} exceeds the {len(candidates)} queries of task {self.name!r}")
        return balanced_sample(candidates, num_queries, rng, "num_queries", list(self.labels.values()), strict=True)
