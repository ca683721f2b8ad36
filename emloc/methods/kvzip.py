"""KVzip (Kim et al. 2025, arXiv 2505.23416): keep the entries the model needs to reconstruct its own
context — a query-agnostic importance, measured once, like EMLoC's. Two methods: `KVzipPublished` ("KVzip", the
paper's whole-context selection, at the end of this module) and `KVzip` ("KVzip-style", its chunk-wise adaptation).

For every chunk, after the chunk's own forward, a reconstruction pass runs: a user turn asking to repeat the context
("Repeat the previous context exactly.", KVzip's prompt) followed by the chunk's own tokens as the answer, positioned
after the chunk, with [memory | chunk] as prefix. An entry's score is the largest attention any reconstruction
query, in any query head of its KV group, pays to it, the softmax spanning the chunk and the reconstruction tokens
but not the memory of earlier chunks (as KVzip scores one context chunk at a time). Budgets: one threshold over all
layers and heads of the chunk, so layers keep different numbers of entries (KVzip's non-uniform allocation; heads
of a layer keep equal numbers here, as a layer's memory has one length) with the chunk's total at `keep_ratio`;
`uniform_layers=true` keeps `keep_ratio` in every layer instead. The first 4 tokens of the context are sinks.

Adaptations (KVzip compresses one prefilled context): reconstruction is per chunk, against the memory built so far;
the chunk of the reconstruction is the engine's chunk (KVzip uses 2,000-token chunks). Costs one extra forward of
about twice the chunk per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from emloc.data.base import Example
from emloc.engine.attention import AttentionContext
from emloc.engine.compress import ChunkState
from emloc.engine.whole import Prefilled, reconstruction_scores
from emloc.methods.baselines import FixedRatio, WholeFixedRatio, sinks

NUM_SINK = 4


@dataclass
class KVzip(FixedRatio):
    option = "kvzip"
    label = "KVzip-style"

    prompt: str = "Repeat the previous context exactly."
    uniform_layers: bool = False

    def layer_scores(self, adapter, state: ChunkState) -> list[torch.Tensor]:
        renderer = adapter.renderer()
        row = renderer.query(Example("kvzip", self.prompt, "-")) + state.batch.rows[0]
        batch = adapter.collate([row])
        prep = adapter.prepare(batch, state.offset_after)
        history = [0 if h is None else h[0].shape[-2] for h in state.history]
        ctx = AttentionContext(prefix=[[h, c] for h, c in zip(state.history, state.kv)], score_rows=batch.valid,
                               score_start=history, score_reduce="max")  # fmt: skip
        adapter.run_layers(prep.hidden, prep.positions, prep.seg, ctx)
        return [ctx.tail_scores[layer] for layer in range(len(state.kv))]  # (kv_heads, n): the chunk's entries

    def budgets(self, scores: list[torch.Tensor], state: ChunkState) -> list[int]:
        if self.uniform_layers:
            return super().budgets(scores, state)
        flat = torch.cat([s.reshape(-1) for s in scores])
        total = max(1, round(self.keep_ratio * flat.numel()))
        threshold = flat.topk(min(total, flat.numel())).values[-1]
        return [max(1, min(state.length, round(float((s >= threshold).sum()) / s.shape[0]))) for s in scores]

    def always(self, state: ChunkState, count: int) -> torch.Tensor | None:
        return sinks(state, count, NUM_SINK)


@dataclass
class KVzipPublished(WholeFixedRatio):
    """KVzip as published (Kim et al. 2025; docs/method.md §8.2) on the whole-context path: the demonstrations are
    prefilled once, every (layer, KV head, token) is scored by reconstruction in `block_tokens`-token blocks (2,000:
    the paper's), and one threshold over the whole context keeps `keep_ratio` of all entries, so every head has its
    own budget. The preamble (the system turn) is KVzip's sink. Kept entries are the prefilled ones, not re-encoded.
    Tables call it "KVzip"; the chunk-wise adaptation above is "KVzip-style"."""

    option = "kvzip_published"
    label = "KVzip"

    keep_ratio: float = 0.3
    prompt: str = "Repeat the previous context exactly."
    resume_prompt: str = "Repeat the part of the previous context exactly, starting with "

    def score(self, adapter, context: Prefilled, probes) -> list[torch.Tensor]:
        return reconstruction_scores(adapter, context, self.prompt, self.resume_prompt)
