"""One experiment, from a composed Hydra config to a finished run folder: `run(cfg) -> metrics`.

The only module that sees a `DictConfig`. Order matters:

1. Plan without touching a model: instantiate the method (its dataclass validates every value), the task
   loader, and the seeded disjoint demo/query split — bad values, missing data and impossible splits fail
   here, in seconds, naming the key.
2. Skip if `runs/<signature>/metrics.json` exists (unless `force=true`).
3. Seed, load the model on the backend, build the task memory or load it from the memory cache (keyed by
   model + demos + method, so evaluation-only changes reuse it; partial memories are persisted per chunk so a
   requeued job resumes), answer the queries in batches (predictions persisted as they finish), and write the
   artifacts atomically, `metrics.json` last. W&B is closed in `finally`, so a failing job never leaves a
   dangling run and never marks itself done.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from emloc import metrics as metric_fns
from emloc.compress import Compressor, FullContext
from emloc.data.base import Example, Task
from emloc.fidelity import Fidelity, measure
from emloc.generate import respond
from emloc.memory import TaskMemory, memory_key
from emloc.storage import atomic_write, conf_dir
from emloc.tracking import RunFolder, Tracker, signature

log = logging.getLogger(__name__)


@dataclass
class Plan:
    cfg: DictConfig
    method: Compressor
    task: Task
    demos: list[Example]
    queries: list[Example]
    signature: str


def _build(group: str, node: Any) -> Any:
    try:
        return instantiate(node)
    except Exception as err:  # hydra wraps the dataclass' ValueError; surface the root cause with the group
        root = err
        while root.__cause__ is not None:
            root = root.__cause__
        raise ValueError(f"invalid `{group}` config: {root}") from err


def run_signature(cfg: DictConfig) -> tuple[Compressor, str]:
    """The method (validated) and the run's signature: what `runs/<signature>/` is named. Reads no data, loads no
    model, so a sweep's expected runs can be listed anywhere (`emloc.sweeps`)."""
    method = _build("method", cfg.method)
    for key in ("num_shots", "demo_seed", "query_seed"):
        if not isinstance(cfg.task[key], int) or cfg.task[key] < 0:
            raise ValueError(f"task.{key} must be an integer >= 0, got {cfg.task[key]!r}")
    if not isinstance(cfg.eval.batch_size, int) or cfg.eval.batch_size < 1:
        raise ValueError(f"eval.batch_size must be an integer >= 1, got {cfg.eval.batch_size!r}")
    semantic = OmegaConf.to_container(cfg, resolve=True)
    semantic["task"]["num_shots"] = cfg.task.num_shots if method.uses_demos else 0  # zero-shot: one run, any shots
    if method.revision is not None:  # a changed search invalidates the runs and memories it made
        semantic["method"]["revision"] = method.revision
    return method, signature(semantic)


def plan(cfg: DictConfig) -> Plan:
    """Validate the whole config and draw the split; loads data, never a model."""
    method, sig = run_signature(cfg)
    task = _build("task.loader", cfg.task.loader)
    shots = cfg.task.num_shots if method.uses_demos else 0
    split = task.split(shots, cfg.task.num_queries, cfg.task.demo_seed, cfg.task.query_seed)
    from emloc.video import validate_media  # every image file exists and every video decodes, before a model

    validate_media(split.demos + split.queries)
    return Plan(cfg, method, task, split.demos, split.queries, sig)


def build_memory(method: Compressor, demos: list[Example], instruction: str | None, adapter, cache_dir: Path,
                 checkpoint: bool = True) -> tuple[TaskMemory, dict[str, Any]]:  # fmt: skip
    """The task memory from the cache, or built (resuming from a partial one) and cached.

    Returns the memory and its bookkeeping: compression seconds (as recorded when it was built), whether it came
    from the cache, how many chunks an earlier, interrupted attempt had already finished, and its cache key.
    """
    expect = adapter.signature()
    key = memory_key(expect, adapter.device.type, str(adapter.dtype), method.identity(), [d.uid for d in demos],
                     instruction)  # fmt: skip
    final, partial = cache_dir / key, cache_dir / f"{key}.partial"
    book = {"memory_cached": final.exists(), "resumed_chunks": 0, "memory_key": key}
    if final.exists():
        log.info("memory cache hit: %s", final)
        memory = TaskMemory.load(final, expect=expect, device=adapter.device, dtype=adapter.dtype)
    else:
        resume = (
            TaskMemory.load(partial, expect=expect, device=adapter.device, dtype=adapter.dtype)
            if partial.exists()
            else None
        )
        book["resumed_chunks"] = len(resume.chunks) if resume is not None else 0
        if resume is not None:
            log.info("resuming compression after %d finished chunks (%s)", len(resume.chunks), partial)
        save_partial = (lambda m: m.save(partial)) if checkpoint else None
        memory = method.build(adapter, demos, instruction, resume=resume, on_chunk=save_partial)
        memory.save(final)
        shutil.rmtree(partial, ignore_errors=True)
    return memory, {"compress_seconds": sum(c.seconds for c in memory.chunks), **book}


