"""Reading runs: run folders, W&B offline files and the W&B API give the same tidy rows.

One row per run: every metric of `metrics.json` (or the W&B summary) plus the flattened config
(`method.js_threshold`, `task.num_shots`, `task.demo_seed`, ...). The `method` column holds the method's label as
its run recorded it (`method_label`, e.g. "EMLoC, paper search"; `method_option` is the config option), so no
analysis code keeps a list of methods. Sources:

* run folders (`<output_dir>/runs/<signature>/`), the default; they also give the per-layer memory statistics
  (`memory_stats.json`) and the per-query predictions (`predictions.jsonl`, with the candidates' scores);
* W&B offline files (`run-*.wandb`, read with the `wandb leet inspect` command: no server, no import of wandb);
* the W&B public API (through `emloc.experiment.tracking`, the one module importing wandb).

A rerun that left several records of one signature (a forced rerun, a requeued attempt) counts once: the last.
It deliberately does not import torch or the engine, and writes nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from emloc.analysis.frame import FLAGS, INT_METRICS, METRICS, SEED

CONFIG_KEYS = ("model", "task", "method", "backend", "eval", "seed", "sweep_name", "match_retention_of")
OPTIONAL = ("matched_retention", "matched_to")
LABEL_COLUMNS = ("method", "method_option", "model", "task", "signature", "sweep_name", "memory_key")


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
    row["method_option"] = scalars.get("method_option", scalars.get("method"))  # `method`: runs before 2026-12-06
    row["method"] = scalars.get("method_label", scalars.get("method"))  # the frame's `method` column: the label
    if "num_shots" in scalars and "task.num_shots" in row:  # what ran: zero-shot runs with 0 shots whatever was asked
        row["task.num_shots"] = scalars["num_shots"]
    return row


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Same columns, order and dtypes whatever the source (W&B drops None metrics and stores 0.0 as 0)."""
    df = df.copy()
    for m in METRICS:
        df[m] = pd.to_numeric(df[m], errors="coerce") if m in df else float("nan")
        df[m] = df[m].astype("int64" if m in INT_METRICS and df[m].notna().all() else "float64")
    for key in OPTIONAL:  # metrics a run may leave empty (W&B drops empty summary values): same columns everywhere
        df[key] = df[key] if key in df else None
    for flag, default in zip(FLAGS, (True, True, False)):  # runs from before method cards: a compressed memory
        df[flag] = df[flag].fillna(default).astype(bool) if flag in df else default
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


def _latest_per_signature(runs: list[tuple[dict, dict, str]]) -> list[tuple[dict, dict]]:
    """(summary, config, start time) records → one (summary, config) per run signature, the latest."""
    latest: dict[str, tuple[dict, dict, str]] = {}
    for i, (summary, config, start) in enumerate(runs):
        sig = summary.get("signature") or f"#{i}"
        if sig not in latest or start >= latest[sig][2]:
            latest[sig] = (summary, config, start)
    return [(s, c) for s, c, _ in latest.values()]


def load_wandb_offline(output_dir: str | Path, sweep: str | None = None) -> pd.DataFrame:
    """Finished runs from the W&B offline files under `<output_dir>/runs/*/wandb/`."""
    # `wandb/latest-run` is a symlink to one of the `offline-run-*` folders: count every file once
    paths = sorted({p.resolve() for p in Path(output_dir).glob("runs/*/wandb/*/run-*.wandb")})
    with ThreadPoolExecutor(max_workers=4) as pool:  # each file is one `wandb leet inspect` process
        runs = list(pool.map(read_wandb_run, paths))
    done = [
        (r["summary"], r["config"], r.get("start_time", ""))
        for r in runs
        if r.get("state") == "finished" and "accuracy" in r.get("summary", {})
    ]
    rows = [_row(s, c) for s, c in _latest_per_signature(done)]
    return _frame(rows, f"W&B offline files under {output_dir}", sweep)


