"""One experiment, from a composed Hydra config to a finished run folder: `run(cfg) -> metrics`.

`run` reads top to bottom: plan (`emloc.experiment.planning`: every value checked and the split drawn, no model),
skip if `runs/<signature>/metrics.json` exists (unless `force=true`), open the run folder and its W&B run, load the
model, get the task memory from the memory cache or build it there (`emloc.experiment.cache`: keyed by model + demos
+ method, built once under a per-key lock, resumed per chunk after a requeue), answer the queries in batches
(predictions persisted as they finish: a requeued job resumes them), and record (`emloc.experiment.record`:
fidelity, certificate, metrics, `metrics.json` last). W&B is closed in `finally`, so a failing job never leaves a
dangling run and never marks itself done. The experiment layer (this package) is the only one that sees a
`DictConfig`.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from emloc.engine.compress import Compressor
from emloc.engine.memory import TaskMemory
from emloc.experiment import matching, provenance
from emloc.experiment.cache import build_memory
from emloc.experiment.config import as_config_error
from emloc.experiment.planning import Plan, plan
from emloc.experiment.record import Started, record
from emloc.experiment.tracking import RunFolder, Tracker
from emloc.utils.progress import interactive, progress
from emloc.utils.storage import conf_dir

log = logging.getLogger(__name__)


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
        answers = p.method.respond(adapter, memory, renderer, batch, p.cfg.eval.max_new_tokens, p.demos)
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
    """One run to its folder (see the module docstring): plan → task memory → evaluate → record. `origin`: how `cfg`
    was composed, needed only for `match_retention_of` outside a Hydra job."""
    try:
        p = plan(cfg, origin)
    except Exception as err:  # a bad value or missing data: one line naming the key, value and fix
        raise as_config_error(err, cfg, provenance.hydra_state()[1]) from err
    folder = RunFolder(cfg.paths.output_dir, p.signature)
    if folder.done and not cfg.force:
        log.info("run %s is finished: %s (force=true recomputes)", p.signature, folder.path)
        return folder.metrics()
    run_ = Started(p, folder, method_option(cfg, p.method), provenance.collect(cfg.backend.device))
    tracker = open_run(run_)
    failed = True
    try:
        adapter = load_model(cfg)
        memory, built = build_memory(p.method, p.demos, p.task.instruction, adapter, Path(cfg.paths.memory_cache_dir),
                                     cfg.eval.checkpoint_chunks, on_chunk=tracker.log_chunk, probes=p.probes)  # fmt: skip
        rows, resumed = evaluate(p, adapter, memory, folder)
        result = record(run_, adapter, memory, built, rows, resumed, tracker)
        failed = False
        log.info("\n%s", summary_table(result))
        return result
    except BaseException:
        folder.write_text("error.txt", traceback.format_exc())  # the run stays not-done; a rerun retries it
        raise
    finally:
        tracker.close(failed=failed)


def open_run(r: Started) -> Tracker:
    """The run folder (config.yaml; a forced rerun's results removed) and its W&B run (one per signature: every
    attempt of a requeued job, and every rerun, writes to it)."""
    cfg, folder = r.plan.cfg, r.folder
    folder.path.mkdir(parents=True, exist_ok=True)
    if cfg.force:
        for name in ("metrics.json", "predictions.jsonl"):
            (folder.path / name).unlink(missing_ok=True)
    folder.write_text("config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if not interactive():  # SLURM logs: no carriage-return bars from transformers either
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    lg = cfg.logger
    return Tracker(lg.mode, lg.project, lg.entity, cfg.sweep_name, f"{r.option}-{r.plan.signature}", list(cfg.tags),
                   {**OmegaConf.to_container(cfg, resolve=True), "provenance": r.provenance}, folder.path,
                   lg.log_memory, run_id=r.plan.signature, job_type=r.option)  # fmt: skip


def load_model(cfg: DictConfig):
    """Seed, then the model adapter on the configured backend."""
    from transformers import set_seed

    from emloc.models.loading import load

    set_seed(cfg.seed)
    return load(**cfg.model, **{k: v for k, v in cfg.backend.items() if k in ("dtype", "device", "attn")})


def method_option(cfg: DictConfig, method: Compressor) -> str:
    """The `method` option the run was composed with (`hydra.runtime.choices`), else the class's own option."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return choices.get("method") or method.option


def summary_table(m: dict[str, Any]) -> str:
    keys = (
        "method_label",
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