def fidelity(p: Plan, adapter, memory: TaskMemory, cache_dir: Path) -> Fidelity | None:
    """The memory's divergence from the full context on the first `eval.fidelity_queries` queries (`emloc.fidelity`);
    None when off or without demonstrations. The full-context memory comes from the same cache."""
    n = p.cfg.eval.get("fidelity_queries", 0) or 0
    if n <= 0 or not p.method.uses_demos:
        return None
    full, _ = build_memory(FullContext(show_progress=False), p.demos, p.task.instruction, adapter, cache_dir)
    return measure(adapter, memory, full, adapter.renderer(p.task.instruction), p.queries[:n])


def evaluate(p: Plan, adapter, memory: TaskMemory, folder: RunFolder) -> tuple[list[dict], int]:
    """Answer every query not answered yet; returns all prediction rows and how many were resumed."""
    done = folder.finished_predictions()
    todo = [q for q in p.queries if q.uid not in done]
    if len(todo) < len(p.queries):
        log.info("resuming evaluation: %d of %d queries already answered", len(p.queries) - len(todo), len(p.queries))
    renderer = adapter.renderer(p.task.instruction)
    size = p.cfg.eval.batch_size
    bar = tqdm(total=len(p.queries), initial=len(p.queries) - len(todo), desc="queries")
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


def run(cfg: DictConfig) -> dict[str, Any]:
    from transformers import set_seed

    from emloc.models.loading import load

    p = plan(cfg)
    folder = RunFolder(cfg.paths.output_dir, p.signature)
    if folder.done and not cfg.force:
        log.info("run %s is finished: %s (force=true recomputes)", p.signature, folder.path)
        return folder.metrics()
    folder.path.mkdir(parents=True, exist_ok=True)
    if cfg.force:
        for name in ("metrics.json", "predictions.jsonl"):
            (folder.path / name).unlink(missing_ok=True)
    folder.write_text("config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    lg = cfg.logger
    tracker = Tracker(
        lg.mode,
        lg.project,
        lg.entity,
        cfg.sweep_name,
        f"{method_option(cfg, p.method)}-{p.signature}",
        list(cfg.tags),
        OmegaConf.to_container(cfg, resolve=True),
        folder.path,
        lg.log_memory,
    )
    failed = True
    try:
        set_seed(cfg.seed)
        adapter = load(**cfg.model, **{k: v for k, v in cfg.backend.items() if k in ("dtype", "device", "attn")})
        cache = Path(cfg.paths.memory_cache_dir)
        memory, built = build_memory(p.method, p.demos, p.task.instruction, adapter, cache, cfg.eval.checkpoint_chunks)
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
            **built,
            "query_seconds_mean": sum(r["seconds"] for r in rows) / len(rows),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            **p.method.card(),
            "method_option": method_option(cfg, p.method),
            "model": cfg.model.source,
            "task": cfg.task.name,
            "signature": p.signature,
            "sweep_name": cfg.sweep_name,
            "resumed_predictions": resumed_predictions,
            "attempt": int(os.environ.get("SLURM_RESTART_COUNT", 0)),
        }
        folder.write_json("memory_stats.json", stats)
        folder.write_json("metrics.json", result)
        tracker.finish_run(result, stats, Path(cfg.paths.memory_cache_dir) / built["memory_key"])
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


def compose(
    overrides: list[str], config_dir: str | Path | None = None, config_name: str = "config", hydra: bool = False
) -> DictConfig:
    """The primary config composed as `run.py` composes it, plus `overrides`, for callers without `@hydra.main`
    (tests, the lmms-eval model, sweep planning). `hydra=True` keeps the `hydra` node (e.g. `runtime.choices`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    directory = Path(config_dir).expanduser().resolve() if config_dir else conf_dir()
    if not (directory / f"{config_name}.yaml").is_file():
        raise FileNotFoundError(
            f"no emloc Hydra config {config_name}.yaml in {directory} "
            "(set EMLOC_CONF_DIR, or pass config_dir: lmms-eval tasks take metadata.emloc.config_dir)"
        )
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(directory), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra)
    finally:
        GlobalHydra.instance().clear()


def main(argv: list[str]) -> None:
    """`python run.py [argv]` from another entry point (the `emloc run` command): the same config tree, overrides,
    sweeps and return value for sweepers."""
    import hydra

    @hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
    def _main(cfg: DictConfig) -> Any:
        return run(cfg).get(cfg.optimized_metric)

    saved, sys.argv = sys.argv, ["emloc run", *argv]
    try:
        _main()
    finally:
        sys.argv = saved


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
