"""The analysis data type and the vocabulary every analysis module shares (the leaf of `emloc.analysis`).

`Sweep` holds what was read about one sweep: the tidy run frame (one row per finished run: its flattened config,
its metrics and its method card), the per-layer memory statistics, the per-query predictions, and how the runs
compare with the sweep file's grid (expected, missing, unfinished). Also here: the metric and config column names,
how config values compare and print across sources, labels of grid points, and the Student-t quantile.

It deliberately reads no file and imports nothing from emloc: `loading` fills a `Sweep`, the other modules read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

SEED = "task.demo_seed"
METRICS = (
    "accuracy", "num_queries", "num_shots", "context_tokens", "memory_tokens", "retention", "max_chunk_js",
    "heldout_js", "compress_seconds", "query_seconds_mean", "peak_rss_mb", "certified_js_upper",
)  # fmt: skip
INT_METRICS = ("num_queries", "num_shots", "context_tokens")
# what every run records about its method (`Compressor.card()`): analysis never imports a method class
FLAGS = ("uses_demos", "compresses", "searches")
SHORT = {"method.js_threshold": "δ", "method.chunk_size": "chunk", "task.num_shots": "shots",
         "method.keep_ratios": "ladder", "method.keep_ratio": "keep"}  # fmt: skip
PARAM_LABELS = {
    "method": "method",
    "method.js_threshold": "JS threshold δ (nats / answer token)",
    "method.chunk_size": "chunk size (demonstrations per chunk)",
    "task.num_shots": "number of shots",
    "method.keep_ratios": "keep-ratio ladder (fractions of a chunk)",
    "method.keep_ratio": "keep ratio",
}
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131)


class SweepError(RuntimeError):
    """A sweep has no usable runs (or lacks what a table or figure needs); the message says what is missing."""

    def _render_traceback_(self) -> list[str]:  # IPython/papermill: show the message, not a stack trace
        return [f"SweepError: {self}"]


# ---------------------------------------------------------------------------------------------------- values
def same_value(a: Any, b: Any) -> bool:
    """Equality of config values across sources (tuples vs lists, 0 vs 0.0, float round trips)."""
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (
            isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b)
            and all(map(same_value, a, b))
        )  # fmt: skip
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def fmt_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt_value(x) for x in v) + "]"
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:g}"
    return str(v)


def point_label(row: pd.Series | dict, by: list[str]) -> str:
    """`EMLoC, paper search, δ = 0.005` for a grid point (the method column holds the method's label)."""
    return ", ".join(
        fmt_value(row[c]) if c == "method" else f"{SHORT.get(c, c.split('.')[-1])} = {fmt_value(row[c])}" for c in by
    )


def method_rank(row: pd.Series | dict) -> int:
    """Methods in reading order, from their cards: zero-shot, full context, searching methods, then the others."""
    if not row.get("uses_demos", True):
        return 0
    if not row.get("compresses", True):
        return 1
    return 2 if row.get("searches", False) else 3


def sort_key(series: pd.Series) -> pd.Series:
    """Ladders by length, then values; numbers by value."""
    return series.map(lambda v: (len(v), v) if isinstance(v, tuple) else v)


def t975(n: int) -> float:
    """Two-sided 95 % Student-t quantile for n samples (n - 1 degrees of freedom)."""
    return T975[n - 2] if 2 <= n <= len(T975) + 1 else 1.96


# ---------------------------------------------------------------------------------------------------- the sweep
@dataclass
class Sweep:
    """The finished runs of one sweep, its grid columns (`by`, the demo seed excluded) and what is missing.

    runs : one row per finished run; layer_stats : one row per run × chunk × layer (kept entries, accepted JS, token
    kinds), None when not loaded; predictions : one row per run × query (`uid`, `correct`, `prediction`, and the
    candidates' log-probabilities `scores` when the query was ranked), None when not loaded.
    """

    name: str
    stem: str
    runs: pd.DataFrame
    by: list[str]
    layer_stats: pd.DataFrame | None = None
    predictions: pd.DataFrame | None = None
    fidelity: pd.DataFrame | None = None  # held-out JS per chunk and per layer (`loading.load_fidelity`)
    sweep_file: str | None = None  # the sweep file the runs were checked against
    expected: int | None = None  # distinct runs the sweep file asks for
    missing: list[str] = field(default_factory=list)  # grid points (with seed) without a finished run
    unfinished: list[str] = field(default_factory=list)  # run folders started but without metrics.json
    command: str | None = None  # how to run what is missing
    outside: list[str] = field(default_factory=list)  # runs of this sweep_name that no grid point asks for: left out
    grids: dict[str, dict] = field(default_factory=dict)  # per method option, the keys its own grid sets (sweep file)

    def status(self) -> str:
        seeds = sorted(int(s) for s in self.runs[SEED].dropna().unique()) if SEED in self.runs else []
        points = self.runs.groupby(self.by, dropna=False).ngroups if len(self.runs) else 0
        head = f"sweep {self.name!r}: {len(self.runs)} finished runs, {points} grid points, demo seeds {seeds}"
        if self.sweep_file is None:
            return head + " (no sweep file declares this sweep_name: completeness not checked)"
        lines = [head + f"; {self.sweep_file} expects {self.expected} runs"]
        if self.missing:
            lines.append(f"PARTIAL: {len(self.missing)} of {self.expected} expected runs are missing:")
            lines += [f"  - {m}" for m in self.missing]
            lines.append("  (tables and figures use the runs that exist; every point states its number of seeds n)")
            if self.command:
                lines.append(f"  run the missing ones with: {self.command}")
        if self.unfinished:
            lines.append(f"started but not finished ({len(self.unfinished)}): " + ", ".join(self.unfinished))
        if self.outside:
            lines.append(f"left out: {len(self.outside)} finished runs of this sweep_name are no point of "
                         f"{self.sweep_file} (another config, e.g. an older version of the file):")  # fmt: skip
            lines += [f"  - {o}" for o in self.outside]
        return "\n".join(lines) if len(lines) > 1 else lines[0] + " (complete)"

    def per_query(self) -> dict[str, pd.DataFrame]:
        """The metrics measured per query, as long rows (`signature`, `uid`, `value`): accuracy from the predictions,
        held-out JS from the fidelity inputs. `stats.aggregate` gives them crossed-design intervals."""
        out = {}
        if self.predictions is not None and not self.predictions.empty:
            out["accuracy"] = self.predictions.assign(value=self.predictions["correct"].astype(float))
        if self.fidelity is not None and not self.fidelity.empty:
            rows = self.fidelity[self.fidelity["curve"] == "query"]
            if not rows.empty:
                out["heldout_js"] = rows.assign(value=rows["js"].astype(float))
        return {k: v[["signature", "uid", "value"]] for k, v in out.items()}

    def layers(self) -> pd.DataFrame:
        """The per-layer statistics, with the grid columns of each run."""
        if self.layer_stats is None or self.layer_stats.empty:
            raise SweepError(
                f"per-layer figures need memory_stats.json in the run folders; none was loaded for sweep {self.name!r}"
            )
        cols = ["signature", *(c for c in [*self.by, SEED, *FLAGS] if c in self.runs and c != "signature")]
        return self.layer_stats.merge(self.runs[list(dict.fromkeys(cols))], on="signature")
