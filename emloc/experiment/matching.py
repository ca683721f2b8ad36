"""Matched retention from data: a fixed-ratio arm keeps the share of the context that another arm of the same grid
point reached (`match_retention_of: <method option>`, e.g. `emloc_paper`), read from that run's `metrics.json`.

The reference run is the same grid point with the method swapped: the config is composed again from the point's
own origin (primary config, folder and overrides, `Origin`), so it has the same task, demo seed, shots and sweep,
and its signature names its run folder. Resolution happens while planning, before any model is loaded: a
reference that is not finished raises `ReferencePending` (naming it and its overrides); the planned sweeper
launches such points in a second wave, after their references. Methods without a `keep_ratio` (the reference
itself, full context, zero-shot) are not matched. The value used and the run it came from are recorded with the
run (`matched_retention`, `matched_to`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, open_dict

from emloc.utils.storage import conf_dir


class ReferencePending(ValueError):
    """The run an arm's retention is matched to has not finished (yet)."""

    def __init__(self, message: str, signature: str) -> None:
        super().__init__(message)
        self.signature = signature


@dataclass
class Origin:
    """How a config was composed: primary config `name` found in `directory` (with `conf/` on the search path when
    `directory` is not `conf/` itself), plus `overrides`."""

    directory: Path
    name: str
    overrides: list[str]

    @classmethod
    def of(cls, hydra: Any, overrides: list[str]) -> Origin | None:
        """From a composed config's `hydra` node (its primary config and search path) and a point's overrides."""
        name = hydra.job.config_name
        for source in hydra.runtime.config_sources:
            path = Path(str(source.path).removeprefix("file://"))
            if source.schema == "file" and (path / f"{name}.yaml").is_file():
                return cls(path, name, list(overrides))
        return None

    @classmethod
    def of_job(cls) -> Origin | None:
        """The origin of the running Hydra job (None outside one)."""
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        return cls.of(HydraConfig.get(), list(HydraConfig.get().overrides.task))

    def sibling(self, method: str) -> DictConfig:
        """The same grid point with `method=<method>` (method.* overrides the other method has no key for are
        dropped), composed as the sweeper composes it, without the `hydra` node."""
        from emloc.experiment.config import compose

        keys = set(yaml.safe_load((conf_dir() / "method" / f"{method}.yaml").read_text()) or {})
        kept = []
        for o in self.overrides:
            key = o.split("=", 1)[0].lstrip("+~")
            if key == "method" or (key.startswith("method.") and key.split(".")[1] not in keys):
                continue
            kept.append(o)
        search = [] if self.directory.resolve() == conf_dir() else [f"hydra.searchpath=[file://{conf_dir()}]"]
        cfg = compose([*search, *kept, f"method={method}"], self.directory, config_name=self.name, hydra=True)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg


def matched_retention(cfg: DictConfig, method: Any, origin: Origin | None) -> tuple[float, str] | None:
    """(retention, reference run signature) when `cfg.match_retention_of` applies to `method`, else None."""
    from emloc.experiment.config import run_signature

    reference = cfg.get("match_retention_of")
    if not reference or "keep_ratio" not in method.params():
        return None
    if not (conf_dir() / "method" / f"{reference}.yaml").is_file():
        raise ValueError(f"match_retention_of={reference!r} is not a method option (conf/method/<option>.yaml)")
    if origin is None:
        raise ValueError(f"match_retention_of={reference!r} needs the run's overrides: run it through run.py / a sweep")
    ref_cfg = origin.sibling(reference)
    _, sig = run_signature(ref_cfg)
    metrics = Path(ref_cfg.paths.output_dir) / "runs" / sig / "metrics.json"
    if not metrics.is_file():
        raise ReferencePending(
            f"match_retention_of={reference}: its run {sig} ({' '.join(origin.overrides)}, method={reference}) has not "
            f"finished in {metrics.parent.parent}; run it first (a planned sweep launches it first)",
            sig,
        )
    return float(json.loads(metrics.read_text())["retention"]), sig


def apply(method: Any, matched: tuple[float, str] | None) -> Any:
    """The method with its `keep_ratio` set to the matched retention."""
    return method if matched is None else replace(method, keep_ratio=matched[0])
