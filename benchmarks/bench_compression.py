"""Compression and query cost of the compressing methods against full context, measured in one run on the packaged
SmolLM2 (the embedded ISO 3166-2 task, demo seed 0).

    python benchmarks/bench_compression.py [--shots 64 128 256] [--queries 32] [--methods emloc_global emloc]
                                           [KEY=VALUE ...]

Per shot count, one prefill of the demonstrations (the full context, its peak RSS growth) and zero-shot are
measured once; then per method (a `conf/method/<option>.yaml`, composed like the runner does, `KEY=VALUE` overriding
its parameters; a method that looks at held-out tuning inputs gets the task's): context and memory tokens, the
memory's bytes over the full context's, compression seconds and compression / prefill, divergence trials, per-query
latency (full / method, method / zero-shot), peak RSS growth during compression next to the prefill's, and the
held-out JS divergence to the full context (next token after each query prompt, `emloc.engine.fidelity`) of the method and of SnapKV at the method's
retention. Every ratio is against a baseline measured in the same process on the same inputs; nothing here asserts
a speed. Run it on an otherwise idle machine: a timing next to another job is not a measurement.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import psutil
import torch
from hydra.utils import instantiate

from emloc.data.iso3166 import Iso3166Task
from emloc.engine.compress import FullContext, ZeroShot
from emloc.engine.divergence import js_rows
from emloc.engine.fidelity import answer_logits
from emloc.engine.generate import answer
from emloc.experiment.config import compose
from emloc.methods.baselines import SnapKV
from emloc.models.loading import load


class PeakRSS:
    """Peak resident memory (MB) above the level at entry, sampled every 20 ms."""

    def __enter__(self):
        self.proc, self.stop = psutil.Process(), False
        self.base = self.peak = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()
        self.mb = (self.peak - self.base) / 2**20


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def method_of(option: str, overrides: list[str]):
    """`conf/method/<option>.yaml` composed as the runner composes it, with `KEY=VALUE` parameter overrides."""
    cfg = compose([f"method={option}", *(f"method.{o}" for o in overrides)])
    return instantiate(cfg.method, show_progress=False)


def per_query_ms(adapter, memory, renderer, queries) -> float:
    _, seconds = timed(lambda: answer(adapter, memory, renderer, queries))
    return 1000 * seconds / len(queries)


def heldout_js(adapter, memory, reference: torch.Tensor, renderer, queries) -> float:
    ours = answer_logits(adapter, memory.prefix(), memory.position_offset, renderer, queries)
    return float(js_rows(ours, reference).mean())


@torch.no_grad()
def bench(adapter, task, shots: int, num_queries: int, methods: list[str], overrides: list[str]) -> list[dict]:
    split = task.split(shots, num_queries, demo_seed=0, held_out={"tuning": 64})
    r = adapter.renderer(task.instruction)
    with PeakRSS() as full_rss:
        full, prefill = timed(lambda: FullContext(show_progress=False).build(adapter, split.demos, task.instruction))
    zero = ZeroShot(show_progress=False).build(adapter, [], task.instruction)
    reference = answer_logits(adapter, full.prefix(), full.position_offset, r, split.queries)
    q_zero, q_full = per_query_ms(adapter, zero, r, split.queries), per_query_ms(adapter, full, r, split.queries)
    rows = []
    for option in methods:
        method = method_of(option, overrides)
        probes = split.held_out["tuning"][: method.heldout_count()]
        with PeakRSS() as rss:
            memory, compress = timed(
                lambda m=method, p=probes: m.build(adapter, split.demos, task.instruction, probes=p)
            )
        snap = SnapKV(keep_ratio=memory.retention, chunk_size=method.chunk_size or 4, show_progress=False)
        snap_memory = snap.build(adapter, split.demos, task.instruction)
        q_method = per_query_ms(adapter, memory, r, split.queries)
        rows.append({
            "shots": shots, "method": option, "ctx": memory.num_source_tokens, "mem": memory.memory_tokens,
            "keep": memory.retention, "bytes": memory.nbytes() / full.nbytes(), "compress_s": compress, "prefill_s": prefill, "comp_pre": compress / prefill,
            "trials": sum(c.trials for c in memory.chunks), "q_zero_ms": q_zero, "q_full_ms": q_full,
            "q_ms": q_method, "full_over": q_full / q_method, "over_zero": q_method / q_zero, "rss_mb": rss.mb,
            "rss_full_mb": full_rss.mb,
            "js": heldout_js(adapter, memory, reference, r, split.queries),
            "js_snapkv": heldout_js(adapter, snap_memory, reference, r, split.queries),
        })  # fmt: skip
    return rows


COLUMNS = (("shots", 5, "d"), ("method", 12, "s"), ("ctx", 6, "d"), ("mem", 7, ".1f"), ("keep", 5, ".2f"),
           ("bytes", 5, ".2f"), ("compress_s", 10, ".1f"), ("prefill_s", 9, ".2f"), ("comp_pre", 8, ".1f"), ("trials", 6, "d"),
           ("q_zero_ms", 9, ".0f"), ("q_full_ms", 9, ".0f"), ("q_ms", 6, ".0f"), ("full_over", 9, ".2f"),
           ("over_zero", 9, ".2f"), ("rss_mb", 6, ".0f"), ("rss_full_mb", 11, ".0f"), ("js", 7, ".4f"), ("js_snapkv", 9, ".4f"))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shots", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--queries", type=int, default=32)
    ap.add_argument(
        "--methods", nargs="+", default=["emloc_global", "kvzip_published", "emloc"], help="conf/method options"
    )
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="method parameters, e.g. warm_search=path")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    adapter = load("packaged:smollm2-135m-instruct", dtype=args.dtype)
    task = Iso3166Task()
    bench(adapter, task, 8, 2, args.methods, args.overrides)  # warm-up: first calls pay one-off initialisation
    print(" ".join(f"{name:>{width}}" for name, width, _ in COLUMNS), flush=True)
    for shots in args.shots:
        for row in bench(adapter, task, shots, args.queries, args.methods, args.overrides):
            print(" ".join(f"{row[n]:>{w}{f}}" for n, w, f in COLUMNS), flush=True)


if __name__ == "__main__":
    main()
