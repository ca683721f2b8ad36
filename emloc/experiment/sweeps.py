"""Sweep files planned by signature: which runs a sweep asks for, which are done, which cannot run.

A sweep file (`sweeps/**/*.yaml`) is a primary config that lists `hydra.sweeper.params`, and optionally
`hydra.sweeper.grids`: per method option, its own parameter grid (`expand`). `plan_sweep` expands that grid with
Hydra's own override grammar and composes every point exactly as `python run.py -m --config-dir sweeps
--config-name <file>` composes it, then asks the runner for the point's run signature (`config.run_signature`:
no data, no model) and, with `check_data`, validates its data too (`runner.plan`: e.g. `num_shots` larger than the
pool). Points are therefore matched to runs by signature, whatever groups or keys the grid varies, and grid points
that are one run (zero-shot at several shot counts) count once. Each point is `done` (its run folder has
metrics.json), `todo`, or `invalid` (with the one-line reason).

`emloc sweep plan <name>` prints the plan; `emloc report` uses it for completeness; the `planned` Hydra sweeper
(`hydra_plugins/emloc_sweeper`) launches only the `todo` points and names the invalid ones before anything is
queued. Imports Hydra and (through the runner) the method classes; analysis code receives its results as data.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from emloc.utils.storage import atomic_write, conf_dir, sweeps_dir

log = logging.getLogger(__name__)


@dataclass
class Point:
    """One grid point of a sweep file."""

    overrides: list[str]
    signature: str | None = None
    method: str | None = None  # the method option
    status: str = "todo"  # done | todo | invalid
    error: str | None = None
    after: str | None = None  # the run whose retention this one matches (`match_retention_of`), when unfinished

    @property
    def label(self) -> str:
        return " ".join(self.overrides)


@dataclass
class SweepPlan:
    path: Path
    sweep_name: str
    axes: dict[str, list[str]]  # override key -> values, as the sweeper expands them
    grids: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # method option -> its own grid
    points: list[Point] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        """Every key a point is labelled by: the Cartesian axes, then the methods' own grid keys."""
        return [*self.axes, *dict.fromkeys(k for g in self.grids.values() for k in g if k not in self.axes)]

    def count(self, status: str) -> int:
        return sum(p.status == status for p in self.points)

    def table(self) -> str:
        lines = [f"{p.status:<8} {p.signature or '-':<12}  {p.label}" + (f"\n         {p.error}" if p.error else "")
                 for p in self.points]  # fmt: skip
        counts = ", ".join(f"{self.count(s)} {s}" for s in ("done", "todo", "invalid"))
        return "\n".join(
            [f"{self.path.name} (sweep_name {self.sweep_name}): {len(self.points)} runs: {counts}", *lines]
        )


def find(name: str, directory: str | Path | None = None) -> Path:
    """A sweep file by path relative to the sweeps folder (`smoke/main_table`) or by its `sweep_name`."""
    root = Path(directory) if directory else sweeps_dir()
    direct = root / f"{name.removesuffix('.yaml')}.yaml"
    if direct.is_file():
        return direct
    for path in sorted(root.rglob("*.yaml")):
        if (yaml.safe_load(path.read_text()) or {}).get("sweep_name") == name:
            return path
    known = ", ".join(str(p.relative_to(root).with_suffix("")) for p in sorted(root.rglob("*.yaml")))
    raise FileNotFoundError(f"no sweep file {name!r} in {root} (by path or sweep_name); sweep files: {known}")


def axes(path: Path) -> dict[str, list[str]]:
    """The sweep file's `hydra.sweeper.params`, each expanded to its values as override strings."""
    from hydra.core.override_parser.overrides_parser import OverridesParser  # the sweeper's own grammar

    doc = yaml.safe_load(path.read_text()) or {}
    parser, out = OverridesParser.create(), {}
    for key, spec in ((doc.get("hydra") or {}).get("sweeper") or {}).get("params", {}).items():
        override = parser.parse_overrides([f"{key}={spec}"])[0]
        out[key] = list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(spec)]
    return out


def grids(path: Path) -> dict[str, dict[str, list[str]]]:
    """The sweep file's `hydra.sweeper.grids`: method option -> {key: its values}."""
    doc = yaml.safe_load(path.read_text()) or {}
    found = ((doc.get("hydra") or {}).get("sweeper") or {}).get("grids") or {}
    return {m: {k: [v.strip() for v in str(vals).split(",")] for k, vals in g.items()} for m, g in found.items()}


