"""Runs → one tidy pandas DataFrame → the paper's tables and figures: the only thing analysis code imports from emloc.

One row per run: every metric of `metrics.json` (or the W&B summary) plus the flattened config
(`method.js_threshold`, `task.num_shots`, `task.demo_seed`, ...). Three sources give the same rows:

* run folders (`<output_dir>/runs/<signature>/`), the default;
* W&B offline files (`run-*.wandb`, read with the `wandb leet inspect` command: no server, no import of wandb);
* the W&B public API for an online project/group (through `emloc.tracking`, the one module importing wandb).

`load_sweep` gathers the runs of one sweep and checks them against its file in `sweeps/` (which grid points and
demo seeds are missing, which runs started but did not finish). Aggregation and tables are `emloc.tables`, figures
`emloc.figures`; both are re-exported here. `python -m emloc.report <sweep>` (or `emloc report <sweep>`) writes
every table and figure of a sweep.

It deliberately does not import torch or run anything; it reads what runs wrote.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from emloc.sweepfile import REPO, SweepSpec, find_sweep_file, missing_points
from emloc.tables import (
    METRICS,
    SEED,
    SweepError,
    Table,
    aggregate,
    label,
    matched_retention_table,
    point_label,
    summary_table,
    t975,
)

__all__ = [
    "FIGURES",
    "METRICS",
    "SEED",
    "Sweep",
    "SweepError",
    "Table",
    "aggregate",
    "figure",
    "label",
    "load_runs",
    "load_sweep",
    "load_wandb_api",
    "load_wandb_offline",
    "main",
    "matched_retention_table",
    "point_label",
    "show",
    "summary_table",
    "t975",
    "write_report",
]

log = logging.getLogger(__name__)
CONFIG_KEYS = ("model", "task", "method", "backend", "eval", "seed", "sweep_name")
INT_METRICS = ("num_queries", "num_shots", "context_tokens")
LABEL_COLUMNS = ("method", "model", "task", "signature", "sweep_name", "memory_key")
FIGURES = {  # sweep file stem → its figures (a sweep of another stem gets every figure its runs support)
    "main_table": ["accuracy_vs_shots", "cost_pareto", "kept_heatmap", "js_per_layer", "token_kinds"],
    "ablate_js_threshold": ["accuracy_vs_param", "kept_heatmap", "js_per_layer", "token_kinds", "cost_pareto"],
    "ablate_chunk_size": ["accuracy_vs_param", "kept_heatmap", "js_per_layer", "cost_pareto"],
    "ablate_shots": ["accuracy_vs_shots", "cost_pareto", "kept_heatmap"],
    "ablate_keep_ratios": ["accuracy_vs_param", "kept_heatmap", "token_kinds", "cost_pareto"],
    "pruning_strategies": ["cost_pareto", "token_kinds", "kept_heatmap", "js_per_layer"],
}


# ---------------------------------------------------------------------------------------------------- loading
def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
    return out


def _row(metrics: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    cfg = {k: config[k] for k in CONFIG_KEYS if k in config}
    cfg.get("method", {}).pop("show_progress", None)
    # W&B media entries (dicts, e.g. memory/per_layer) and internal keys are not run metrics
    scalars = {k: v for k, v in metrics.items() if not k.startswith("_") and not isinstance(v, (dict, list))}
    row = {**_flatten(cfg), **scalars}
    if "num_shots" in scalars and "task.num_shots" in row:  # what ran: zero-shot runs with 0 shots whatever was asked
        row["task.num_shots"] = scalars["num_shots"]
    return row


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
    """State, config and summary of one offline `run-*.wandb` file (`wandb leet inspect --summary --json`)."""
    exe = shutil.which("wandb", path=str(Path(sys.executable).parent)) or shutil.which("wandb")
    if exe is None:
        raise FileNotFoundError("the `wandb` command is not installed (pip install wandb)")
    out = subprocess.run([exe, "leet", "inspect", "--summary", "--json", str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"cannot read W&B file {path}: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)


def load_wandb_offline(output_dir: str | Path, sweep: str | None = None) -> pd.DataFrame:
    """Finished runs from the W&B offline files under `<output_dir>/runs/*/wandb/`."""
    # `wandb/latest-run` is a symlink to one of the `offline-run-*` folders: count every file once
    paths = sorted({p.resolve() for p in Path(output_dir).glob("runs/*/wandb/*/run-*.wandb")})
    with ThreadPoolExecutor(max_workers=4) as pool:  # each file is one `wandb leet inspect` process
        runs = list(pool.map(read_wandb_run, paths))
    latest: dict[str, dict] = {}  # a forced rerun leaves a second W&B run: like the run folder, keep the last one
    for run in runs:
        if run.get("state") == "finished" and "accuracy" in run.get("summary", {}):
            sig = run["summary"].get("signature", run.get("file"))
            if sig not in latest or run.get("start_time", "") >= latest[sig].get("start_time", ""):
                latest[sig] = run
    rows = [_row(run["summary"], run["config"]) for run in latest.values()]
    return _frame(rows, f"W&B offline files under {output_dir}", sweep)


def load_wandb_api(project: str, entity: str | None = None, sweep: str | None = None) -> pd.DataFrame:
    """Finished runs of an online W&B project (needs `wandb login`); `sweep` filters on the group."""
    from emloc.tracking import fetch_runs  # the one module that imports wandb

    rows = [_row(summary, config) for summary, config in fetch_runs(project, entity, sweep)]
    return _frame(rows, f"W&B project {project}", sweep)


# ---------------------------------------------------------------------------------------------------- sweeps
@dataclass
class Sweep:
    """The finished runs of one sweep, its grid columns (`by`, the demo seed excluded) and what is missing."""

    name: str
    stem: str
    runs: pd.DataFrame
    by: list[str]
    output_dir: Path | None
    spec: SweepSpec | None = None
    expected: int | None = None  # distinct runs the sweep file asks for
    missing: list[str] = field(default_factory=list)  # grid points (with seed) without a finished run
    unfinished: list[str] = field(default_factory=list)  # run folders started but without metrics.json

    def status(self) -> str:
        seeds = sorted(int(s) for s in self.runs[SEED].unique()) if SEED in self.runs else []
        points = self.runs.groupby(self.by, dropna=False).ngroups
        head = f"sweep {self.name!r}: {len(self.runs)} finished runs, {points} grid points, demo seeds {seeds}"
        if self.spec is None:
            return head + " (no sweep file declares this sweep_name: completeness not checked)"
        lines = [head + f"; {self.spec.path.name} expects {self.expected} runs"]
        if self.missing:
            lines.append(f"PARTIAL: {len(self.missing)} of {self.expected} expected runs are missing:")
            lines += [f"  - {m}" for m in self.missing]
            lines.append("  (tables and figures use the runs that exist; every point states its number of seeds n)")
        if self.unfinished:
            lines.append(f"started but not finished ({len(self.unfinished)}): " + ", ".join(self.unfinished))
        return "\n".join(lines) if len(lines) > 1 else lines[0] + " (complete)"

    def layers(self) -> pd.DataFrame:
        """One row per run × chunk × layer from the runs' `memory_stats.json`: kept entries, accepted JS, kinds."""
        rows, lacking = [], []
        for _, run in self.runs.iterrows():
            path = (self.output_dir or Path(".")) / "runs" / run["signature"] / "memory_stats.json"
            if not path.is_file():
                lacking.append(run["signature"])
                continue
            base = {c: run[c] for c in self.by} | {"signature": run["signature"], SEED: run.get(SEED)}
            for ch in json.loads(path.read_text())["chunks"]:
                for layer, kept in enumerate(ch["kept"]):
                    rows.append(
                        {
                            **base,
                            "chunk": ch["index"],
                            "layer": layer,
                            "num_tokens": ch["num_tokens"],
                            "kept": kept,
                            "js": ch["js"][layer],
                            **{f"tokens_{k}": n for k, n in ch["tokens_by_kind"].items()},
                            **{f"kept_{k}": n for k, n in ch["kept_by_kind"][layer].items()},
                        }
                    )
        if not rows:
            raise SweepError(
                f"per-layer figures need memory_stats.json in the run folders ({self.output_dir}/runs/"
                f"<signature>/); none found for the {len(lacking)} runs of sweep {self.name!r}"
            )
        if lacking:
            log.warning("memory_stats.json missing for %d runs of %s: %s", len(lacking), self.name, ", ".join(lacking))
        return pd.DataFrame(rows)


