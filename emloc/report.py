"""Runs → one tidy pandas DataFrame → the paper's tables and figures: the only thing analysis code imports from emloc.

One row per run: every metric of `metrics.json` (or the W&B summary) plus the flattened config
(`method.js_threshold`, `task.num_shots`, `task.demo_seed`, ...). Three sources give the same rows:

* run folders (`<output_dir>/runs/<signature>/`), the default;
* W&B offline files (`run-*.wandb`, read with the `wandb leet inspect` command, no server, no import of wandb);
* the W&B public API for an online project/group.

On top of the rows: `load_sweep` (the runs of one sweep, checked against its file in `sweeps/`: which grid points
and demo seeds are missing), `aggregate` (mean, std, min–max and 95 % CI over `task.demo_seed` per grid point),
`layer_frame` (the per-layer, per-chunk `memory_stats.json` records), the Markdown/CSV tables and, through
`emloc.figures`, the PNG figures. `python -m emloc.report <sweep>` (or `emloc report <sweep>`) writes them all.

It deliberately does not import torch or run anything; it reads what runs wrote.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

log = logging.getLogger(__name__)
CONFIG_KEYS = ("model", "task", "method", "backend", "eval", "seed", "sweep_name")
METRICS = ("accuracy", "num_queries", "num_shots", "context_tokens", "memory_tokens", "retention", "max_chunk_js",
           "compress_seconds", "query_seconds_mean", "peak_rss_mb")
INT_METRICS = ("num_queries", "num_shots", "context_tokens")
LABEL_COLUMNS = ("method", "model", "task", "signature", "sweep_name", "memory_key")
SEED = "task.demo_seed"
REPO = Path(__file__).resolve().parents[1]
# the grid of each sweep file stem, used when the sweep file itself is not found
STEM_GRID = {"main_table": ["method"], "ablate_js_threshold": ["method.js_threshold"],
             "ablate_chunk_size": ["method.chunk_size"], "ablate_shots": ["task.num_shots", "method"],
             "ablate_keep_ratios": ["method.keep_ratios"], "pruning_strategies": ["method"]}
METHOD_ORDER = ("zeroshot", "fullcontext", "emloc", "snapkv", "pyramidkv", "h2o", "streamingllm", "randomkeep")
METHOD_LABELS = {"zeroshot": "zero-shot", "fullcontext": "full context", "emloc": "EMLoC", "snapkv": "SnapKV",
                 "pyramidkv": "PyramidKV", "h2o": "H2O", "streamingllm": "StreamingLLM", "randomkeep": "random"}
SHORT = {"method.js_threshold": "δ", "method.chunk_size": "chunk", "task.num_shots": "shots",
         "method.keep_ratios": "ladder", "method.keep_ratio": "keep"}
PARAM_LABELS = {"method": "method", "method.js_threshold": "JS threshold δ (nats / answer token)",
                "method.chunk_size": "chunk size (demonstrations per chunk)", "task.num_shots": "number of shots",
                "method.keep_ratios": "keep-ratio ladder", "method.keep_ratio": "keep ratio"}
# (column, header, scale, decimals) of the summary tables
TABLE_METRICS = (("accuracy", "accuracy (%)", 100, 1), ("retention", "retention (%)", 100, 1),
                 ("memory_tokens", "memory (tokens/layer)", 1, 0), ("context_tokens", "context (tokens)", 1, 0),
                 ("query_seconds_mean", "latency (ms/query)", 1000, 0), ("compress_seconds", "compression (s)", 1, 1),
                 ("peak_rss_mb", "peak RSS (MB)", 1, 0))
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131)


class SweepError(RuntimeError):
    """A sweep has no usable runs (or lacks what a table or figure needs); the message says what is missing."""


# ---------------------------------------------------------------------------------------------------- loading
def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = tuple(v) if isinstance(v, list) else v
    return out


def _row(metrics: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    cfg = {k: config[k] for k in CONFIG_KEYS if k in config}
    cfg.get("method", {}).pop("show_progress", None)
    scalars = {k: v for k, v in metrics.items() if not k.startswith("_") and not isinstance(v, (dict, list))}
    return {**flatten(cfg), **scalars}  # W&B media entries (dicts, e.g. memory/per_layer) are not run metrics


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Same columns, order and dtypes whatever the source (W&B drops None metrics and stores 0.0 as 0)."""
    df = df.copy()
    for m in METRICS:
        df[m] = pd.to_numeric(df[m], errors="coerce") if m in df else float("nan")
        df[m] = df[m].astype("int64" if m in INT_METRICS and df[m].notna().all() else "float64")
    config = sorted(c for c in df.columns if "." in c or c == "seed")
    rest = sorted(c for c in df.columns if c not in config and c not in METRICS and c not in LABEL_COLUMNS)
    return df[config + list(METRICS) + [c for c in LABEL_COLUMNS if c in df] + rest]


