"""One experiment, from a composed Hydra config to a finished run folder: `run(cfg) -> metrics`.

The only module that sees a `DictConfig`. Order matters:

1. Plan without touching a model: check the typed groups' value rules (`emloc.experiment.config`), instantiate the method
   (its dataclass validates every value), the task loader, and the seeded disjoint demo/query split — bad values,
   missing data and impossible splits fail here, in seconds, as one `ConfigError` naming the key, value and fix.
2. Skip if `runs/<signature>/metrics.json` exists (unless `force=true`).
3. Seed, load the model on the backend, build the task memory or load it from the memory cache (keyed by
   model + demos + method, so evaluation-only changes reuse it; built under a per-key file lock, so concurrent
   runs of one key compress once; partial memories are persisted per chunk so a requeued job resumes), answer the
   queries in batches (predictions persisted as they finish), and write the artifacts atomically, `metrics.json`
   (with the run's provenance) last. W&B (one run per signature, resumed by a requeued attempt, one history row
   per chunk) is closed in `finally`, so a failing job never leaves a dangling run and never marks itself done.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from emloc.data import metrics as metric_fns
from emloc.data.base import Example, Task
from emloc.engine.compress import Compressor, FullContext
from emloc.engine.fidelity import Fidelity, measure
from emloc.engine.generate import respond
from emloc.engine.memory import TaskMemory
from emloc.experiment import matching, provenance
from emloc.experiment.cache import build_memory
from emloc.experiment.config import as_config_error, instantiate_group, run_signature
from emloc.experiment.tracking import RunFolder, Tracker
from emloc.utils.progress import interactive, progress
from emloc.utils.storage import conf_dir

log = logging.getLogger(__name__)


@dataclass
class Plan:
    cfg: DictConfig
    method: Compressor
    task: Task
    demos: list[Example]
    queries: list[Example]
    signature: str
    matched: tuple[float, str] | None = None  # (retention, run signature) this arm's keep ratio was matched to
    probes: list[Example] = field(default_factory=list)  # held-out inputs the method asked for (`heldout_count`)


def plan(cfg: DictConfig, origin: matching.Origin | None = None) -> Plan:
    """Validate the whole config, resolve a matched retention (`emloc.experiment.matching`) and draw the split; loads data, never
    a model. `origin`: how `cfg` was composed (default: the running Hydra job's)."""
    method, sig = run_signature(cfg)
    matched = matching.matched_retention(cfg, method, origin or matching.Origin.of_job())
    method = matching.apply(method, matched)
    task = instantiate_group("task.loader", cfg.task.loader)
    shots = cfg.task.num_shots if method.uses_demos else 0
    split = task.split(shots, cfg.task.num_queries, cfg.task.demo_seed, cfg.task.query_seed)
    from emloc.data.video import validate_media  # every image file exists and every video decodes, before a model

    validate_media(split.demos + split.queries)
    probes = task.heldout(split, method.heldout_count(), cfg.task.demo_seed)  # inputs the method may measure on
    return Plan(cfg, method, task, split.demos, split.queries, sig, matched, probes)


def fidelity(p: Plan, adapter, memory: TaskMemory, cache_dir: Path) -> Fidelity | None:
    """The memory's divergence from the full context on the first `eval.fidelity_queries` queries (`emloc.engine.fidelity`);
    None when off, without demonstrations, or for a method that keeps every entry (its memory is the full context:
    zero by the lossless invariant, tested in tests/engine/test_fidelity.py). The full-context memory comes from the
    same cache."""
    n = p.cfg.eval.get("fidelity_queries", 0) or 0
    if n <= 0 or not p.method.uses_demos or not p.method.compresses:
        return None
    full, _ = build_memory(FullContext(show_progress=False), p.demos, p.task.instruction, adapter, cache_dir)
    per_layer = bool(p.cfg.eval.get("fidelity_layers", False))
    return measure(adapter, memory, full, adapter.renderer(p.task.instruction), p.queries[:n], per_layer=per_layer)


def evaluate(p: Plan, adapter, memory: TaskMemory, folder: RunFolder) -> tuple[list[dict], int]:
    """Answer every query not answered yet; returns all prediction rows and how many were resumed."""
    done = folder.finished_predictions()
    todo = [q for q in p.queries if q.uid not in done]
    if len(todo) < len(p.queries):
        log.info("resuming evaluation: %d of %d queries already answered", len(p.queries) - len(todo), len(p.queries))
    renderer = adapter.renderer(p.task.instruction)
    size = p.cfg.eval.batch_size
    bar = progress(total=len(p.queries), initial=len(p.queries) - len(todo), desc="queries")
    for i in range(0, len(todo), size):
        batch = todo[i : i + size]
        start = time.perf_counter()
        answers = respond(adapter, memory, renderer, batch, p.cfg.eval.max_new_tokens)
        per_query = (time.perf_counter() - start) / len(batch)
        rows = [
            {"uid": q.uid, "question": q.question, "prediction": pred, "target": q.answer,
             "correct": p.task.score(q, pred), "scores": scores, "seconds": per_query}
            for q, (pred, scores) in zip(batch, answers)
        ]  # fmt: skip
        folder.append_predictions(rows)
        done.update({r["uid"]: r for r in rows})
        bar.update(len(batch))
    bar.close()
    return [done[q.uid] for q in p.queries], len(p.queries) - len(todo)


def run(cfg: DictConfig, origin: matching.Origin | None = None) -> dict[str, Any]:
    """One run to its folder (see the module docstring); `origin`: how `cfg` was composed, needed only for
    `match_retention_of` outside a Hydra job."""
    from transformers import set_seed

    from emloc.models.loading import load

    try:
        p = plan(cfg, origin)
    except (
        Exception
    ) as err:  # a bad value or missing data: one line naming the key, value and fix (emloc.experiment.errors)
        raise as_config_error(err, cfg, provenance.hydra_state()[1]) from err
    folder = RunFolder(cfg.paths.output_dir, p.signature)
    if folder.done and not cfg.force:
        log.info("run %s is finished: %s (force=true recomputes)", p.signature, folder.path)
        return folder.metrics()
    folder.path.mkdir(parents=True, exist_ok=True)
    if cfg.force:
        for name in ("metrics.json", "predictions.jsonl"):
            (folder.path / name).unlink(missing_ok=True)
    folder.write_text("config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if not interactive():  # SLURM logs: no carriage-return bars from transformers either
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    option, prov = method_option(cfg, p.method), provenance.collect(cfg.backend.device)
    lg = cfg.logger
    tracker = Tracker(
        lg.mode,
        lg.project,
        lg.entity,
        cfg.sweep_name,
        f"{option}-{p.signature}",
        list(cfg.tags),
        {**OmegaConf.to_container(cfg, resolve=True), "provenance": prov},
        folder.path,
        lg.log_memory,
        run_id=p.signature,  # every attempt of this run (requeues, reruns) writes to one W&B run
        job_type=option,
    )
    failed = True
    try:
        set_seed(cfg.seed)
        adapter = load(**cfg.model, **{k: v for k, v in cfg.backend.items() if k in ("dtype", "device", "attn")})
        cache = Path(cfg.paths.memory_cache_dir)
        memory, built = build_memory(p.method, p.demos, p.task.instruction, adapter, cache, cfg.eval.checkpoint_chunks,
                                     on_chunk=tracker.log_chunk, probes=p.probes)  # fmt: skip
        rows, resumed_predictions = evaluate(p, adapter, memory, folder)
        measured = fidelity(p, adapter, memory, cache)
        if measured is not None:
            uids = [q.uid for q in p.queries[: len(measured.per_query)]]
            folder.write_json("fidelity.json", {**vars(measured), "uids": uids})
        stats = memory.stats()
        js = [v for c in memory.chunks for v in c.js if v is not None]
        result = {
            **metric_fns.aggregate(rows),
            "num_shots": len(p.demos),
            "context_tokens": memory.num_source_tokens,
            "memory_tokens": memory.memory_tokens,
            "retention": memory.retention,
            "max_chunk_js": max(js, default=None),
            "heldout_js": measured.heldout_js if measured is not None else None,
            "matched_retention": p.matched[0] if p.matched else None,
            "matched_to": p.matched[1] if p.matched else None,
            **built,
            "query_seconds_mean": sum(r["seconds"] for r in rows) / len(rows),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            **p.method.card(),
            "method_option": option,
            "model": cfg.model.source,
            "task": cfg.task.name,
            "signature": p.signature,
            "sweep_name": cfg.sweep_name,
            "resumed_predictions": resumed_predictions,
            "attempt": int(os.environ.get("SLURM_RESTART_COUNT", 0)),
            "provenance": prov,  # versions, git, device name, SLURM ids, Hydra dir, options (emloc.experiment.provenance)
        }
        folder.write_json("memory_stats.json", stats)
        folder.write_json("metrics.json", result)
        outputs = [folder.path / n for n in ("predictions.jsonl", "memory_stats.json", "metrics.json", "fidelity.json")]
        tracker.finish_run(result, stats, cache / built["memory_key"], outputs, built["memory_cached"])
        failed = False
        (folder.path / "error.txt").unlink(missing_ok=True)
        log.info("\n%s", summary_table(result))
        return result
    except BaseException:
        folder.write_text("error.txt", traceback.format_exc())  # the run stays not-done; a rerun retries it
        raise
    finally:
        tracker.close(failed=failed)


def method_option(cfg: DictConfig, method: Compressor) -> str:
    """The `method` option the run was composed with (`hydra.runtime.choices`), else the class's own option."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return choices.get("method") or method.option


def summary_table(m: dict[str, Any]) -> str:
    keys = (
        "method",
        "task",
        "num_shots",
        "accuracy",
        "num_queries",
        "context_tokens",
        "memory_tokens",
        "retention",
        "max_chunk_js",
        "compress_seconds",
        "query_seconds_mean",
        "peak_rss_mb",
    )
    fmt = {float: "{:.4g}"}
    return "\n".join(f"  {k:<20} {fmt.get(type(m.get(k)), '{}').format(m.get(k))}" for k in keys)


def objective(cfg: DictConfig, metrics: dict[str, Any]) -> Any:
    """What a job returns to its sweeper: the metric named by `optimized_metric`, or, for a multi-objective search
    (e.g. `[accuracy, retention]` for the Optuna sweeper), one value per named metric."""
    wanted = cfg.get("optimized_metric")
    if wanted is None or isinstance(wanted, str):
        return metrics.get(wanted) if wanted else None
    return [metrics.get(k) for k in wanted]


def job(cfg: DictConfig) -> Any:
    """The task function of `python run.py` and `emloc run`: the run, and what it returns to the sweeper. A config or
    data error of a single run ends the process with its one line and exit code 2 (`emloc.experiment.errors`); in a sweep it
    fails its own job only."""
    try:
        return objective(cfg, run(cfg))
    except Exception as err:
        from emloc.experiment.errors import exit_if_config_error

        exit_if_config_error(err)
        raise


def main(argv: list[str]) -> int:
    """`python run.py [argv]` from another entry point (the `emloc run` command): the same config tree, overrides,
    sweeps and return value for sweepers; a config or data error is one line and exit code 2 (`emloc.experiment.errors`)."""
    import hydra

    from emloc.experiment.errors import guard

    @hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
    def _main(cfg: DictConfig) -> Any:
        return job(cfg)

    saved, sys.argv = sys.argv, ["emloc run", *argv]
    try:
        return guard(_main, argv)
    finally:
        sys.argv = saved
