"""Planning a run without touching a model: `plan(cfg) -> Plan`.

Checks the typed groups' value rules, instantiates the method (its dataclass validates every value) and the task
loader, resolves a matched retention (`emloc.experiment.matching`), and draws the seeded split: queries, the held-out
sets (fidelity, tuning, certification: `emloc.data.base.Split`) and the demonstrations. Bad values, missing data and
impossible splits fail here, in seconds, before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from emloc.data.base import Example, Task
from emloc.engine.compress import Compressor
from emloc.experiment import matching
from emloc.experiment.config import ConfigError, instantiate_group, run_signature


@dataclass
class Plan:
    cfg: DictConfig
    method: Compressor
    task: Task
    demos: list[Example]
    queries: list[Example]
    signature: str
    matched: tuple[float, str] | None = None  # (retention, run signature) this arm's keep ratio was matched to
    probes: list[Example] = field(default_factory=list)  # tuning inputs the method asked for (`heldout_count`)
    fidelity_set: list[Example] = field(default_factory=list)  # held-out JS is measured on these
    certification_set: list[Example] = field(default_factory=list)  # a method's bound is certified on these


def plan(cfg: DictConfig, origin: matching.Origin | None = None) -> Plan:
    """Validate the whole config, resolve a matched retention (`emloc.experiment.matching`) and draw the split; loads
    data, never a model. `origin`: how `cfg` was composed (default: the running Hydra job's)."""
    method, sig = run_signature(cfg)
    matched = matching.matched_retention(cfg, method, origin or matching.Origin.of_job())
    method = matching.apply(method, matched)
    task = instantiate_group("task.loader", cfg.task.loader)
    shots = cfg.task.num_shots if method.uses_demos else 0
    sizes = dict(cfg.task.get("heldout") or {})
    split = task.split(shots, cfg.task.num_queries, cfg.task.demo_seed, cfg.task.query_seed, sizes)
    tuning, wanted = split.held_out.get("tuning", []), method.heldout_count()
    if wanted > len(tuning):
        problem = f"method {method.option!r} looks at {wanted} held-out tuning inputs of task {task.name!r}"
        raise ConfigError("task.heldout.tuning", len(tuning), problem, f"task.heldout.tuning={wanted} (or more)")
    from emloc.data.video import validate_media  # every image file exists and every video decodes, before a model

    fidelity_set = split.held_out.get("fidelity", []) if cfg.eval.get("fidelity", True) else []
    certification = split.held_out.get("certification", []) if method.bound() is not None else []
    validate_media(split.demos + split.queries + tuning[:wanted] + fidelity_set + certification)
    return Plan(
        cfg, method, task, split.demos, split.queries, sig, matched, tuning[:wanted], fidelity_set, certification
    )
