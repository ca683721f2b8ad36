"""Fixed-retention baselines, applied chunk by chunk: each keeps `keep_ratio` of every chunk (PyramidKV: a
per-layer schedule with that mean), choosing the entries by its published score (the paper's Table 5 comparison,
made fair: `protect_answers` ranks the chunk's answer tokens first, as EMLoC does, so a table can show the effect of
the allocation and of the protection separately; `protect_share` caps them to a share of each budget, so protection
stays useful when the answers alone would fill it).

The chunk loop is `compress.Compressor`'s: a chunk is encoded with the memory so far as prefix; only the choice of
kept entries differs. Scores come from the chunk's own forward (the attention wrapper accumulates the attention of
the chosen query rows), softmax over every key the rows see ([memory | chunk]), summed over the query heads of each
KV group (the rankings of a sum and of kvpress' mean are the same). Adaptations to a chunked memory are written in
each class; the memory of earlier chunks is never re-pruned.

* `SnapKV` (Li et al. 2024) — votes of an observation window (the chunk's last `window` tokens, 32 in the paper),
  pooled along the tokens (max pooling, kernel 7: the paper's LongBench setting); the window itself is kept.
* `PyramidKV` (Cai et al. 2024) — SnapKV scores, budgets decreasing linearly from the bottom to the top layer with
  the paper's β = 20 (the top layer keeps 1/β of the mean budget per token, the bottom the rest, the total fixed).
* `H2O` (Zhang et al. 2023) — heavy hitters: attention accumulated over every query of the chunk (column sums),
  plus the most recent tokens; half of the budget each (the paper's equal heavy and recent ratios).
* `StreamingLLM` (Xiao et al. 2024) — 4 attention sinks (the first tokens of the whole context, kept by the first
  chunk) and the most recent tokens of each chunk.
* `RandomKeep` — uniformly random entries per KV head (seeded): the floor every score must beat.

`SnapKVWhole` and `H2OWhole` are the same scores on the whole-context path (`emloc.engine.whole`, docs/method.md §8):
observed during one blocked prefill of the whole context, kept per head by one threshold over all layers and heads.
KVzip and Expected-Attention scoring live in `emloc.methods.kvzip` and `emloc.methods.expected_attention`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from emloc.engine import scoring
from emloc.engine.compress import ChunkState, Compressor, Selection
from emloc.engine.prompts import Batch
from emloc.engine.whole import Prefilled, WholeContext


@dataclass
class FixedRatio(Compressor, abstract=True):
    """Keeps `keep_ratio` of every chunk per layer (`budget`), the entries ranked by `scores`; `always` entries and,
    with `protect_answers`, the chunk's answer tokens are ranked first."""

    compresses = True
    lossless: ClassVar[dict[str, Any] | None] = {"keep_ratio": 1.0}
    revision = 2  # 2: published windows, pooling and schedules; softmax over [memory | chunk]; answer protection
    score_over_history = True  # the scoring softmax spans [memory | chunk], as in one prefill of the whole context

    keep_ratio: float = 0.2
    chunk_size: int | None = 4
    protect_answers: bool = False
    protect_share: float | None = None  # None: every answer token first; else at most this share of each budget

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.keep_ratio, (int, float)) or not 0 < self.keep_ratio <= 1:
            raise ValueError(f"keep_ratio must be in (0, 1], got {self.keep_ratio!r}")
        if self.protect_share is not None and not 0 < self.protect_share <= 1:
            raise ValueError(f"protect_share must be in (0, 1] or null, got {self.protect_share!r}")

    def describe(self) -> str:
        return self.label + (" + answer protection" if self.protect_answers else "")

    def budget(self, layer: int, num_layers: int, length: int) -> int:
        return scoring.count_for(self.keep_ratio, length)

    def scores(self, adapter, state: ChunkState, layer: int) -> torch.Tensor:
        """(kv_heads, n) importance of the chunk's entries at `layer` (higher is kept first)."""
        raise NotImplementedError

    def layer_scores(self, adapter, state: ChunkState) -> list[torch.Tensor]:
        """`scores` of every layer (a method that scores all layers in one pass overrides this)."""
        return [self.scores(adapter, state, layer) for layer in range(len(state.kv))]

    def budgets(self, scores: list[torch.Tensor], state: ChunkState) -> list[int]:
        """Entries kept per layer (default: `budget`, from the layer's index alone)."""
        return [self.budget(layer, len(scores), state.length) for layer in range(len(scores))]

    def always(self, state: ChunkState, count: int) -> torch.Tensor | None:
        """(n,) bool: entries kept before any other (window, sinks), or None."""
        return None

    def select(self, adapter, state: ChunkState) -> Selection:
        answers = (state.batch.targets[0] | state.batch.predict[0]) if self.protect_answers else None
        scores = self.layer_scores(adapter, state)
        keep = []
        for layer, n in enumerate(self.budgets(scores, state)):
            if n >= state.length:
                keep.append(None)
                continue
            protected = (
                answers
                if answers is None or self.protect_share is None
                else _capped(answers, scores[layer], int(self.protect_share * n))
            )
            order = scoring.rank(scores[layer], protected, self.always(state, n))  # answers, then window / sinks
            keep.append(scoring.keep_indices(order, n))
        return Selection(keep)


