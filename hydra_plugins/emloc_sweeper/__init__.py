"""The `planned` Hydra sweeper (`hydra/sweeper=planned`, the default of `conf/config.yaml`).

Hydra's basic sweeper, except that each batch of grid points is planned before it is launched: a point whose run
is finished (`runs/<signature>/metrics.json`, unless `force=true`) is skipped, and a point that does not compose or
validate (`emloc.experiment.runner.plan`: bad values, missing data, more shots than the pool) is named in the log and in
`<sweep dir>/plan.json` and never queued. Only the remaining points reach the launcher (basic, submitit local or
SLURM), so a SLURM array holds exactly the runs that are still to do. The sweep exits non-zero when a point was
invalid, after the valid ones ran.

`hydra.sweeper.grids` gives a method its own parameter grid: `{<method option>: {<key>: "v1,v2,..."}}` turns every
grid point with `method=<option>` into one point per combination of those values (e.g. fixed-ratio arms over
`method.keep_ratio`, bounded methods over their δ), which one Cartesian `params` grid cannot express. Lives in `hydra_plugins`, the namespace Hydra discovers plugins in.
"""

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional  # noqa: UP035  OmegaConf reads these annotations at import

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from omegaconf import open_dict

log = logging.getLogger(__name__)


@dataclass
class PlannedSweeperConf:
    _target_: str = "hydra_plugins.emloc_sweeper.PlannedSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045
    grids: Optional[Dict[str, Dict[str, str]]] = None  # noqa: UP006, UP045


ConfigStore.instance().store(group="hydra/sweeper", name="planned", node=PlannedSweeperConf, provider="emloc")


class _Planned(Launcher):
    """Wraps the configured launcher: launches nothing when a batch is empty after planning."""

    def __init__(self, inner: Launcher) -> None:
        self.inner = inner

    def setup(self, **kwargs: Any) -> None:  # the inner launcher is set up already
        pass

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return self.inner.launch(job_overrides, initial_job_idx) if job_overrides else []


class PlannedSweeper(BasicSweeper):
    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None,
                 grids: dict[str, dict[str, str]] | None = None) -> None:  # fmt: skip
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.grids = {m: {k: [v.strip() for v in str(vals).split(",")] for k, vals in g.items()}
                      for m, g in (grids or {}).items()}  # fmt: skip
        self.invalid: list[dict[str, Any]] = []
        self.deferred: list[Sequence[str]] = []  # points whose matched-retention reference runs in this wave

    def setup(self, **kwargs: Any) -> None:
        super().setup(**kwargs)
        self.launcher = _Planned(self.launcher)

    def is_done(self) -> bool:
        return super().is_done() and not self.deferred

    def _plan(self, overrides: Sequence[str]) -> dict[str, Any]:
        from emloc.experiment.matching import Origin, ReferencePending
        from emloc.experiment.runner import plan  # a bad point fails here, before anything is queued

        record: dict[str, Any] = {"overrides": list(overrides)}
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            origin = Origin.of(cfg.hydra, list(overrides))
            with open_dict(cfg):
                del cfg["hydra"]
            p = plan(cfg, origin)
            record["signature"] = p.signature
            done = (Path(cfg.paths.output_dir) / "runs" / p.signature / "metrics.json").is_file()
            record["status"] = "done" if done and not cfg.force else "todo"
        except ReferencePending as err:
            record["status"], record["after"], record["error"] = "pending", err.signature, str(err)
        except Exception as err:
            root = err
            while root.__cause__ is not None:
                root = root.__cause__
            record["status"], record["error"] = "invalid", f"{type(root).__name__}: {root}"
        return record

    def get_job_batch(self) -> Sequence[Sequence[str]]:
        if super().is_done():  # the second wave: points whose references ran in the first
            batch, self.deferred = self.deferred, []
        else:
            batch = [point for o in super().get_job_batch() for point in self._expand(o)]
        records, signatures = [self._plan(o) for o in batch], set()
        for r in records:
            if r["status"] == "todo" and r["signature"] in signatures:  # e.g. zero-shot at other shot counts
                r["status"] = "duplicate"
            signatures.add(r.get("signature"))
        todo = {r["signature"] for r in records if r["status"] == "todo"}
        for r in records:
            if r["status"] == "pending" and r["after"] in todo:
                r["status"] = "deferred"  # its reference runs in this wave; it runs in the next
                self.deferred.append(r["overrides"])
            elif r["status"] == "pending":
                r["status"] = "invalid"
            if r["status"] == "invalid":
                log.error("invalid grid point, not launched: %s\n  %s", " ".join(r["overrides"]), r["error"])
                self.invalid.append(r)
        count = {
            s: sum(r["status"] == s for r in records) for s in ("todo", "done", "duplicate", "deferred", "invalid")
        }
        log.info("planned %d grid points: %d to run, %d finished (skipped), %d duplicates of another point, "
                 "%d after their matched-retention reference, %d invalid", len(batch), *count.values())  # fmt: skip
        plan_file = Path(self.config.hydra.sweep.dir) / "plan.json"
        previous = json.loads(plan_file.read_text()) if plan_file.is_file() else []
        plan_file.parent.mkdir(parents=True, exist_ok=True)
        plan_file.write_text(json.dumps(previous + records, indent=1))
        return [r["overrides"] for r in records if r["status"] == "todo"]

    def _expand(self, overrides: Sequence[str]) -> list[list[str]]:
        """One grid point per combination of its method's own grid (`grids`); the point itself when it has none."""
        from emloc.experiment.sweeps import expand

        return expand(list(overrides), self.grids)

    def sweep(self, arguments: list[str]) -> Any:
        try:
            returns = super().sweep(arguments)  # raises after the batch when a launched job failed
        finally:
            if self.invalid:  # the points and their errors are in the log above and in plan.json
                log.error("%d grid point(s) invalid and not run; see plan.json in the sweep folder", len(self.invalid))
        if self.invalid:
            raise SystemExit(2)  # one line, no traceback
        return returns


__all__ = ["PlannedSweeper", "Sweeper"]
