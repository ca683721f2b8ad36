"""Fixed-retention pruning baselines applied chunk by chunk (the paper's Table 5 comparison).

Each keeps a fixed fraction `keep_ratio` of every chunk (per layer budgets for PyramidKV), so it can be run
at the retention EMLoC reached and compared at matched memory size. They reuse the chunk loop of
`compress.Compressor`: each chunk is encoded with the memory so far as prefix, and only the *choice* of kept
entries differs. Scores come from the chunk's own attention (softmax over the chunk's keys, the memory
prefix excluded), captured by the attention wrapper in the same forward pass.

* `SnapKV` — attention from an observation window (the chunk's last `window` tokens), pooled; window kept.
* `H2O` — heavy hitters by attention accumulated over all the chunk's queries, plus the most recent tokens.
* `PyramidKV` — SnapKV scores with per-layer budgets decreasing linearly from the bottom to the top layer.
* `StreamingLLM` — attention sinks (first tokens of the context) plus the most recent tokens.
* `RandomKeep` — uniformly random entries per KV head (seeded).

These are re-implementations from the papers' descriptions, adapted to chunk-wise memories; they do not
protect answer tokens (EMLoC does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from emloc import scoring
from emloc.compress import ChunkState, Compressor, Selection
from emloc.prompts import Batch


@dataclass
class FixedRatio(Compressor):
    """Keeps `keep_ratio` of every chunk in every layer (or per-layer budgets, `budget`), ranked by `indices`."""

    compresses = True
    lossless: ClassVar[dict[str, Any] | None] = {"keep_ratio": 1.0}

    keep_ratio: float = 0.2
    chunk_size: int | None = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.keep_ratio, (int, float)) or not 0 < self.keep_ratio <= 1:
            raise ValueError(f"keep_ratio must be in (0, 1], got {self.keep_ratio!r}")

    def budget(self, layer: int, num_layers: int, length: int) -> int:
        return scoring.count_for(self.keep_ratio, length)

    def indices(self, state: ChunkState, layer: int, count: int) -> torch.Tensor:
        raise NotImplementedError

    def select(self, adapter, state: ChunkState):
        keep = []
        for layer in range(len(state.kv)):
            n = self.budget(layer, len(state.kv), state.length)
            keep.append(None if n >= state.length else self.indices(state, layer, n))
        return Selection(keep)


def _recent(length: int, count: int) -> torch.Tensor:
    mask = torch.zeros(length, dtype=torch.bool)
    mask[length - count :] = True
    return mask


@dataclass
class SnapKV(FixedRatio):
    option = "snapkv"
    label = "SnapKV"

    window: int = 8
    pool_kernel: int = 5

    def chunk_score_rows(self, batch: Batch) -> torch.Tensor:
        return _recent(batch.ids.shape[1], min(self.window, batch.ids.shape[1]))[None]

    def indices(self, state, layer, count):
        scores = scoring.smooth(state.scores.own_scores[layer][0], self.pool_kernel)
        window = _recent(state.length, min(self.window, count))
        return scoring.keep_indices(scoring.rank(scores, window), count)


@dataclass
class PyramidKV(SnapKV):
    option = "pyramidkv"
    label = "PyramidKV"
    lossless: ClassVar[dict[str, Any] | None] = {"keep_ratio": 1.0, "slope": 0.0}

    slope: float = 0.5  # bottom layer keeps (1 + slope) x the mean budget, top layer (1 - slope) x

    def budget(self, layer, num_layers, length):
        weight = 1.0 + self.slope * (1 - 2 * layer / max(num_layers - 1, 1))
        return max(1, min(length, round(self.keep_ratio * length * weight)))


@dataclass
class H2O(FixedRatio):
    option = "h2o"
    label = "H2O"

    recent_fraction: float = 0.5

    def chunk_score_rows(self, batch: Batch) -> torch.Tensor:
        return batch.valid.clone()

    def indices(self, state, layer, count):
        recent = _recent(state.length, int(count * self.recent_fraction))
        return scoring.keep_indices(scoring.rank(state.scores.own_scores[layer][0], recent), count)


@dataclass
class StreamingLLM(FixedRatio):
    option = "streamingllm"
    label = "StreamingLLM"

    num_sink: int = 4

    def indices(self, state, layer, count):
        heads = state.kv[layer][0].shape[1]
        keep = _recent(state.length, count)
        if state.index == 0:  # the sinks are the first tokens of the whole context
            sinks = min(self.num_sink, count)
            keep = _recent(state.length, count - sinks)
            keep[:sinks] = True
        return keep.nonzero()[:, 0].expand(heads, -1).clone()


@dataclass
class RandomKeep(FixedRatio):
    option = "random"
    label = "random"

    seed: int = 0

    def indices(self, state, layer, count):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + state.index * 1_009 + layer)
        heads = state.kv[layer][0].shape[1]
        return torch.stack([torch.randperm(state.length, generator=gen)[:count] for _ in range(heads)]).sort(-1).values
