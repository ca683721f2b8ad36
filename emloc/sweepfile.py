"""A sweep file's grid: which runs it asks for, and which of them have no finished run.

A sweep file (`sweeps/**/*.yaml`) names its runs' `sweep_name` and lists `hydra.sweeper.params`; the grid is parsed
with Hydra's own override grammar, so it expands exactly as the basic sweeper expands it. A config-group axis
(`method=zero_shot,emloc`) is matched on the option's `_target_`, which every run's config records.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from emloc.tables import fmt_value, same_value

REPO = Path(__file__).resolve().parents[1]


@dataclass
class SweepSpec:
    """The grid of one sweep file: `{override key: [values]}` as Hydra's basic sweeper expands it."""

    path: Path
    params: dict[str, list[Any]]


def find_sweep_file(sweep_name: str, sweeps_dir: str | Path | None = None) -> SweepSpec | None:
    """The file under `sweeps_dir` (default: the repository's `sweeps/`) whose `sweep_name` is `sweep_name`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser  # the sweeper's own grammar

    for path in sorted(Path(sweeps_dir or REPO / "sweeps").rglob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        if doc.get("sweep_name") != sweep_name:
            continue
        parser, params = OverridesParser.create(), {}
        for key, spec in ((doc.get("hydra") or {}).get("sweeper") or {}).get("params", {}).items():
            strings = parser.parse_overrides([f"{key}={spec}"])[0].sweep_string_iterator()
            params[key] = [parser.parse_overrides([f"{key}={s}"])[0].value() for s in strings]
        return SweepSpec(path, params)
    return None


def group_target(group: str, option: Any, conf: Path) -> str | None:
    file = conf / group / f"{option}.yaml"
    return (yaml.safe_load(file.read_text()) or {}).get("_target_") if file.is_file() else None


def expected_points(spec: SweepSpec, conf: Path) -> dict[str, dict[str, Any]]:
    """The distinct runs a sweep file asks for: label → `{column: value}`, a config group matched on its `_target_`.

    Grid points that are the same run count once: zero-shot ignores `task.num_shots` (the runner signs and runs it
    with 0 shots, so its other shot counts are skipped as finished)."""
    points: dict[str, dict[str, Any]] = {}
    for values in product(*spec.params.values()):
        point = {}
        for key, value in zip(spec.params, values):
            if "." in key:
                point[key] = value
            elif target := group_target(key, value, conf):  # a group option without a file is not checked
                point[f"{key}._target_"] = target
        if "task.num_shots" in point and any(str(v).endswith(".ZeroShot") for v in point.values()):
            point["task.num_shots"] = 0
        if point not in points.values():
            points[" ".join(f"{k}={fmt_value(v)}" for k, v in zip(spec.params, values))] = point
    return points


def missing_points(df: pd.DataFrame, spec: SweepSpec, conf: Path) -> tuple[int, list[str]]:
    """How many runs the sweep file asks for, and those (demo seed included) without a finished run."""
    expected = expected_points(spec, conf)
    missing = []
    for name, point in expected.items():
        mask = pd.Series(True, index=df.index)
        for col, want in point.items():
            if col in df:
                mask &= df[col].map(lambda x, w=want: same_value(x, w))
        if not mask.any():
            missing.append(name)
    return len(expected), missing