def _capped(answers: torch.Tensor, scores: torch.Tensor, cap: int) -> torch.Tensor:
    """(n,) bool: the `cap` answer tokens with the highest score (summed over heads), so protection never fills a
    small budget."""
    if int(answers.sum()) <= cap:
        return answers
    mass = torch.where(answers.to(scores.device), scores.float().sum(0), float("-inf"))
    out = torch.zeros_like(answers)
    out[mass.topk(cap).indices.cpu()] = True
    return out


def sinks(state: ChunkState, count: int, num_sink: int = 4) -> torch.Tensor | None:
    """(n,) bool: the first `num_sink` tokens of the whole context (in the first chunk only), or None."""
    if state.index != 0:
        return None
    mask = torch.zeros(state.length, dtype=torch.bool)
    mask[: min(num_sink, count)] = True
    return mask


def recent(length: int, count: int) -> torch.Tensor:
    """(length,) bool: the last `count` positions."""
    mask = torch.zeros(length, dtype=torch.bool)
    mask[length - count :] = True
    return mask


@dataclass
class SnapKV(FixedRatio):
    option = "snapkv"
    label = "SnapKV"

    window: int = 32
    pool_kernel: int = 7
    pooling: str = "max"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be 'max' or 'avg', got {self.pooling!r}")
        scoring.smooth(torch.zeros(1, 1), self.pool_kernel)  # validates the kernel
        if self.window < 1:
            raise ValueError(f"window must be an integer >= 1, got {self.window!r}")

    def chunk_score_rows(self, batch: Batch) -> torch.Tensor:
        return recent(batch.ids.shape[1], min(self.window, batch.ids.shape[1]))[None]

    def scores(self, adapter, state, layer):
        votes = state.scores.own_scores[layer][0]  # (kv_heads, n): the window's attention, summed
        if self.pooling == "avg":
            return scoring.smooth(votes, self.pool_kernel)
        return F.max_pool1d(votes[:, None].float(), self.pool_kernel, stride=1, padding=self.pool_kernel // 2)[:, 0]

    def always(self, state, count):
        return recent(state.length, min(self.window, count))


@dataclass
class PyramidKV(SnapKV):
    """Per layer l of L: budget_l = max − l·(max − min)/(L − 1) with min = k·n/β and max = 2k·n − min (the mean is
    the uniform budget k·n); when max exceeds the chunk, max = n and min = 2k·n − n. Adaptation: the chunk is the
    context, so the schedule is computed from the chunk length n, and the window is kept inside each budget (the
    published formula's `min ≥ window` condition, which would fall back to a uniform budget for chunks of a few
    hundred tokens, is dropped)."""

    option = "pyramidkv"
    label = "PyramidKV"
    lossless: ClassVar[dict[str, Any] | None] = {"keep_ratio": 1.0, "beta": 1.0}

    beta: float = 20.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.beta, (int, float)) or self.beta < 1:
            raise ValueError(f"beta must be a number >= 1, got {self.beta!r}")

    def budget(self, layer, num_layers, length):
        mean = self.keep_ratio * length
        low = mean / self.beta
        high = 2 * mean - low
        if high > length:
            high, low = length, max(2 * mean - length, 0.0)
        count = high - layer * (high - low) / max(num_layers - 1, 1)
        return max(1, min(length, round(count)))