def _grid_columns(df: pd.DataFrame, spec: SweepSpec | None) -> list[str]:
    """The sweep file's grid keys, or (no file) the config columns that vary across the runs."""
    if spec is not None:
        by = [k for k in spec.params if k != SEED]  # a config group (method) matches the run's label column
    else:
        by = [c for c in df.columns if "." in c and c != SEED and df[c].astype(str).nunique() > 1]
        if df["method"].nunique() > 1:  # the method's own fields vary with it: group by its name only
            by = ["method"] + [k for k in by if not k.startswith("method.")]
    lacking = [k for k in by if k not in df]
    if lacking:
        raise SweepError(f"the runs lack the grid column(s) {lacking} of sweep {df['sweep_name'].iloc[0]!r}")
    return by or ["method"]


def _sweep_names(output_dir: Path) -> pd.Series:
    return pd.Series(
        [
            (yaml.safe_load(p.read_text()) or {}).get("sweep_name")
            for p in sorted(output_dir.glob("runs/*/config.yaml"))
        ],
        dtype=object,
    )


def _unfinished(output_dir: Path, sweep_name: str) -> list[str]:
    names = _sweep_names(output_dir)
    folders = sorted(p.parent for p in output_dir.glob("runs/*/config.yaml"))
    return [f.name for f, n in zip(folders, names) if n == sweep_name and not (f / "metrics.json").exists()]