def expand(overrides: list[str], method_grids: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """One grid point per combination of its method's own grid (`grids`); the point itself when it has none (a
    fixed-ratio arm over `method.keep_ratio` and a bounded one over its δ, which one Cartesian grid cannot say)."""
    method = next((o.split("=", 1)[1] for o in overrides if o.startswith("method=")), None)
    own = method_grids.get(method or "", {})
    if not own:
        return [list(overrides)]
    axes = [[f"{key}={value}" for value in values] for key, values in own.items()]
    return [[*overrides, *combo] for combo in itertools.product(*axes)]


def compose_point(path: Path, overrides: list[str], root: Path) -> tuple[DictConfig, dict]:
    """The config of one grid point as the sweeper composes it (`root`, the folder given to `--config-dir`, holds
    the primary config `path`; `conf/` is on the search path), without the `hydra` node, and the option chosen per
    config group (`hydra.runtime.choices`)."""
    from emloc.experiment.config import compose

    name = str(path.relative_to(root).with_suffix(""))
    cfg = compose([f"hydra.searchpath=[file://{conf_dir()}]", *overrides], root, config_name=name, hydra=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def plan_sweep(name: str, output_dir: str | Path | None = None, check_data: bool = False,
               directory: str | Path | None = None) -> SweepPlan:  # fmt: skip
    """Every run the sweep file asks for, with its signature and status (see the module docstring).

    output_dir : where runs are looked up (default: each point's `paths.output_dir`)."""
    from emloc.experiment.config import run_signature
    from emloc.experiment.matching import Origin, ReferencePending
    from emloc.experiment.runner import plan

    root = Path(directory) if directory else sweeps_dir()
    path = find(name, root)
    grid, own = axes(path), grids(path)
    result = SweepPlan(path, "", grid, own)
    seen: set[str] = set()
    cartesian = [[f"{k}={v}" for k, v in zip(grid, values)] for values in itertools.product(*grid.values())]
    for overrides in (o for c in cartesian for o in expand(c, own)):
        point = Point(overrides)
        try:
            cfg, choices = compose_point(path, point.overrides, root)
            result.sweep_name = cfg.sweep_name
            point.method = choices.get("method")
            _, point.signature = run_signature(cfg)
            if point.signature in seen:  # e.g. zero-shot at another shot count: the same run
                continue
            runs = Path(output_dir) if output_dir is not None else Path(cfg.paths.output_dir)
            point.status = "done" if (runs / "runs" / point.signature / "metrics.json").is_file() else "todo"
            if check_data and point.status == "todo":
                plan(cfg, Origin(root, str(path.relative_to(root).with_suffix("")), point.overrides))
        except ReferencePending as err:  # its matched-retention reference is not finished: fine if it is planned
            point.status, point.error, point.after = "pending", str(err), err.signature
        except Exception as err:  # a point that does not compose or validate: named, never run
            point.status, point.error = "invalid", _one_line(err)
        if point.signature:
            seen.add(point.signature)
        result.points.append(point)
    todo = {p.signature for p in result.points if p.status == "todo"}
    for p in result.points:
        if p.status == "pending":
            p.status, p.error = (
                ("todo", f"runs after {p.after}, whose retention it matches")
                if p.after in todo
                else ("invalid", p.error)
            )
    return result


def _one_line(err: BaseException) -> str:
    root = err
    while root.__cause__ is not None:
        root = root.__cause__
    return f"{type(root).__name__}: {str(root).splitlines()[0] if str(root) else ''}"


# ------------------------------------------------------------------------------------------------ job status
class JobSummary(Callback):
    """Hydra callback: every job of a sweep leaves `<sweep dir>/status/<job num>.json` (status, overrides, error),
    whichever launcher ran it, so one failed point never hides in the others' logs. `sweep_status(<sweep dir>)`
    returns them as a table."""

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        hc = config.hydra
        if hc.mode != RunMode.MULTIRUN:
            return
        ok = job_return.status.name == "COMPLETED"
        value = job_return._return_value
        record = {
            "job": hc.job.num,
            "status": job_return.status.name,
            "overrides": list(hc.overrides.task),
            "result": value if ok else None,
            "error": None if ok else f"{type(value).__name__}: {value}",
        }
        atomic_write(Path(hc.sweep.dir) / "status" / f"{hc.job.num}.json", json.dumps(record, default=str))
        if not ok:
            log.error("job %s failed (%s): %s", hc.job.num, " ".join(record["overrides"]), record["error"])


def sweep_status(sweep_dir: str | Path) -> tuple[str, int]:
    """A table of every job's status in a sweep directory, and the number of failed jobs."""
    records = [
        json.loads(p.read_text()) for p in sorted(Path(sweep_dir).glob("status/*.json"), key=lambda p: int(p.stem))
    ]
    if not records:
        raise FileNotFoundError(f"no job status files in {sweep_dir}/status (is it a multirun directory?)")
    lines = [
        f"{r['job']:>4}  {r['status']:<9}  {' '.join(r['overrides'])}" + (f"\n      {r['error']}" if r["error"] else "")
        for r in records
    ]
    failed = sum(r["status"] != "COMPLETED" for r in records)
    return "\n".join(lines + [f"{len(records) - failed} completed, {failed} failed"]), failed
