"""Compression and query cost of EMLoC against its baselines, measured in one run on the packaged SmolLM2.

    python benchmarks/bench_compression.py [--shots 16 64 128 256] [--queries 32] [KEY=VALUE ...]

For each shot count it prints: context tokens, memory tokens (mean and per layer), compression seconds, one
full-context prefill, per-query latency of zero-shot / full context / EMLoC / SnapKV at EMLoC's retention,
peak RSS during compression, the JS between EMLoC's and the full context's answer distributions on held-out
queries, and the ratios full/EMLoC, EMLoC/zero-shot and compression/prefill. Every ratio is against a
baseline measured in the same process, on the same inputs. Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import psutil
import torch
from omegaconf import OmegaConf

from emloc.attention import AttentionContext
from emloc.baselines import SnapKV
from emloc.compress import EMLoC, FullContext, ZeroShot
from emloc.data.iso3166 import Iso3166Task
from emloc.divergence import js_divergence
from emloc.generate import answer
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


def answer_logits(adapter, memory, renderer, queries):
    """Next-token logits at the end of each query prompt (they predict the answer's first token)."""
    out = []
    for q in queries:
        prep = adapter.prepare(adapter.collate([renderer.query(q)]), memory.position_offset)
        h, _ = adapter.run_layers(prep.hidden, prep.positions, prep.seg, AttentionContext(prefix=memory.prefix()))
        out.append(adapter.lm_logits(h)[0, -1])
    return torch.stack(out)


def per_query(adapter, memory, renderer, queries):
    _, seconds = timed(lambda: answer(adapter, memory, renderer, queries))
    return seconds / len(queries)


@torch.no_grad()
def bench(adapter, task, shots: int, num_queries: int, method: dict) -> dict:
    split = task.split(shots, num_queries, demo_seed=0)
    r = adapter.renderer(task.instruction)
    full, prefill = timed(lambda: FullContext(show_progress=False).build(adapter, split.demos, task.instruction))
    with PeakRSS() as rss:
        emloc, compress = timed(
            lambda: EMLoC(**method, show_progress=False).build(adapter, split.demos, task.instruction)
        )
    snap = SnapKV(keep_ratio=emloc.retention, chunk_size=method["chunk_size"], show_progress=False).build(
        adapter, split.demos, task.instruction
    )
    zero = ZeroShot(show_progress=False).build(adapter, [], task.instruction)
    lat = {
        name: per_query(adapter, m, r, split.queries)
        for name, m in (("zero_shot", zero), ("full_context", full), ("emloc", emloc), ("snapkv", snap))
    }
    ref = answer_logits(adapter, full, r, split.queries)
    return {
        "shots": shots,
        "context_tokens": emloc.num_source_tokens,
        "memory_tokens": emloc.memory_tokens,
        "retention": emloc.retention,
        "layer_lengths": emloc.lengths(),
        "compress_s": compress,
        "prefill_s": prefill,
        "peak_rss_mb": rss.mb,
        "trials": sum(c.trials for c in emloc.chunks),
        "chunks": len(emloc.chunks),
        "js_emloc": js_divergence(answer_logits(adapter, emloc, r, split.queries), ref),
        "js_snapkv": js_divergence(answer_logits(adapter, snap, r, split.queries), ref),
        **{f"q_{k}_ms": v * 1000 for k, v in lat.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shots", type=int, nargs="+", default=[16, 64, 128, 256])
    ap.add_argument("--queries", type=int, default=32)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="EMLoC parameters over conf/method/emloc.yaml (the framework default), e.g. warm_search=path",
    )
    args = ap.parse_args()
    method = OmegaConf.merge(
        OmegaConf.load(Path(__file__).parents[1] / "conf/method/emloc.yaml"), OmegaConf.from_dotlist(args.overrides)
    )
    method = {k: v for k, v in OmegaConf.to_container(method).items() if k != "_target_"}
    print(f"EMLoC: {method}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    adapter = load("packaged:smollm2-135m-instruct", dtype=args.dtype)
    task = Iso3166Task()
    bench(adapter, task, 8, 2, method)  # warm-up: first calls pay one-off kernel initialisation
    head = (
        f"{'shots':>5} {'ctx':>6} {'mem':>7} {'keep':>5} {'compress_s':>10} {'prefill_s':>9} {'comp/pre':>8} "
        f"{'q_zero_ms':>9} {'q_full_ms':>9} {'q_emloc_ms':>10} {'q_snap_ms':>9} {'full/em':>7} {'em/zero':>7} "
        f"{'rss_mb':>6} {'js_em':>7} {'js_snap':>7} {'trials':>6}"
    )
    print(head)
    for shots in args.shots:
        m = bench(adapter, task, shots, args.queries, method)
        print(
            f"{m['shots']:>5} {m['context_tokens']:>6} {m['memory_tokens']:>7.1f} {m['retention']:>5.2f} "
            f"{m['compress_s']:>10.1f} {m['prefill_s']:>9.2f} {m['compress_s'] / m['prefill_s']:>8.1f} "
            f"{m['q_zero_shot_ms']:>9.1f} {m['q_full_context_ms']:>9.1f} {m['q_emloc_ms']:>10.1f} {m['q_snapkv_ms']:>9.1f} "
            f"{m['q_full_context_ms'] / m['q_emloc_ms']:>7.2f} {m['q_emloc_ms'] / m['q_zero_shot_ms']:>7.2f} "
            f"{m['peak_rss_mb']:>6.0f} {m['js_emloc']:>7.4f} {m['js_snapkv']:>7.4f} {m['trials']:>6}",
            flush=True,
        )
        print(f"      per-layer memory tokens: {m['layer_lengths']}", flush=True)


if __name__ == "__main__":
    main()
