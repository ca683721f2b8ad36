"""Aggregation over demo seeds and the paper's tables, from the tidy run frame of `emloc.report`.

`aggregate` reduces the runs of each grid point to n, mean, sample std, min–max and a 95 % Student-t confidence
interval per metric; `summary_table` and `matched_retention_table` format them as mean ± std (Markdown for people,
CSV with every statistic for programs). Also the labels shared with `emloc.figures` (method names as in the paper,
axis names with units).

It deliberately reads no files and draws nothing: loading is `emloc.report`, drawing `emloc.figures`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from emloc.report import Sweep

SEED = "task.demo_seed"
METRICS = (
    "accuracy",
    "num_queries",
    "num_shots",
    "context_tokens",
    "memory_tokens",
    "retention",
    "max_chunk_js",
    "compress_seconds",
    "query_seconds_mean",
    "peak_rss_mb",
)
METHOD_ORDER = ("zeroshot", "fullcontext", "emloc", "snapkv", "pyramidkv", "h2o", "streamingllm", "randomkeep")
METHOD_LABELS = {
    "zeroshot": "zero-shot",
    "fullcontext": "full context",
    "emloc": "EMLoC",
    "snapkv": "SnapKV",
    "pyramidkv": "PyramidKV",
    "h2o": "H2O",
    "streamingllm": "StreamingLLM",
    "randomkeep": "random",
}
SHORT = {
    "method.js_threshold": "δ",
    "method.chunk_size": "chunk",
    "task.num_shots": "shots",
    "method.keep_ratios": "ladder",
    "method.keep_ratio": "keep",
}
PARAM_LABELS = {
    "method": "method",
    "method.js_threshold": "JS threshold δ (nats / answer token)",
    "method.chunk_size": "chunk size (demonstrations per chunk)",
    "task.num_shots": "number of shots",
    "method.keep_ratios": "keep-ratio ladder (fractions of a chunk)",
    "method.keep_ratio": "keep ratio",
}
# (column, header, scale, decimals) of the tables
TABLE_METRICS = (
    ("accuracy", "accuracy (%)", 100, 1),
    ("retention", "retention (%)", 100, 1),
    ("memory_tokens", "memory (tokens/layer)", 1, 0),
    ("context_tokens", "context (tokens)", 1, 0),
    ("query_seconds_mean", "latency (ms/query)", 1000, 0),
    ("compress_seconds", "compression (s)", 1, 1),
    ("peak_rss_mb", "peak RSS (MB)", 1, 0),
)
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
            isinstance(a, (list, tuple))
            and isinstance(b, (list, tuple))
            and len(a) == len(b)
            and all(map(same_value, a, b))
        )
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def fmt_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt_value(x) for x in v) + "]"
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:g}"
    return str(v)


def label(col: str, value: Any) -> str:
    """Human label of a grid value (method names as in the paper)."""
    return METHOD_LABELS.get(value, str(value)) if col == "method" else fmt_value(value)


def point_label(row: pd.Series | dict, by: list[str]) -> str:
    """`EMLoC, δ = 0.005` for a grid point."""
    return ", ".join(
        label(c, row[c]) if c == "method" else f"{SHORT.get(c, c.split('.')[-1])} = {label(c, row[c])}" for c in by
    )


def sort_key(series: pd.Series) -> pd.Series:
    """Methods in the paper's order; ladders by length, then values; numbers by value."""
    if series.name == "method":
        return series.map(lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER))
    return series.map(lambda v: (len(v), v) if isinstance(v, tuple) else v)


# ---------------------------------------------------------------------------------------------------- aggregation
def t975(n: int) -> float:
    """Two-sided 95 % Student-t quantile for n samples (n - 1 degrees of freedom)."""
    return T975[n - 2] if 2 <= n <= len(T975) + 1 else 1.96