@dataclass
class H2O(FixedRatio):
    """Adaptation: heavy hitters are chosen among the chunk's entries by the attention of the chunk's own queries
    (the memory's entries are already fixed); "recent" is the chunk's tail."""

    option = "h2o"
    label = "H2O"

    recent_fraction: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.recent_fraction <= 1:
            raise ValueError(f"recent_fraction must be in [0, 1], got {self.recent_fraction!r}")

    def chunk_score_rows(self, batch: Batch) -> torch.Tensor:
        return batch.valid.clone()

    def scores(self, adapter, state, layer):
        return state.scores.own_scores[layer][0]

    def always(self, state, count):
        return recent(state.length, int(count * self.recent_fraction))


@dataclass
class StreamingLLM(FixedRatio):
    """Adaptation: the sinks are the first tokens of the whole context (kept by the first chunk); every chunk then
    keeps its own most recent tokens (the memory of earlier chunks is not re-pruned, so their tails stay)."""

    option = "streamingllm"
    label = "StreamingLLM"

    num_sink: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_sink < 0:
            raise ValueError(f"num_sink must be an integer >= 0, got {self.num_sink!r}")

    def scores(self, adapter, state, layer):
        position = torch.arange(state.length, dtype=torch.float32)
        return position[None].expand(state.kv[layer][0].shape[1], -1)  # later is more recent

    def always(self, state, count):
        return sinks(state, count, self.num_sink)


@dataclass
class RandomKeep(FixedRatio):
    option = "random"
    label = "random"

    seed: int = 0

    def scores(self, adapter, state, layer):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + state.index * 1_009 + layer)
        return torch.rand(state.kv[layer][0].shape[1], state.length, generator=gen)


@dataclass
class WholeFixedRatio(WholeContext, abstract=True):
    """A fixed retention on the whole-context path: `keep_ratio` of all the context's entries, by one threshold."""

    lossless: ClassVar[dict[str, Any] | None] = {"keep_ratio": 1.0}

    keep_ratio: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.keep_ratio, (int, float)) or not 0 < self.keep_ratio <= 1:
            raise ValueError(f"keep_ratio must be in (0, 1], got {self.keep_ratio!r}")

    def ratio(self, adapter, context: Prefilled, scores, probes) -> tuple[float, list]:
        return self.keep_ratio, []


@dataclass
class SnapKVWhole(WholeFixedRatio):
    """SnapKV over the whole context: the votes of its last `window` tokens (the observation window of one prompt, as
    published), max-pooled along the tokens; the window is kept."""

    option = "snapkv_whole"
    label = "SnapKV (whole context)"
    observes_prefill = True

    window: int = 32
    pool_kernel: int = 7

    def __post_init__(self) -> None:
        super().__post_init__()
        scoring.smooth(torch.zeros(1, 1), self.pool_kernel)  # validates the kernel
        if self.window < 1:
            raise ValueError(f"window must be an integer >= 1, got {self.window!r}")

    def prefill_rows(self, batch: Batch, last: bool) -> torch.Tensor | None:
        return recent(batch.ids.shape[1], min(self.window, batch.ids.shape[1]))[None] if last else None

    def score(self, adapter, context: Prefilled, probes) -> list[torch.Tensor]:
        n, window = context.memory.num_source_tokens, min(self.window, context.blocks[-1].ids.shape[1])
        out = []
        for votes in context.observed:
            pooled = F.max_pool1d(votes[:, None].float(), self.pool_kernel, 1, self.pool_kernel // 2)[:, 0]
            pooled[:, n - window :], pooled[:, : context.sink] = float("inf"), float("inf")  # window and preamble
            out.append(pooled)
        return out


@dataclass
class H2OWhole(WholeFixedRatio):
    """H2O over the whole context: heavy hitters by the attention every token of the context pays them (column sums
    over one prefill), plus the most recent tokens of the context, `recent_fraction` of the budget."""

    option = "h2o_whole"
    label = "H2O (whole context)"
    observes_prefill = True

    recent_fraction: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.recent_fraction <= 1:
            raise ValueError(f"recent_fraction must be in [0, 1], got {self.recent_fraction!r}")

    def prefill_rows(self, batch: Batch, last: bool) -> torch.Tensor | None:
        return batch.valid.clone()

    def score(self, adapter, context: Prefilled, probes) -> list[torch.Tensor]:
        n = context.memory.num_source_tokens
        recent_tokens = int(self.keep_ratio * n * self.recent_fraction)
        out = []
        for column_sums in context.observed:
            s = column_sums.float().clone()
            s[:, : context.sink] = float("inf")
            if recent_tokens:
                s[:, n - recent_tokens :] = float("inf")
            out.append(s)
        return out