def _frame(rows: list[dict[str, Any]], what: str, sweep: str | None) -> pd.DataFrame:
    if not rows:
        raise FileNotFoundError(f"no finished runs found in {what}" + (f" for sweep {sweep!r}" if sweep else ""))
    df = pd.DataFrame(rows)
    if sweep is not None:
        df = df[df["sweep_name"] == sweep]
        if df.empty:
            raise FileNotFoundError(f"{what} holds runs, but none of sweep {sweep!r}")
    return _tidy(df).sort_values("signature").reset_index(drop=True)


def load_runs(output_dir: str | Path, sweep: str | None = None) -> pd.DataFrame:
    """Finished runs (those with metrics.json) under `<output_dir>/runs/`."""
    root = Path(output_dir) / "runs"
    rows = []
    for metrics_file in sorted(root.glob("*/metrics.json")):
        config = yaml.safe_load((metrics_file.parent / "config.yaml").read_text())
        rows.append(_row(json.loads(metrics_file.read_text()), config))
    return _frame(rows, str(root), sweep)


def read_wandb_run(path: str | Path) -> dict[str, Any]:
    """Config and summary of one offline `run-*.wandb` file."""
    exe = shutil.which("wandb", path=str(Path(sys.executable).parent)) or shutil.which("wandb")
    if exe is None:
        raise FileNotFoundError("the `wandb` command is not installed (pip install wandb)")
    out = subprocess.run([exe, "leet", "inspect", "--summary", "--json", str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"cannot read W&B file {path}: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)


def load_wandb_offline(output_dir: str | Path, sweep: str | None = None) -> pd.DataFrame:
    """Finished runs from the W&B offline files under `<output_dir>/runs/*/wandb/`."""
    paths = sorted(Path(output_dir).glob("runs/*/wandb/*/run-*.wandb"))
    with ThreadPoolExecutor(max_workers=4) as pool:  # each file is one `wandb leet inspect` process
        runs = list(pool.map(read_wandb_run, paths))
    rows = [_row(run["summary"], run["config"]) for run in runs
            if run.get("state") == "finished" and "accuracy" in run.get("summary", {})]
    return _frame(rows, f"W&B offline files under {output_dir}", sweep)


def load_wandb_api(project: str, entity: str | None = None, sweep: str | None = None) -> pd.DataFrame:
    """Finished runs of an online W&B project (needs `wandb login`); `sweep` filters on the group."""
    from emloc.tracking import fetch_runs  # the one module that imports wandb

    rows = [_row(summary, config) for summary, config in fetch_runs(project, entity, sweep)]
    return _frame(rows, f"W&B project {project}", sweep)


# ---------------------------------------------------------------------------------------------------- sweeps
@dataclass
class SweepSpec:
    """The grid of one sweep file: `{override key: [values]}` as Hydra's basic sweeper expands it."""

    path: Path
    name: str
    params: dict[str, list[Any]]
    matched_retention: float | None = None


def find_sweep_file(sweep_name: str, sweeps_dir: str | Path | None = None) -> SweepSpec | None:
    """The file under `sweeps_dir` (default: the repository's `sweeps/`) whose `sweep_name` is `sweep_name`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for path in sorted(Path(sweeps_dir or REPO / "sweeps").rglob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        if doc.get("sweep_name") != sweep_name:
            continue
        parser, params = OverridesParser.create(), {}
        for key, spec in ((doc.get("hydra") or {}).get("sweeper") or {}).get("params", {}).items():
            strings = parser.parse_overrides([f"{key}={spec}"])[0].sweep_string_iterator()
            params[key] = [parser.parse_overrides([f"{key}={s}"])[0].value() for s in strings]
        return SweepSpec(path, sweep_name, params, doc.get("matched_retention"))
    return None


def _group_target(group: str, option: Any, conf: Path) -> str | None:
    file = conf / group / f"{option}.yaml"
    return (yaml.safe_load(file.read_text()) or {}).get("_target_") if file.is_file() else None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


@dataclass
class Sweep:
    """The finished runs of one sweep, its grid columns and what is missing from it."""

    name: str
    stem: str
    runs: pd.DataFrame
    by: list[str]
    output_dir: Path | None
    spec: SweepSpec | None = None
    missing: list[str] = field(default_factory=list)  # grid points (with seed) without a finished run
    unfinished: list[str] = field(default_factory=list)  # run folders started but without metrics.json

    @property
    def complete(self) -> bool:
        return self.spec is not None and not self.missing

    def status(self) -> str:
        seeds = sorted(int(s) for s in self.runs[SEED].unique()) if SEED in self.runs else []
        head = f"sweep {self.name!r}: {len(self.runs)} finished runs, {self.runs.groupby(self.by, dropna=False).ngroups} grid points, demo seeds {seeds}"
        if self.spec is None:
            return head + " (no sweep file declares this sweep_name: completeness not checked)"
        expected = math.prod(len(v) for v in self.spec.params.values())
        lines = [head + f"; {self.spec.path.name} expects {expected} runs"]
        if self.missing:
            lines.append(f"PARTIAL: {len(self.missing)} of {expected} expected runs are missing:")
            lines += [f"  - {m}" for m in self.missing]
            lines.append("  (tables and figures use the runs that exist; every point states its number of seeds n)")
        if self.unfinished:
            lines.append(f"started but not finished ({len(self.unfinished)}): " + ", ".join(self.unfinished))
        return "\n".join(lines) if len(lines) > 1 else lines[0] + " (complete)"


def _grid_columns(df: pd.DataFrame, spec: SweepSpec | None, stem: str) -> list[str]:
    if spec is not None:
        keys = [k for k in spec.params if k != SEED]
    elif stem in STEM_GRID:
        keys = STEM_GRID[stem]
    else:  # infer: config columns that vary across runs
        keys = [c for c in df.columns if "." in c and c != SEED and df[c].astype(str).nunique() > 1]
        if "method" in df and df["method"].nunique() > 1:
            keys = ["method"] + [k for k in keys if not k.startswith("method.")]
    by = list(keys)  # a config group (method, model, task) is matched on the run's label column of that name
    missing = [k for k in by if k not in df]
    if missing:
        raise SweepError(f"the runs lack the grid column(s) {missing} of sweep {df['sweep_name'].iloc[0]!r}")
    return by or ["method"]


def _missing_points(df: pd.DataFrame, spec: SweepSpec, conf: Path) -> list[str]:
    keys, targets = list(spec.params), {}
    for k in keys:
        if "." not in k:  # a config group: match on the option's _target_
            targets[k] = {opt: _group_target(k, opt, conf) for opt in spec.params[k]}
    missing = []
    for point in product(*spec.params.values()):
        mask = pd.Series(True, index=df.index)
        for k, v in zip(keys, point):
            col, want = (f"{k}._target_", targets[k][v]) if k in targets else (k, v)
            if col not in df or want is None:
                continue
            mask &= df[col].map(lambda x, w=want: _same(x, w))
        if not mask.any():
            missing.append(" ".join(f"{k}={_fmt_value(v)}" for k, v in zip(keys, point)))
    return missing


def _unfinished(output_dir: Path, sweep_name: str) -> list[str]:
    out = []
    for cfg_file in sorted((output_dir / "runs").glob("*/config.yaml")):
        if (cfg_file.parent / "metrics.json").exists():
            continue
        cfg = yaml.safe_load(cfg_file.read_text()) or {}
        if cfg.get("sweep_name") == sweep_name:
            out.append(cfg_file.parent.name)
    return out


def stem_of(sweep_name: str) -> str:
    return sweep_name.removeprefix("smoke_")


def load_sweep(output_dir: str | Path | None = "outputs", sweep_name: str = "adhoc", source: str = "runs",
               stem: str | None = None, sweeps_dir: str | Path | None = None, project: str = "emloc",
               entity: str | None = None) -> Sweep:
    """The runs of one sweep from `source` ("runs", "wandb-offline" or "wandb-api"), checked against its sweep file."""
    out = Path(output_dir) if output_dir is not None else None
    loaders = {"runs": lambda: load_runs(out, sweep_name), "wandb-offline": lambda: load_wandb_offline(out, sweep_name),
               "wandb-api": lambda: load_wandb_api(project, entity, sweep_name)}
    if source not in loaders:
        raise ValueError(f"source must be one of {sorted(loaders)}, got {source!r}")
    spec = find_sweep_file(sweep_name, sweeps_dir)
    sweeps_root = Path(sweeps_dir or REPO / "sweeps")
    hint = (f"\n  run it with: python run.py -m --config-dir {sweeps_root} --config-name "
            f"{spec.path.relative_to(sweeps_root).with_suffix('')}") if spec else ""
    if source != "wandb-api" and (out is None or not (out / "runs").is_dir()):
        raise SweepError(f"no run folders at {out}/runs: nothing to report for sweep {sweep_name!r}{hint}")
    try:
        df = loaders[source]()
    except FileNotFoundError as err:
        others = ""
        if source != "wandb-api":
            names = pd.Series([(yaml.safe_load(p.read_text()) or {}).get("sweep_name") for p in out.glob("runs/*/config.yaml")])
            others = "; sweeps present: " + (", ".join(f"{k} ({v} runs)" for k, v in names.value_counts().items()) or "none")
        raise SweepError(f"{err}{others}{hint}") from None
    by = _grid_columns(df, spec, stem or stem_of(sweep_name))
    sweep = Sweep(sweep_name, stem or stem_of(sweep_name), df, by, out, spec)
    if spec is not None:
        sweep.missing = _missing_points(df, spec, (sweeps_dir and Path(sweeps_dir).parent or REPO) / "conf")
    if out is not None and source != "wandb-api":
        sweep.unfinished = _unfinished(out, sweep_name)
    return sweep


# ---------------------------------------------------------------------------------------------------- aggregation
def t975(n: int) -> float:
    """Two-sided 95 % Student-t quantile for n samples (n - 1 degrees of freedom)."""
    return T975[n - 2] if 2 <= n <= len(T975) + 1 else 1.96


def _order_key(col: str):
    return (lambda s: s.map(lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER))) if col == "method" else \
        (lambda s: s.map(lambda v: (len(v), v) if isinstance(v, tuple) else v))


def aggregate(df: pd.DataFrame, by: list[str], metrics: tuple[str, ...] = METRICS, seed: str = SEED) -> pd.DataFrame:
    """Per grid point (`by`): n seeds and, per metric, `_mean`, `_std`, `_min`, `_max`, `_ci_low`, `_ci_high` (95 %)."""
    rows = []
    for key, g in df.groupby(by, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        if seed in g and g[seed].duplicated().any():
            varying = [c for c in g.columns if "." in c and c != seed and g[c].astype(str).nunique() > 1]
            raise SweepError(f"several runs per demo seed at {dict(zip(by, key))}: group also by {varying}")
        row = {**dict(zip(by, key)), "n": len(g), "seeds": " ".join(str(int(s)) for s in sorted(g[seed])) if seed in g else ""}
        for m in metrics:
            v = pd.to_numeric(g[m], errors="coerce").dropna() if m in g else pd.Series(dtype=float)
            mean, std = (v.mean(), v.std(ddof=1)) if len(v) else (math.nan, math.nan)
            half = t975(len(v)) * std / math.sqrt(len(v)) if len(v) > 1 else math.nan
            row.update({f"{m}_mean": mean, f"{m}_std": std if len(v) > 1 else math.nan, f"{m}_min": v.min(),
                        f"{m}_max": v.max(), f"{m}_ci_low": mean - half, f"{m}_ci_high": mean + half})
        rows.append(row)
    out = pd.DataFrame(rows)
    return out.sort_values(by[::-1], key=lambda s: _order_key(s.name)(s), kind="stable").reset_index(drop=True)


def _fmt_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt_value(x) for x in v) + "]"
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:g}"
    return str(v)


def label(col: str, value: Any) -> str:
    """Human label of a grid value (method names as in the paper)."""
    return METHOD_LABELS.get(value, str(value)) if col == "method" else _fmt_value(value)


def point_label(row: pd.Series | dict, by: list[str]) -> str:
    parts = [label(c, row[c]) if c == "method" else f"{SHORT.get(c, c.split('.')[-1])} = {label(c, row[c])}" for c in by]
    return ", ".join(parts)


def layer_frame(sweep: Sweep) -> pd.DataFrame:
    """One row per run × chunk × layer from the runs' `memory_stats.json`: kept entries, accepted JS, token kinds."""
    rows, lacking = [], []
    for _, run in sweep.runs.iterrows():
        path = (sweep.output_dir or Path(".")) / "runs" / run["signature"] / "memory_stats.json"
        if not path.is_file():
            lacking.append(run["signature"])
            continue
        stats = json.loads(path.read_text())
        base = {c: run[c] for c in sweep.by} | {"signature": run["signature"], SEED: run.get(SEED)}
        for ch in stats["chunks"]:
            for layer, kept in enumerate(ch["kept"]):
                kinds = ch["kept_by_kind"][layer] if layer < len(ch.get("kept_by_kind", [])) else {}
                rows.append({**base, "chunk": ch["index"], "layer": layer, "num_tokens": ch["num_tokens"], "kept": kept,
                             "js": ch["js"][layer], **{f"tokens_{k}": n for k, n in ch.get("tokens_by_kind", {}).items()},
                             **{f"kept_{k}": n for k, n in kinds.items()}})
    if not rows:
        raise SweepError(f"per-layer figures need memory_stats.json in the run folders ({sweep.output_dir}/runs/<signature>/);"
                         f" none found for the {len(lacking)} runs of sweep {sweep.name!r}")
    if lacking:
        log.warning("memory_stats.json missing for %d runs of %s: %s", len(lacking), sweep.name, ", ".join(lacking))
    return pd.DataFrame(rows)


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
    notes = (f"mean ± sample std over demo seeds (`task.demo_seed`); n = seeds per row. {len(sweep.runs)} runs of "
             f"`{sweep.name}` ({', '.join(sorted(sweep.runs['model'].unique()))}, task {', '.join(sorted(sweep.runs['task'].unique()))}). "
             "Retention = memory tokens / context tokens; latency = mean wall time per query.")
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
        raise SweepError(f"the matched-retention table needs EMLoC runs in sweep {sweep.name!r}; methods present: "
                         f"{sorted(sweep.runs['method'].unique())}")
    agg = aggregate(sweep.runs, sweep.by)
    ref = agg[agg["method"] == "emloc"].iloc[0]
    target = sweep.runs.get("method.keep_ratio", pd.Series(dtype=float)).dropna()
    delta = [f"{(r['accuracy_mean'] - ref['accuracy_mean']) * 100:+.1f}" if r["method"] != "emloc" else "0"
             for _, r in agg.iterrows()]
    table = _table(sweep, agg, "matched_retention", f"{sweep.name}: pruning strategies at matched retention",
                   {"Δ accuracy vs EMLoC (pp)": delta})
    table.data["accuracy_delta_vs_emloc"] = [(a - ref["accuracy_mean"]) for a in agg["accuracy_mean"]]
    table.notes += (f" Fixed-ratio baselines keep `keep_ratio` = {', '.join(sorted({f'{v:g}' for v in target})) or '?'} of every chunk;"
                    f" EMLoC's measured retention here is {ref['retention_mean'] * 100:.1f} %.")
    return table


# ---------------------------------------------------------------------------------------------------- products
FIGURES = {  # stem → figures written for it (others get every figure their runs support)
    "main_table": ["accuracy_vs_shots", "cost_pareto", "kept_heatmap", "js_per_layer", "token_kinds"],
    "ablate_js_threshold": ["accuracy_vs_param", "kept_heatmap", "js_per_layer", "token_kinds", "cost_pareto"],
    "ablate_chunk_size": ["accuracy_vs_param", "kept_heatmap", "js_per_layer", "cost_pareto"],
    "ablate_shots": ["accuracy_vs_shots", "cost_pareto", "kept_heatmap"],
    "ablate_keep_ratios": ["accuracy_vs_param", "kept_heatmap", "token_kinds", "cost_pareto"],
    "pruning_strategies": ["cost_pareto", "token_kinds", "kept_heatmap", "js_per_layer"],
}


def figure(sweep: Sweep, kind: str, path: str | Path | None = None, err: str = "minmax"):
    """Draw one figure (see `emloc.figures`); saved as PNG when `path` (a .png file or a directory) is given, and
    the path returned; otherwise the matplotlib Figure."""
    from emloc import figures

    fig = figures.draw(kind, sweep, err=err)
    if path is None:
        return fig
    path = Path(path)
    if path.suffix != ".png":  # a directory: the figure's standard file name
        path = path / f"{figures.filename(kind, sweep)}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figures.save(fig, path)
    return path


def show(obj: Any) -> None:
    """Display a table or a PNG path in a notebook (prints outside Jupyter)."""
    try:
        from IPython.display import Image, Markdown, display
    except ImportError:
        print(obj.markdown() if isinstance(obj, Table) else obj)
        return
    display(Markdown(obj.markdown()) if isinstance(obj, Table) else Image(filename=str(obj)) if str(obj).endswith(".png") else obj)


def write_report(sweep: Sweep, out: str | Path, err: str = "minmax") -> list[Path]:
    """Every table and figure of the sweep into `out` (+ `runs.csv` and a `README.md` index); returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = [], []
    tables = [summary_table]
    if sweep.stem == "pruning_strategies" or (sweep.stem not in FIGURES and "method" in sweep.by):
        tables.append(matched_retention_table)
    for make in tables:
        try:
            written += make(sweep).write(out)
        except SweepError as e:
            skipped.append(f"{make.__name__}: {e}")
    from emloc import figures

    for kind in FIGURES.get(sweep.stem) or figures.applicable(sweep):
        try:
            written.append(figure(sweep, kind, out, err))
        except SweepError as e:
            skipped.append(f"{kind}: {e}")
    sweep.runs.to_csv(out / "runs.csv", index=False)
    written.append(out / "runs.csv")
    lines = [f"# Report of sweep `{sweep.name}`", "", "```", sweep.status(), "```", ""]
    lines += [f"![{p.stem}]({p.name})" if p.suffix == ".png" else f"- [{p.name}]({p.name})" for p in written]
    lines += ["", *(f"- not produced: {s}" for s in skipped)]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    for s in skipped:
        log.warning("not produced: %s", s)
    return written + [out / "README.md"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="emloc report", description="Tables (Markdown + CSV) and PNG figures of one sweep.")
    ap.add_argument("sweep", help="sweep name (the runs' `sweep_name`, e.g. smoke_ablate_js_threshold)")
    ap.add_argument("--output-dir", default=os.environ.get("EMLOC_OUTPUT", "outputs"), help="where the runs are (default: $EMLOC_OUTPUT or outputs)")
    ap.add_argument("--out", help="where to write the report (default: reports/<sweep>)")
    ap.add_argument("--source", choices=("runs", "wandb-offline", "wandb-api"), default="runs")
    ap.add_argument("--project", default="emloc", help="W&B project (--source wandb-api)")
    ap.add_argument("--entity", default=None, help="W&B entity (--source wandb-api)")
    ap.add_argument("--stem", help="which paper table/figure set to produce (default: the sweep name without smoke_)")
    ap.add_argument("--sweeps-dir", help="where the sweep files are (default: the repository's sweeps/)")
    ap.add_argument("--err", choices=("minmax", "ci95", "std"), default="minmax", help="error bars of the figures")
    ap.add_argument("--strict", action="store_true", help="fail (exit 3) when the sweep is partial")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        sweep = load_sweep(args.output_dir, args.sweep, args.source, args.stem, args.sweeps_dir, args.project, args.entity)
    except (SweepError, ValueError) as e:
        print(f"emloc report: error: {e}", file=sys.stderr)
        return 2
    print(sweep.status(), file=sys.stderr if sweep.missing else sys.stdout)
    if args.strict and not sweep.complete:
        print("emloc report: error: the sweep is partial (--strict)", file=sys.stderr)
        return 3
    paths = write_report(sweep, args.out or Path("reports") / args.sweep, args.err)
    print(f"wrote {len(paths)} files to {Path(paths[-1]).parent}:\n" + "\n".join(f"  {p.name}" for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
