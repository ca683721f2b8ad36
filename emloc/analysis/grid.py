"""A sweep's grid against its runs: the grid columns of the tables, and which expected runs are missing.

The expected runs come from the sweep planner (`emloc.experiment.sweeps.plan_sweep`, which composes every grid point and
signs it as the runner does) as plain `(label, signature)` pairs, so matching is by run signature: exact, whatever
config groups the grid varies. Standard library and pandas only.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from emloc.analysis.frame import SEED, SweepError
from emloc.analysis.loading import run_sweep_names


def grid_columns(df: pd.DataFrame, axes: list[str] | None) -> list[str]:
    """The sweep file's grid keys (the demo seed excluded) as run-frame columns, or, without a file, the config
    columns that vary across the runs. A config group axis (`method`, `task`) is its label column."""
    if axes is not None:
        by = [k for k in axes if k != SEED]
    else:
        by = [c for c in df.columns if "." in c and c != SEED and df[c].astype(str).nunique() > 1]
        if df["method"].nunique() > 1:  # the method's own fields vary with it: its label, and the knobs that vary
            within = [k for k in by if k.startswith("method.") and (df.groupby("method")[k].nunique() > 1).any()]
            by = ["method"] + [k for k in by if not k.startswith("method.")] + within  # within one method
    by = [k for k in by if k in df or not k.startswith("method.")]  # a method's own knob: absent until it has a run
    lacking = [k for k in by if k not in df]
    if lacking:
        raise SweepError(f"the runs lack the grid column(s) {lacking} of sweep {df['sweep_name'].iloc[0]!r}")
    return by or ["method"]


def missing(df: pd.DataFrame, expected: list[tuple[str, str]]) -> list[str]:
    """The labels of the expected (label, signature) runs without a finished run."""
    have = set(df["signature"])
    return [label for label, sig in expected if sig not in have]


def unfinished(output_dir: Path, sweep_name: str) -> list[str]:
    """Run folders of the sweep that started (config.yaml) but have no metrics.json."""
    names = run_sweep_names(output_dir)
    return [
        sig
        for sig, name in names.items()
        if name == sweep_name and not (output_dir / "runs" / sig / "metrics.json").exists()
    ]


def run_label(run: dict, axes) -> str:
    """A run named by the sweep's grid keys (as the planner labels points), e.g. `method=h2o task.demo_seed=0`."""
    return " ".join(f"{k}={run[k]}" for k in axes if k in run) or "no grid key"
