"""`emloc report`: a sweep's runs → its tables and figures. The one module notebooks import from emloc.

`load_sweep` reads the runs of one sweep (`emloc.analysis.loading`: run folders, W&B offline files or the W&B API),
the per-layer statistics and per-query predictions of local runs, and checks the runs against the sweep file by
signature (`emloc.experiment.sweeps.plan_sweep` composes every grid point as the sweeper does; `emloc.analysis.grid`). The
tables (`emloc.analysis.tables`) and figures (`emloc.analysis.figures`) are re-exported here, and `write_report`
writes all of a sweep's into one folder. `python -m emloc.experiment.report <sweep>` (= `emloc report <sweep>`) is the CLI.

This façade is the only analysis entry that imports the run side (the planner, which needs Hydra and the method
classes); `emloc.analysis` itself imports neither torch nor the engine.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from emloc.analysis import figures, grid, loading
from emloc.analysis.frame import METRICS, SEED, Sweep, SweepError, point_label, t975
from emloc.analysis.frontier import frontier_table
from emloc.analysis.loading import frame_of_fetched, load_runs, load_wandb_offline, read_wandb_run
from emloc.analysis.power import power_table
from emloc.analysis.stats import aggregate, paired
from emloc.analysis.tables import (
    Table,
    comparison_table,
    matched_comparison_table,
    matched_retention_table,
    summary_table,
)
from emloc.utils import storage

__all__ = [
    "FIGURES",
    "METRICS",
    "SEED",
    "Sweep",
    "SweepError",
    "Table",
    "aggregate",
    "comparison_table",
    "figure",
    "frontier_table",
    "load_runs",
    "load_sweep",
    "load_wandb_api",
    "load_wandb_offline",
    "main",
    "matched_retention_table",
    "paired",
    "point_label",
    "power_table",
    "read_wandb_run",
    "show",
    "summary_table",
    "t975",
    "write_report",
]  # fmt: skip

log = logging.getLogger(__name__)
FIGURES = {  # sweep file stem → its figures (a sweep of another stem gets every figure its runs support)
    "main_table": ["accuracy_vs_shots", "cost_pareto", "kept_heatmap", "js_per_layer", "token_kinds", "drift"],
    "ablate_js_threshold": ["accuracy_vs_param", "kept_heatmap", "js_per_layer", "token_kinds", "cost_pareto"],
    "ablate_chunk_size": ["accuracy_vs_param", "kept_heatmap", "js_per_layer", "cost_pareto"],
    "ablate_shots": ["accuracy_vs_shots", "cost_pareto", "kept_heatmap"],
    "ablate_keep_ratios": ["accuracy_vs_param", "kept_heatmap", "token_kinds", "cost_pareto"],
    "pruning_strategies": ["cost_pareto", "frontier", "token_kinds", "kept_heatmap", "js_per_layer", "drift"],
    "e2e_targets": ["drift", "frontier", "cost_pareto", "kept_heatmap", "js_per_layer"],
    "frontier": ["frontier", "cost_pareto", "token_kinds"],
    "optuna_emloc": ["pareto_front", "kept_heatmap", "js_per_layer"],
}


def load_wandb_api(project: str, entity: str | None = None, sweep: str | None = None):
    """Finished runs of an online W&B project (needs `wandb login`); `sweep` filters on the group."""
    from emloc.experiment.tracking import fetch_runs  # the one module that imports wandb

    return frame_of_fetched(fetched=fetch_runs(project, entity, sweep), source=f"W&B project {project}", sweep=sweep)


def _expected(sweep_name: str, output_dir: Path | None, sweeps_dir: str | Path | None):
    """(sweep file, its axes, expected (label, signature) pairs) from the planner; None when no file declares it."""
    from emloc.experiment.sweeps import (  # Hydra + the method classes: only here, never in emloc.analysis
        find,
        plan_sweep,
    )

    try:
        path = find(sweep_name, sweeps_dir)
    except FileNotFoundError:
        return None
    if "hydra/sweeper: optuna" in path.read_text():  # a search, not a grid: its trials are not known in advance
        return None
    plan = plan_sweep(str(path.resolve()), output_dir, directory=sweeps_dir)
    bad = [p for p in plan.points if p.status == "invalid"]
    for p in bad:
        log.warning("grid point %s does not compose: %s", p.label, p.error)
    return plan, [(p.label, p.signature) for p in plan.points if p.signature]


def load_sweep(output_dir: str | Path | None = "outputs", sweep_name: str = "adhoc", source: str = "runs",
               stem: str | None = None, sweeps_dir: str | Path | None = None, project: str = "emloc",
               entity: str | None = None) -> Sweep:  # fmt: skip
    """The runs of one sweep from `source` ("runs", "wandb-offline" or "wandb-api"), checked against its sweep file.

    With a sweep file, a sweep without any finished run is returned empty (every expected run missing); without
    one, `SweepError` names what is missing (no runs, or none of this sweep)."""
    out = Path(output_dir) if output_dir is not None else None
    loaders = {
        "runs": lambda: loading.load_runs(out, sweep_name),
        "wandb-offline": lambda: loading.load_wandb_offline(out, sweep_name),
        "wandb-api": lambda: load_wandb_api(project, entity, sweep_name),
    }
    if source not in loaders:
        raise ValueError(f"source must be one of {sorted(loaders)}, got {source!r}")
    local = source != "wandb-api"
    expected = _expected(sweep_name, out if local else None, sweeps_dir)
    try:
        if local and (out is None or not (out / "runs").is_dir()):
            raise FileNotFoundError(f"no run folders at {out}/runs")
        df = loaders[source]()
    except FileNotFoundError as err:
        if expected is None:
            present = ""
            if local and out is not None and (out / "runs").is_dir():
                counts = Counter(loading.run_sweep_names(out).values()).most_common()
                present = "; sweeps present: " + (", ".join(f"{k} ({v} runs)" for k, v in counts) or "none")
            raise SweepError(f"{err}: nothing to report for sweep {sweep_name!r}{present}") from None
        log.warning("%s", err)
        df = loading.no_runs()
    outside = []
    if expected and len(df):  # runs of this sweep_name that no point of the file asks for (an older config): named
        grid_runs = df["signature"].isin({sig for _, sig in expected[1]})
        outside = [
            f"{r['signature']} ({grid.run_label(r, expected[0].columns)})" for r in df[~grid_runs].to_dict("records")
        ]
        df = df[grid_runs].reset_index(drop=True)
    axes = expected[0].columns if expected else None
    by = grid.grid_columns(df, axes) if len(df) else [k for k in (axes or ["method"]) if k != SEED]
    sweep = Sweep(sweep_name, stem or sweep_name.removeprefix("smoke_"), df, by)
    if expected:
        plan, pairs = expected
        sweep.sweep_file, sweep.expected, sweep.missing = str(plan.path.name), len(pairs), grid.missing(df, pairs)
        root = Path(sweeps_dir) if sweeps_dir else storage.sweeps_dir()
        stem = plan.path.resolve().relative_to(root.resolve()).with_suffix("")
        sweep.command = f"python run.py -m --config-dir {root} --config-name {stem}"
        sweep.outside, sweep.grids = outside, plan.grids
    if local and out is not None and (out / "runs").is_dir():
        sweep.unfinished = grid.unfinished(out, sweep_name)
        sweep.layer_stats = loading.load_layer_stats(out, list(df["signature"]))
        sweep.predictions = loading.load_predictions(out, list(df["signature"]))
        sweep.fidelity = loading.load_fidelity(out, list(df["signature"]))
    return sweep


def figure(sweep: Sweep, kind: str, path: str | Path | None = None, err: str = "minmax"):
    """Draw one figure (see `emloc.analysis.figures`); saved as PNG when `path` (a .png file or a directory) is
    given, and the path returned; otherwise the matplotlib Figure."""
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
    tables = [summary_table]
    if "method" in sweep.by:
        tables.append(matched_retention_table if sweep.stem == "pruning_strategies" else comparison_table)
        if "match_retention_of" in sweep.runs and sweep.runs["match_retention_of"].notna().any():
            tables.append(matched_comparison_table)
        tables += [frontier_table, power_table]
    return tables, FIGURES.get(sweep.stem) or figures.applicable(sweep)


def write_report(sweep: Sweep, out: str | Path, err: str = "minmax") -> list[Path]:
    """Every table and figure of the sweep into `out` (+ `runs.csv` and a `README.md` index); returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = [], []
    if sweep.runs.empty:
        skipped.append("every table and figure: no finished run yet")
    else:
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
    ap.add_argument("sweep", help="sweep name (the runs' `sweep_name`, e.g. smoke_ablate_js_threshold) or sweep file")
    ap.add_argument("--output-dir", default=os.environ.get("EMLOC_OUTPUT", "outputs"),
                    help="where the runs are (default: $EMLOC_OUTPUT or outputs)")  # fmt: skip
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
        sweep = load_sweep(args.output_dir, args.sweep, args.source, args.stem, args.sweeps_dir, args.project,
                           args.entity)  # fmt: skip
    except (SweepError, ValueError) as e:
        print(f"emloc report: error: {e}", file=sys.stderr)
        return 2
    print(sweep.status(), file=sys.stderr if sweep.missing else sys.stdout)
    if args.strict and (sweep.sweep_file is None or sweep.missing):
        print("emloc report: error: the sweep is partial (--strict)", file=sys.stderr)
        return 3
    paths = write_report(sweep, args.out or Path("reports") / args.sweep, args.err)
    print(f"wrote {len(paths)} files to {Path(paths[-1]).parent}:\n" + "\n".join(f"  {p.name}" for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
