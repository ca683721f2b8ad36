"""What a finished run records: its measurements beyond accuracy and the `metrics.json` that marks it done.

* `fidelity` — held-out JS of the memory to the full context on the task's fidelity set (after every chunk too).
* `certify` — a method's own bound (`Compressor.bound`) checked on the certification set, which neither the method
  (its tuning inputs chose the memory) nor the fidelity measurement ever sees.
* `record` — the run's metrics (accuracy, memory, costs, fidelity, certificate, the method's card, provenance),
  written atomically with the memory's statistics, `metrics.json` last; then W&B's summary and artifacts.
"""

from __future__ import annotations

import logging
import os
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emloc.data import metrics as metric_fns
from emloc.engine.compress import FullContext
from emloc.engine.fidelity import Fidelity, divergence, measure
from emloc.engine.memory import TaskMemory
from emloc.experiment.cache import build_memory
from emloc.experiment.planning import Plan
from emloc.experiment.tracking import RunFolder, Tracker

log = logging.getLogger(__name__)


@dataclass
class Started:
    """A run being computed: its plan, folder, `method` option and provenance."""

    plan: Plan
    folder: RunFolder
    option: str
    provenance: dict[str, Any]


def full_context(p: Plan, adapter, cache_dir: Path) -> TaskMemory | None:
    """The uncompressed memory of the run's demonstrations (from the memory cache), the reference of held-out JS and
    of a certificate; None when the run measures neither (no demonstrations, nothing compressed, no inputs)."""
    if not p.method.uses_demos or not p.method.compresses:
        return None
    if not p.fidelity_set and (p.method.bound() is None or not p.certification_set):
        return None
    return build_memory(FullContext(show_progress=False), p.demos, p.task.instruction, adapter, cache_dir)[0]


def fidelity(p: Plan, adapter, memory: TaskMemory, full: TaskMemory | None) -> Fidelity | None:
    """The memory's divergence from the full context on the task's fidelity set (`task.heldout.fidelity` inputs that
    are neither demonstrations, queries nor anything a method may look at; `emloc.engine.fidelity`); None when off,
    without demonstrations, or for a method that keeps every entry (its memory is the full context: zero by the
    lossless invariant, tested in tests/engine/test_fidelity.py). `full`: `full_context`."""
    if not p.fidelity_set or full is None:
        return None
    per_layer, drift = bool(p.cfg.eval.get("fidelity_layers", False)), bool(p.cfg.eval.get("drift", True))
    renderer = adapter.renderer(p.task.instruction)
    return measure(adapter, memory, full, renderer, p.fidelity_set, per_layer=per_layer, drift=drift)


def certify(p: Plan, adapter, memory: TaskMemory, full: TaskMemory | None) -> dict[str, Any]:
    """A method's bound (`Compressor.bound`) checked out of sample: next-token JS to the full context on the task's
    certification set (inputs neither the method, the queries nor the fidelity measurement ever see), its mean and
    one-sided 95 % upper bound; `certified` only when that upper bound is at most the target. A miss is recorded,
    never claimed. Empty for a method without a bound. `full`: `full_context`."""
    target = p.method.bound()
    if target is None or full is None:
        return {}
    if not p.certification_set:
        return {"certificate_target": target, "certified": False, "certificate": "no certification set"}
    js = divergence(adapter, memory, full, adapter.renderer(p.task.instruction), p.certification_set)
    upper = upper_bound(js)
    verdict = "certified" if upper <= target else "bound not met"
    log.info("certificate: JS %.4g, upper bound %.4g on %d inputs vs target %.4g: %s", sum(js) / len(js), upper,
             len(js), target, verdict)  # fmt: skip
    return {"certified_js": sum(js) / len(js), "certified_js_upper": upper, "certificate_target": target,
            "certification_inputs": len(js), "certified": upper <= target, "certificate": verdict}  # fmt: skip


def upper_bound(values: list[float], level: float = 0.95) -> float:
    """One-sided upper bound on the mean of one run's per-input values (Student-t over the inputs). Across demo
    seeds, `emloc.analysis.stats.crossed` gives the bound that also carries the seed level."""
    from scipy import stats

    n, mean = len(values), statistics.fmean(values)
    return mean if n < 2 else mean + float(stats.t.ppf(level, n - 1)) * statistics.stdev(values) / n**0.5


def record(r: Started, adapter, memory: TaskMemory, built: dict[str, Any], rows: list[dict], resumed: int,
           tracker: Tracker) -> dict[str, Any]:  # fmt: skip
    """Measure what the run reports beyond its answers, then write the artifacts (`metrics.json` last)."""
    p, folder, cfg = r.plan, r.folder, r.plan.cfg
    cache = Path(cfg.paths.memory_cache_dir)
    start = time.perf_counter()
    full = full_context(p, adapter, cache)  # loaded once for both measurements
    measured = fidelity(p, adapter, memory, full)
    if measured is not None:
        folder.write_json("fidelity.json", {**vars(measured), "uids": [q.uid for q in p.fidelity_set]})
    js = [v for c in memory.chunks for v in c.js if v is not None]
    result = {
        **metric_fns.aggregate(rows),
        "num_shots": len(p.demos),
        "context_tokens": memory.num_source_tokens,
        "memory_tokens": memory.memory_tokens,
        "retention": memory.retention,
        "max_chunk_js": max(js, default=None),
        "heldout_js": measured.heldout_js if measured is not None else None,
        "heldout_js_upper": upper_bound(measured.per_query) if measured is not None else None,
        "fidelity_inputs": len(measured.per_query) if measured is not None else 0,
        "fidelity_seconds": time.perf_counter() - start if measured is not None else None,
        **certify(p, adapter, memory, full),
        "matched_retention": p.matched[0] if p.matched else None,
        "matched_to": p.matched[1] if p.matched else None,
        **built,
        "query_seconds_mean": sum(row["seconds"] for row in rows) / len(rows),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **p.method.card(),
        "method_option": r.option,
        "model": cfg.model.source,
        "task": cfg.task.name,
        "signature": p.signature,
        "sweep_name": cfg.sweep_name,
        "resumed_predictions": resumed,
        "attempt": int(os.environ.get("SLURM_RESTART_COUNT", 0)),
        "provenance": r.provenance,  # versions, git, device name, SLURM ids, Hydra dir (emloc.experiment.provenance)
    }
    stats = memory.stats()
    folder.write_json("memory_stats.json", stats)
    folder.write_json("metrics.json", result)
    outputs = [folder.path / n for n in ("predictions.jsonl", "memory_stats.json", "metrics.json", "fidelity.json")]
    tracker.finish_run(result, stats, cache / built["memory_key"], outputs, built["memory_cached"])
    (folder.path / "error.txt").unlink(missing_ok=True)
    return result
