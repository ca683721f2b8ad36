"""Provenance of a run: what it ran with and where, recorded in `metrics.json` and the W&B config.

`collect(device)` returns a JSON-ready dict:

* `versions` — emloc, torch, transformers, torch_npu (when installed), hydra-core, wandb (`importlib.metadata`);
* `git` — commit of the checkout the package runs from and whether its tracked files differ from it (`dirty`);
  null outside a git checkout or without `git`;
* `device`, `device_name` — the backend device and its name (`torch.cuda.get_device_name`, the NPU's, or `cpu`);
* `slurm` — job id, array job and task ids, restart count, node (null outside SLURM);
* `hydra_output_dir` — the Hydra job's output folder (logs, `.hydra/`);
* `options` — the option chosen per config group (`hydra.runtime.choices`, Hydra's internal groups left out but
  the launcher and sweeper kept), so `method=emloc_paper` and `method=emloc` runs are told apart by name.

It records, never decides: nothing here enters a run signature or a memory key.
"""

from __future__ import annotations

import os
import subprocess
from importlib import metadata
from typing import Any

from emloc.utils.storage import REPO

PACKAGES = ("emloc", "torch", "transformers", "torch_npu", "hydra-core", "wandb")
SLURM_VARS = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID", "array_task_id": "SLURM_ARRAY_TASK_ID",
              "restart_count": "SLURM_RESTART_COUNT", "node": "SLURMD_NODENAME"}  # fmt: skip
HYDRA_GROUPS_KEPT = ("hydra/launcher", "hydra/sweeper")


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_state(path=REPO) -> dict[str, Any] | None:
    """{"commit", "dirty"} of the checkout at `path`; None when it is not one (an installed wheel) or git is absent."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=20,
                              check=True).stdout.strip()  # fmt: skip

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def device_name(device: str) -> str:
    """The accelerator's name (e.g. "NVIDIA A100-SXM4-80GB"), or "cpu"."""
    kind, _, index = str(device).partition(":")
    try:
        import torch

        if kind == "cuda" and torch.cuda.is_available():
            return torch.cuda.get_device_name(int(index or 0))
        if kind == "npu" and hasattr(torch, "npu") and torch.npu.is_available():
            return torch.npu.get_device_name(int(index or 0))
    except Exception as err:  # a name is nice to have; never fail a run for it
        return f"{kind} (name unavailable: {type(err).__name__})"
    return kind


def slurm() -> dict[str, str] | None:
    found = {k: os.environ[v] for k, v in SLURM_VARS.items() if v in os.environ}
    return found or None


def hydra_state() -> tuple[str | None, dict[str, str]]:
    """(the Hydra job's output dir, the option per config group) when running under Hydra, else (None, {})."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None, {}
    hc = HydraConfig.get()
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/") or k in HYDRA_GROUPS_KEPT}
    return hc.runtime.output_dir, {k: (None if v is None else str(v)) for k, v in choices.items()}


def collect(device: str, options: dict[str, str] | None = None) -> dict[str, Any]:
    """Everything above for a run on `device`; `options` overrides the groups read from Hydra (e.g. in tests)."""
    output_dir, choices = hydra_state()
    return {
        "versions": versions(),
        "git": git_state(),
        "device": str(device),
        "device_name": device_name(device),
        "slurm": slurm(),
        "hydra_output_dir": output_dir,
        "options": {**choices, **(options or {})},
    }