def load_sweep(
    output_dir: str | Path | None = "outputs",
    sweep_name: str = "adhoc",
    source: str = "runs",
    stem: str | None = None,
    sweeps_dir: str | Path | None = None,
    project: str = "emloc",
    entity: str | None = None,
) -> Sweep:
    """The runs of one sweep from `source` ("runs", "wandb-offline" or "wandb-api"), checked against its sweep file.

    Raises `SweepError` naming what is missing (no runs, or none of this sweep, and how to run it)."""
    out = Path(output_dir) if output_dir is not None else None
    loaders = {
        "runs": lambda: load_runs(out, sweep_name),
        "wandb-offline": lambda: load_wandb_offline(out, sweep_name),
        "wandb-api": lambda: load_wandb_api(project, entity, sweep_name),
    }
    if source not in loaders:
        raise ValueError(f"source must be one of {sorted(loaders)}, got {source!r}")
    sweeps_root = Path(sweeps_dir or REPO / "sweeps")
    spec = find_sweep_file(sweep_name, sweeps_root)
    hint = (
        (
            f"\n  run it with: python run.py -m --config-dir {sweeps_root} --config-name "
            f"{spec.path.relative_to(sweeps_root).with_suffix('')}"
        )
        if spec
        else ""
    )
    local = source != "wandb-api"
    if local and (out is None or not (out / "runs").is_dir()):
        raise SweepError(f"no run folders at {out}/runs: nothing to report for sweep {sweep_name!r}{hint}")
    try:
        df = loaders[source]()
    except FileNotFoundError as err:
        present = ""
        if local:
            counts = _sweep_names(out).value_counts()
            present = "; sweeps present: " + (", ".join(f"{k} ({v} runs)" for k, v in counts.items()) or "none")
        raise SweepError(f"{err}{present}{hint}") from None
    sweep = Sweep(sweep_name, stem or sweep_name.removeprefix("smoke_"), df, _grid_columns(df, spec), out, spec)
    if spec is not None:
        conf = sweeps_root.parent / "conf"
        sweep.expected, sweep.missing = missing_points(df, spec, conf if conf.is_dir() else REPO / "conf")
    if local:
        sweep.unfinished = _unfinished(out, sweep_name)
    return sweep


# ---------------------------------------------------------------------------------------------------- products
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
    if isinstance(obj, Table):
        display(Markdown(obj.markdown()))
    else:
        display(Image(filename=str(obj)) if str(obj).endswith(".png") else obj)


def products(sweep: Sweep) -> tuple[list, list[str]]:
    """The table makers and figure kinds of a sweep (by its stem; else whatever its runs support)."""
    from emloc import figures

    tables = [summary_table]
    if sweep.stem == "pruning_strategies" or (sweep.stem not in FIGURES and "method" in sweep.by):
        tables.append(matched_retention_table)
    return tables, FIGURES.get(sweep.stem) or figures.applicable(sweep)


def write_report(sweep: Sweep, out: str | Path, err: str = "minmax") -> list[Path]:
    """Every table and figure of the sweep into `out` (+ `runs.csv` and a `README.md` index); returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = [], []
    tables, kinds = products(sweep)
    for make in tables:
        try:
            written += make(sweep).write(out)
        except SweepError as e:
            skipped.append(f"{make.__name__}: {e}")
    for kind in kinds:
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
    ap = argparse.ArgumentParser(prog="emloc report", description="Tables (Markdown + CSV) and PNG figures of a sweep.")
    ap.add_argument("sweep", help="sweep name (the runs' `sweep_name`, e.g. smoke_ablate_js_threshold)")
    ap.add_argument(
        "--output-dir",
        default=os.environ.get("EMLOC_OUTPUT", "outputs"),
        help="where the runs are (default: $EMLOC_OUTPUT or outputs)",
    )
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
        sweep = load_sweep(
            args.output_dir, args.sweep, args.source, args.stem, args.sweeps_dir, args.project, args.entity
        )
    except (SweepError, ValueError) as e:
        print(f"emloc report: error: {e}", file=sys.stderr)
        return 2
    print(sweep.status(), file=sys.stderr if sweep.missing else sys.stdout)
    if args.strict and (sweep.spec is None or sweep.missing):
        print("emloc report: error: the sweep is partial (--strict)", file=sys.stderr)
        return 3
    paths = write_report(sweep, args.out or Path("reports") / args.sweep, args.err)
    print(f"wrote {len(paths)} files to {Path(paths[-1]).parent}:\n" + "\n".join(f"  {p.name}" for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
