"""Building a task memory from demonstrations: the whole EMLoC algorithm, top to bottom (paper §3).

`Compressor` is the chunk loop shared by every method (method.md §2):

1. Render the demonstrations as one conversation and cut it into chunks of `chunk_size` demos.
2. Encode a chunk with the memory built so far as an always-visible prefix, positioned after the memory's
   uncompressed extent; collect the chunk's own keys/values per layer.
3. Ask the method which of the chunk's entries to keep in each layer (`select`), append them to the memory,
   and advance the offset by the chunk's position extent (kept entries keep their positions).

`FullContext` keeps everything (the paper's MLoC; with one chunk it is the plain many-shot prompt),
`ZeroShot` keeps only the system turn, and `EMLoC` selects by the JS-bounded layer-wise search:

4. Self-probes: every demo of the chunk is re-encoded alone after [history | chunk]; this teacher pass keeps
   the input of every layer and the attention of the probes' answer-predicting rows over the chunk (softmax
   over [chunk | probe], the compressed history excluded).
5. Scores per layer and KV head: summed attention, average-pooled, the chunk's own answer tokens protected.
6. Top-down search over the keep-ratio ladder: a trial prunes some layers ≥ l, re-runs the probes from the
   stored input of layer l and compares the answer distributions with the teacher's (JS, fp32, nats/token).

Fixed-ratio baselines live in `baselines`; answering queries lives in `generate`.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from tqdm.auto import tqdm
from transformers.cache_utils import DynamicCache

from emloc import pruning, scoring
from emloc.attention import KV, AttentionContext
from emloc.data.base import Example
from emloc.divergence import js_divergence
from emloc.memory import ChunkRecord, TaskMemory
from emloc.prompts import KIND_NAMES, Batch, Row, chunks

log = logging.getLogger(__name__)


@dataclass
class ChunkState:
    """What `select` sees of one chunk: its tokens, its own KV per layer, and the memory before it."""

    batch: Batch  # the chunk as one row
    demos: list[Row]  # each demo of the chunk alone (for probes)
    kv: list[KV]  # per layer (1, kv_heads, n, head_dim)
    history: list[KV | None]  # memory before this chunk, per layer
    offset_after: int  # first position after the chunk
    scores: AttentionContext  # the chunk forward's context (own-attention scores when `score_rows` was set)
    index: int = 0
    previous: ChunkRecord | None = None  # the chunk before (warm start)

    @property
    def length(self) -> int:
        return self.batch.ids.shape[1]


@dataclass
class Compressor:
    """Chunk loop; subclasses decide what each layer keeps. `chunk_size=None`: all demos in one chunk."""

    chunk_size: int | None = None
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.chunk_size is not None and (not isinstance(self.chunk_size, int) or self.chunk_size < 1):
            raise ValueError(f"chunk_size must be an integer >= 1 or null, got {self.chunk_size!r}")

    @property
    def name(self) -> str:
        return type(self).__name__.lower()

    def params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "show_progress"}

    def validate_demos(self, demos: list[Example]) -> None:
        if not demos:
            raise ValueError(f"{self.name} needs at least one demonstration, got an empty list")

    # -- the loop ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def build(
        self,
        adapter,
        demos: list[Example],
        instruction: str | None = None,
        resume: TaskMemory | None = None,
        on_chunk: Callable[[TaskMemory], None] | None = None,
    ) -> TaskMemory:
        """Compress `demos` into a memory. `resume`: a partial memory of the same build (its finished chunks are
        kept, not recomputed); `on_chunk`: called after every chunk (e.g. to persist progress)."""
        self.validate_demos(demos)
        renderer = adapter.renderer(instruction)
        provenance = {
            **adapter.signature(),
            "model": adapter.name,
            "method": self.name,
            **self.params(),
            "instruction": instruction,
            "demo_ids": [d.uid for d in demos],
        }
        memory = TaskMemory(adapter.num_layers, provenance)
        if resume is not None:
            if {k: resume.provenance.get(k) for k in provenance} != json.loads(json.dumps(provenance, default=list)):
                raise ValueError("the partial memory to resume was built from different demos, model or parameters")
            memory = resume
        groups = chunks(demos, self.chunk_size or max(len(demos), 1)) if demos else [[]]
        bar = tqdm(groups, desc=f"compress[{self.name}]", disable=not self.show_progress, initial=len(memory.chunks))
        for index, group in enumerate(groups[len(memory.chunks) :], start=len(memory.chunks)):
            rows = [renderer.demo(d) for d in group]
            seq = sum(rows, renderer.preamble() if index == 0 else Row([], [], []))
            self._add_chunk(adapter, memory, seq, rows, index)
            bar.update(1)
            if on_chunk is not None:
                on_chunk(memory)
        bar.close()
        return memory

    def _add_chunk(self, adapter, memory: TaskMemory, seq: Row, rows: list[Row], index: int) -> None:
        start = time.perf_counter()
        batch = adapter.collate([seq])
        prep = adapter.prepare(batch, memory.position_offset)
        history = memory.prefix()
        ctx = AttentionContext(prefix=history, score_rows=self.chunk_score_rows(batch), score_start=memory.lengths())
        cache = DynamicCache()
        adapter.run_layers(prep.hidden, prep.positions, prep.seg, ctx, cache=cache)
        kv = [(lay.keys, lay.values) for lay in cache.layers]
        state = ChunkState(
            batch, rows, kv, history, int(prep.extents[0]), ctx, index, memory.chunks[-1] if memory.chunks else None
        )
        keep, js, trials, steps = self.select(adapter, state)
        record = ChunkRecord(index, len(rows), state.length, [], [], [], trials=trials, steps=steps)
        kinds = batch.kinds[0]
        for layer, idx in enumerate(keep):
            entries = kv[layer] if idx is None else scoring.gather(kv[layer], idx)
            memory.append(layer, *entries)
            record.kept.append(entries[0].shape[-2])
            record.js.append(js.get(layer))
            k = kinds.expand(kv[layer][0].shape[1], -1) if idx is None else kinds[idx.cpu()]
            record.kept_by_kind.append({n: float((k == i).sum()) / k.shape[0] for i, n in enumerate(KIND_NAMES)})
        record.tokens_by_kind = {n: int((kinds == i).sum()) for i, n in enumerate(KIND_NAMES)}
        memory.advance(state.offset_after - memory.position_offset, state.length)
        record.seconds = time.perf_counter() - start
        memory.chunks.append(record)

    # -- what subclasses override -------------------------------------------------------------------------
    def chunk_score_rows(self, batch: Batch) -> torch.Tensor | None:
        """Rows of the chunk forward whose attention to the chunk is accumulated (baselines); None: no scoring."""
        return None

    def select(self, adapter, state: ChunkState) -> tuple[list[torch.Tensor | None], dict[int, float], int, list[int]]:
        """Per layer: kept indices (kv_heads, n) or None for all; JS of the accepted trial; trials; ladder steps."""
        return [None] * len(state.kv), {}, 0, []


@dataclass
class FullContext(Compressor):
    """Uncompressed many-shot context (MLoC). Chunked or not, the memory is the same exact KV."""


@dataclass
class ZeroShot(Compressor):
    """No demonstrations: the memory holds only the system turn, so queries see the plain chat prompt."""

    def validate_demos(self, demos: list[Example]) -> None:
        pass

    @torch.no_grad()
    def build(self, adapter, demos: list[Example], instruction: str | None = None, **kw) -> TaskMemory:
        return super().build(adapter, [], instruction, **kw)


@dataclass
class EMLoC(Compressor):
    """Chunk-wise compression with JS-bounded layer-wise adaptive pruning.

    Parameters
    ----------
    chunk_size : demonstrations per chunk (reference: 4; 20 for ImageNet).
    js_threshold : δ, the bound on the mean JS divergence (nats per answer token) of the probes' answers.
    keep_ratios : increasing ladder of fractions of the chunk tried per layer; if none passes the layer keeps all.
    pool_kernel : average-pooling kernel applied to the scores along the token axis.
    search : how a chunk without a warm start is searched: "greedy" (the reference, one layer at a time) or
        "bisect" (blocks of layers); both give every accepted chunk JS ≤ δ.
    warm_start : chunks after the first start from the previous chunk's choices (`warm_search`); the same bound.
    warm_search : "bisect" — each layer's ladder begins at the rung it took in the previous chunk (one rung lower for
        a rotating window of a quarter of the layers, so no layer is pinned where one hard chunk pushed it) and the
        block search runs on those ladders: when they pass, ONE trial certifies the chunk.
        "path" — every layer may move one rung down or any number up: the assignments between are ordered into one
        path (level by level, within a level by attention mass regained per entry) and a galloping search finds the
        first that passes, O(log distance) trials from the previous choice: 3-9 trials per chunk, compression
        4.6-10x one prefill instead of 18-27x (benchmarks/, 64-256 shots), but the retention drifts up with the
        chunks (0.60 -> 0.83 from 64 to 256 shots on SmolLM2): a hard chunk raises layers in the path's order,
        which need not be the layers that broke the bound, and each comes down one rung per chunk. Experimental.
    """

    revision: ClassVar[int] = 2  # bumped when the same parameters would build a different memory (cache key)

    chunk_size: int | None = 4
    js_threshold: float = 0.005
    keep_ratios: tuple[float, ...] = (0.1, 0.2, 0.5)
    pool_kernel: int = 5
    search: str = "greedy"
    warm_start: bool = True
    warm_search: str = "bisect"

    def __post_init__(self) -> None:
        super().__post_init__()
        d = self.js_threshold
        if not isinstance(d, (int, float)) or math.isnan(d) or d < 0:
            raise ValueError(f"js_threshold must be a number >= 0, got {d!r}")
        ratios = tuple(float(r) for r in self.keep_ratios)
        if not ratios or any(not 0 < r <= 1 for r in ratios) or any(b <= a for a, b in itertools.pairwise(ratios)):
            raise ValueError(f"keep_ratios must be strictly increasing values in (0, 1], got {list(self.keep_ratios)}")
        self.keep_ratios = ratios
        scoring.smooth(torch.zeros(1, 1), self.pool_kernel)  # validates the kernel
        if self.search not in pruning.SEARCHES:
            raise ValueError(f"search must be one of {sorted(pruning.SEARCHES)}, got {self.search!r}")
        if self.warm_search not in ("bisect", "path"):
            raise ValueError(f"warm_search must be 'bisect' or 'path', got {self.warm_search!r}")

    def select(self, adapter, state: ChunkState):
        if self.js_threshold == 0:  # only an unchanged output has JS 0: keep everything, no trial needed
            return [None] * len(state.kv), {}, 0, [len(self.keep_ratios)] * len(state.kv)
        # 4. teacher pass: probes after [history | full chunk]
        work = [[h, c] for h, c in zip(state.history, state.kv)]  # [history | chunk] as pieces, not a copy
        probes = adapter.collate(state.demos)
        prep = adapter.prepare(probes, state.offset_after, pack=True)  # one sequence: the memory is never copied
        rows = prep.select(probes.predict)
        ctx = AttentionContext(
            prefix=work, score_rows=rows, score_start=[0 if h is None else h[0].shape[-2] for h in state.history]
        )
        final, inputs = adapter.run_layers(prep.hidden, prep.positions, prep.seg, ctx, keep_inputs=True)
        teacher = adapter.lm_logits(final[rows])
        # 5. per layer, per KV head ranking of the chunk's entries
        protected = state.batch.targets[0] | state.batch.predict[0]
        order = [
            scoring.rank(scoring.smooth(ctx.tail_scores[l], self.pool_kernel), protected) for l in range(len(work))
        ]
        counts = [scoring.count_for(r, state.length) for r in self.keep_ratios]
        start = self._warm_steps(state)  # per layer, the first ladder step to try
        ladders = [[c for c in counts[s:] if c < state.length] for s in start]

        # 6. trials: re-run the probes from the lowest pruned layer with the stored hidden state
        def trial(assign: dict[int, int]) -> float:
            prefix = list(work)
            for layer, n in assign.items():
                prefix[layer] = [
                    state.history[layer],
                    scoring.gather(state.kv[layer], scoring.keep_indices(order[layer], n)),
                ]
            low = min(assign)
            out, _ = adapter.run_layers(
                inputs[low], prep.positions, prep.seg, AttentionContext(prefix=prefix), start=low
            )
            return js_divergence(adapter.lm_logits(out[rows]), teacher)

        if state.previous is None or not self.warm_start:
            result = pruning.SEARCHES[self.search](ladders, trial, self.js_threshold)
        elif self.warm_search == "bisect":  # ladders that begin at the previous choices (see `_warm_steps`)
            result = pruning.bisect(ladders, trial, self.js_threshold)
        else:  # "path": gallop along a path of assignments around the previous chunk's choices
            full = sorted({c for c in counts if c < state.length}) + [state.length]
            cost = [scoring.dropped_mass(ctx.tail_scores[l], order[l], full) for l in range(len(work))]
            prev = [full.index(counts[s]) if s < len(counts) else len(full) - 1 for s in state.previous.steps]
            begin = [max(r - 1, 0) for r in prev]  # every layer may go one rung down ...
            path = pruning.budget_path([list(zip(full, c)) for c in cost], begin)
            start = sum(b < r for b, r in zip(begin, prev))  # ... or stay: path[start] is the previous choice
            result = pruning.gallop(path, trial, self.js_threshold, start)
        keep = [scoring.keep_indices(order[l], result.kept[l]) if l in result.kept else None for l in range(len(work))]
        return keep, result.js, result.trials, self._steps(result, counts, len(work))

    @staticmethod
    def _steps(result: pruning.SearchResult, counts: list[int], num_layers: int) -> list[int]:
        """Per layer, the ladder rung it took (len(counts): kept in full)."""
        return [counts.index(result.kept[l]) if l in result.kept else len(counts) for l in range(num_layers)]

    def _warm_steps(self, state: ChunkState) -> list[int]:
        """Per layer, where its ladder starts: the smallest ratio, or (warm start) the previous chunk's rung, one
        lower for a rotating window of a quarter of the layers."""
        num_layers = len(state.kv)
        if not self.warm_start or state.previous is None:
            return [0] * num_layers
        width = math.ceil(num_layers / 4)
        window = {(state.index * width + i) % num_layers for i in range(width)}
        return [max(step - (layer in window), 0) for layer, step in enumerate(state.previous.steps)]
