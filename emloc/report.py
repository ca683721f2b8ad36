"""Runs → one tidy pandas DataFrame: the only thing analysis notebooks import from emloc.

One row per run: every metric of `metrics.json` (or the W&B summary) plus the flattened config
(`method.js_threshold`, `task.num_shots`, `task.demo_seed`, ...). Three sources give the same rows:

* run folders (`<output_dir>/runs/<signature>/`), the default;
* W&B offline files (`run-*.wandb`, read with the `wandb leet inspect` command, no server, no import of wandb);
* the W&B public API for an online project/group.

It deliberately does not import torch or run anything; it reads what runs wrote.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

log = logging.getLogger(__name__)
CONFIG_KEYS = ("model", "task", "method", "backend", "eval", "seed", "sweep_name")


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
    return {**flatten(cfg), **{k: v for k, v in metrics.items() if not k.startswith("_")}}


def _frame(rows: list[dict[str, Any]], what: str, sweep: str | None) -> pd.DataFrame:
    if not rows:
        raise FileNotFoundError(f"no finished runs found in {what}" + (f" for sweep {sweep!r}" if sweep else ""))
    df = pd.DataFrame(rows)
    if sweep is not None:
        df = df[df["sweep_name"] == sweep]
        if df.empty:
            raise FileNotFoundError(f"{what} holds runs, but none of sweep {sweep!r}")
    return df.sort_values("signature").reset_index(drop=True)


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
    rows = []
    for path in sorted(Path(output_dir).glob("runs/*/wandb/*/run-*.wandb")):
        run = read_wandb_run(path)
        if run.get("state") == "finished" and "accuracy" in run.get("summary", {}):
            rows.append(_row(run["summary"], run["config"]))
    return _frame(rows, f"W&B offline files under {output_dir}", sweep)


def load_wandb_api(project: str, entity: str | None = None, sweep: str | None = None) -> pd.DataFrame:
    """Finished runs of an online W&B project (needs `wandb login`); `sweep` filters on the group."""
    from emloc.tracking import fetch_runs  # the one module that imports wandb

    rows = [_row(summary, config) for summary, config in fetch_runs(project, entity, sweep)]
    return _frame(rows, f"W&B project {project}", sweep)