def frame_of_fetched(fetched: list[tuple[dict, dict, str]], source: str, sweep: str | None = None) -> pd.DataFrame:
    """Finished runs fetched from a W&B project ((summary, config, start time) each, as
    `emloc.experiment.tracking.fetch_runs` returns them) as the tidy frame. Reruns of one signature (forced reruns,
    requeued attempts) count once, the latest."""
    rows = [_row(s, c) for s, c in _latest_per_signature(fetched)]
    return _frame(rows, source, sweep)


def load_layer_stats(output_dir: str | Path, signatures: list[str]) -> pd.DataFrame:
    """One row per run × chunk × layer from the runs' `memory_stats.json`: kept entries, accepted JS, token kinds."""
    rows = []
    for sig in signatures:
        path = Path(output_dir) / "runs" / sig / "memory_stats.json"
        if not path.is_file():
            continue
        for ch in json.loads(path.read_text())["chunks"]:
            for layer, kept in enumerate(ch["kept"]):
                rows.append({
                    "signature": sig, "chunk": ch["index"], "layer": layer, "num_tokens": ch["num_tokens"],
                    "kept": kept, "js": ch["js"][layer],
                    **{f"tokens_{k}": n for k, n in ch["tokens_by_kind"].items()},
                    **{f"kept_{k}": n for k, n in ch["kept_by_kind"][layer].items()},
                })  # fmt: skip
    return pd.DataFrame(rows)


def load_fidelity(output_dir: str | Path, signatures: list[str]) -> pd.DataFrame:
    """One row per run × point of its `fidelity.json` (`emloc.engine.fidelity`): `curve` "chunk" (held-out JS after each
    chunk: the drift curve), "layer" (only that layer compressed) or "query" (the finished memory on one query, its
    `uid` given), `index` (chunk, layer or query) and `js`."""
    rows = []
    for sig in signatures:
        path = Path(output_dir) / "runs" / sig / "fidelity.json"
        if path.is_file():
            data = json.loads(path.read_text())
            rows += [{"signature": sig, "curve": "chunk", "index": i, "js": v} for i, v in enumerate(data["drift"])]
            rows += [{"signature": sig, "curve": "layer", "index": i, "js": v} for i, v in enumerate(data["per_layer"])]
            rows += [{"signature": sig, "curve": "query", "index": i, "js": v, "uid": u}
                     for i, (v, u) in enumerate(zip(data["per_query"], data.get("uids", [])))]  # fmt: skip
    return pd.DataFrame(rows, columns=["signature", "curve", "index", "js", "uid"])


def load_predictions(output_dir: str | Path, signatures: list[str]) -> pd.DataFrame:
    """One row per run × query from the runs' `predictions.jsonl`: uid, correct, prediction, and `scores` (the
    candidates' log-probabilities, in the query's `choices` order) when the query was ranked."""
    frames = []
    for sig in signatures:
        path = Path(output_dir) / "runs" / sig / "predictions.jsonl"
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            frames.append(pd.DataFrame(rows).assign(signature=sig).drop_duplicates("uid", keep="last"))
    if not frames:
        return pd.DataFrame(columns=["signature", "uid", "correct", "prediction", "scores"])
    return pd.concat(frames, ignore_index=True)


def no_runs() -> pd.DataFrame:
    """The run frame of a sweep without any finished run."""
    return pd.DataFrame(columns=["signature", "method", "sweep_name", SEED, *METRICS, *FLAGS])


def run_sweep_names(output_dir: Path) -> dict[str, str | None]:
    """Every run folder (finished or not) → its sweep_name, from its config.yaml."""
    return {
        p.parent.name: (yaml.safe_load(p.read_text()) or {}).get("sweep_name")
        for p in sorted(output_dir.glob("runs/*/config.yaml"))
    }


__all__ = [
    "SEED",
    "frame_of_fetched",
    "load_fidelity",
    "load_layer_stats",
    "load_predictions",
    "load_runs",
    "load_wandb_offline",
    "read_wandb_run",
    "run_sweep_names",
]  # fmt: skip