def aggregate(df: pd.DataFrame, by: list[str], metrics: tuple[str, ...] = METRICS, seed: str = SEED) -> pd.DataFrame:
    """Per grid point (`by`): n seeds and, per metric, `_mean`, `_std`, `_min`, `_max`, `_ci_low`, `_ci_high` (95 %)."""
    rows = []
    for key, g in df.groupby(by, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        if seed in g and g[seed].duplicated().any():
            varying = [c for c in g.columns if "." in c and c != seed and g[c].astype(str).nunique() > 1]
            raise SweepError(f"several runs per demo seed at {dict(zip(by, key))}: group also by {varying}")
        seeds = " ".join(str(int(s)) for s in sorted(g[seed])) if seed in g else ""
        row = {**dict(zip(by, key)), "n": len(g), "seeds": seeds}
        for m in metrics:
            v = pd.to_numeric(g[m], errors="coerce").dropna() if m in g else pd.Series(dtype=float)
            mean = v.mean() if len(v) else math.nan
            std = v.std(ddof=1) if len(v) > 1 else math.nan
            half = t975(len(v)) * std / math.sqrt(len(v)) if len(v) > 1 else math.nan
            row.update(
                {
                    f"{m}_mean": mean,
                    f"{m}_std": std,
                    f"{m}_min": v.min(),
                    f"{m}_max": v.max(),
                    f"{m}_ci_low": mean - half,
                    f"{m}_ci_high": mean + half,
                }
            )
        rows.append(row)
    return pd.DataFrame(rows).sort_values(by[::-1], key=sort_key, kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------- tables
@dataclass
class Table:
    name: str
    title: str
    frame: pd.DataFrame  # formatted strings, as in the Markdown
    data: pd.DataFrame  # numbers (the CSV)
    notes: str = ""

    def markdown(self) -> str:
        cols = list(self.frame.columns)
        right = {c for c in cols if c == "n" or c in {h for _, h, _, _ in TABLE_METRICS} or c.startswith("Δ")}
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("--:" if c in right else "---" for c in cols) + "|"]
        lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in self.frame.itertuples(index=False)]
        return f"### {self.title}\n\n" + "\n".join(lines) + (f"\n\n{self.notes}\n" if self.notes else "\n")

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def write(self, directory: str | Path) -> list[Path]:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{self.name}.md").write_text(self.markdown())
        self.data.to_csv(d / f"{self.name}.csv", index=False)
        return [d / f"{self.name}.md", d / f"{self.name}.csv"]


def _cell(row: pd.Series, m: str, scale: float, decimals: int) -> str:
    mean, std = row[f"{m}_mean"] * scale, row[f"{m}_std"] * scale
    if math.isnan(mean):
        return "–"
    return f"{mean:.{decimals}f}" + ("" if math.isnan(std) else f" ± {std:.{decimals}f}")


def _table(sweep: Sweep, agg: pd.DataFrame, name: str, title: str, extra: dict[str, list[str]] | None = None) -> Table:
    frame = pd.DataFrame({PARAM_LABELS.get(c, c): [label(c, v) for v in agg[c]] for c in sweep.by})
    for col, values in (extra or {}).items():
        frame[col] = values
    frame["n"] = agg["n"].astype(str)
    for m, head, scale, dec in TABLE_METRICS:
        frame[head] = [_cell(r, m, scale, dec) for _, r in agg.iterrows()]
    runs = sweep.runs
    notes = (
        f"mean ± sample std over demo seeds (`{SEED}`); n = seeds per row. {len(runs)} runs of `{sweep.name}` "
        f"({', '.join(sorted(runs['model'].unique()))}, task {', '.join(sorted(runs['task'].unique()))}, "
        f"{'/'.join(str(n) for n in sorted(runs['num_queries'].unique()))} queries per run). "
        "Retention = memory tokens / context tokens; latency = mean wall time per query and compression = wall "
        "time of the memory's build (both depend on how busy the machine was); peak RSS = the run's process."
    )
    if sweep.missing:
        notes += f" **Partial sweep: {len(sweep.missing)} expected runs missing** ({'; '.join(sweep.missing)})."
    data = agg.copy()
    for c in sweep.by:
        data[c] = [label(c, v) for v in data[c]]
    return Table(name, title, frame, data, notes)


def summary_table(sweep: Sweep) -> Table:
    """Every grid point of the sweep: accuracy, retention, memory, latency, compression time (mean ± std)."""
    return _table(sweep, aggregate(sweep.runs, sweep.by), "summary", f"{sweep.name}: results per grid point")


def matched_retention_table(sweep: Sweep) -> Table:
    """EMLoC against the fixed-ratio pruning strategies at (about) EMLoC's retention (paper Table 5)."""
    if "method" not in sweep.by or "emloc" not in set(sweep.runs["method"]):
        raise SweepError(
            f"the matched-retention table needs EMLoC runs in sweep {sweep.name!r}; methods present: "
            f"{sorted(sweep.runs['method'].unique())}"
        )
    agg = aggregate(sweep.runs, sweep.by)
    ref = agg[agg["method"] == "emloc"].iloc[0]
    delta = agg["accuracy_mean"] - ref["accuracy_mean"]
    shown = ["0" if m == "emloc" else f"{d * 100:+.1f}" for m, d in zip(agg["method"], delta)]
    table = _table(
        sweep,
        agg,
        "matched_retention",
        f"{sweep.name}: pruning strategies at matched retention",
        {"Δ accuracy vs EMLoC (pp)": shown},
    )
    table.data["accuracy_delta_vs_emloc"] = delta
    keep = sweep.runs.get("method.keep_ratio", pd.Series(dtype=float)).dropna()
    target = ", ".join(sorted({f"{v:g}" for v in keep})) or "?"
    table.notes += (
        f" Fixed-ratio baselines keep `keep_ratio` = {target} of every chunk;"
        f" EMLoC's measured retention here is {ref['retention_mean'] * 100:.1f} %"
        f" (min–max over seeds {ref['retention_min'] * 100:.1f}–{ref['retention_max'] * 100:.1f} %)."
    )
    return table
