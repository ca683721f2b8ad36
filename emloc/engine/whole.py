"""The whole-context build path (docs/method.md §8): prefill once, score every (layer, KV head, token), keep by one
global threshold, per head.

1. Prefill the demonstrations in blocks of at most `block_tokens` tokens (whole demonstrations), each block attending
   to the exact KV of the blocks before it: the chunk loop of `FullContext`, so the result is the uncompressed
   context's KV, and the peak is that KV plus one block's activations.
2. `score`: an importance for every (layer, KV head, token) of the context; each method has its own
   (`reconstruction_scores`: KVzip's; `input_scores`: the attention mass of held-out task inputs; `prefill_rows`:
   attention observed during the prefill itself, H2O's and SnapKV's).
3. `ratio`: the fraction of all entries to keep (fixed, or sized by a method on its tuning inputs).
4. Keep by one threshold over all layers and heads (`scoring.global_keep`): the preamble (the system turn, KVzip's
   sink) first; with `protect_answers`, the demonstrations' answer tokens next, but at most `protect_share` of the
   budget; then the best scores. The memory holds the exact prefilled entries that survive, per head
   (`TaskMemory.select_heads`): nothing is re-encoded.

The chunk-wise path (`compress.Compressor`) stays: it is EMLoC's memory-bounded build.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from emloc.data.base import Example
from emloc.engine import scoring
from emloc.engine.attention import AttentionContext
from emloc.engine.compress import Compressor, Selection
from emloc.engine.memory import ChunkRecord, TaskMemory
from emloc.engine.prompts import KIND_NAMES, Batch, ChatRenderer, Row


@dataclass
class Prefilled:
    """The uncompressed context, ready to be scored: its memory and, per prefill block, the block as one row."""

    memory: TaskMemory
    renderer: ChatRenderer
    blocks: list[Batch]  # each prefill block as a collated row (the first begins with the preamble)
    sink: int  # tokens of the preamble: always kept
    observed: list[torch.Tensor] | None = None  # per layer (kv_heads, n): attention of the `prefill_rows`, summed

    @property
    def bounds(self) -> list[tuple[int, int]]:
        """(first, end) token index of every block in the context."""
        ends = torch.tensor([b.ids.shape[1] for b in self.blocks]).cumsum(0).tolist()
        return list(zip([0, *ends[:-1]], ends))

    def token_mask(self, name: str) -> torch.Tensor:
        """(n,) a per-token flag of the whole context: "targets" (answers and their end of turn) or "predict"."""
        return torch.cat([getattr(b, name)[0] for b in self.blocks]).bool()

    def kinds(self) -> torch.Tensor:
        return torch.cat([b.kinds[0] for b in self.blocks])


@dataclass
class WholeContext(Compressor, abstract=True):
    """Whole-context, per-head selection: subclasses give `score` and `ratio`."""

    compresses = True
    revision: ClassVar[int | None] = 1
    score_over_history: ClassVar[bool] = True  # prefill scores: softmax over [earlier blocks | block], one prefill
    observes_prefill: ClassVar[bool] = False  # `prefill_rows` gives rows: scores come from the prefill itself

    block_tokens: int = 2000
    protect_answers: bool = False
    protect_share: float = 0.5
    _block: int = field(default=0, init=False, repr=False)  # the prefill's progress, for `prefill_rows`
    _blocks: int = field(default=0, init=False, repr=False)
    _observed: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.block_tokens, int) or self.block_tokens < 1:
            raise ValueError(f"block_tokens must be an integer >= 1, got {self.block_tokens!r}")
        if not 0 < self.protect_share <= 1:
            raise ValueError(f"protect_share must be in (0, 1], got {self.protect_share!r}")

    def describe(self) -> str:
        return self.label + (" + answer protection" if self.protect_answers else "")

    # -- what subclasses give --------------------------------------------------------------------------------
    def score(self, adapter, context: Prefilled, probes: Sequence[Example]) -> list[torch.Tensor]:
        """Per layer, (kv_heads, n): the importance of every entry of the context (higher is kept first)."""
        raise NotImplementedError

    def ratio(self, adapter, context: Prefilled, scores: list[torch.Tensor], probes: Sequence[Example]):
        """(fraction of all entries to keep, [(fraction tried, divergence measured), ...] when it was searched)."""
        raise NotImplementedError

    def prefill_rows(self, batch: Batch, last: bool) -> torch.Tensor | None:
        """Rows of a prefill block (`last`: the context's final block) whose attention over everything before them is
        summed into `Prefilled.observed` (H2O's column sums, SnapKV's window); None: no prefill scores."""
        return None

    # the chunk loop's hooks, for the prefill: which rows to score, and what a block leaves behind (everything)
    def chunk_score_rows(self, batch: Batch) -> torch.Tensor | None:
        self._block += 1
        return self.prefill_rows(batch, self._block == self._blocks)

    def select(self, adapter, state) -> Selection:
        if state.scores.score_rows is not None:
            own = [state.scores.own_scores[layer].sum(0) for layer in range(len(state.kv))]
            tail = [state.scores.tail_scores.get(layer) for layer in range(len(state.kv))]
            self._observed.append([o if t is None else torch.cat([t, o], -1) for t, o in zip(tail, own)])
        return Selection([None] * len(state.kv))

    # -- the path --------------------------------------------------------------------------------------------
    def groups(self, renderer, demos: list[Example]) -> list[list[Example]]:
        """Prefill blocks: consecutive demonstrations, at most `block_tokens` tokens each (the first counts the
        preamble; a demonstration longer than a block is a block of its own)."""
        out, size = [[]], len(renderer.preamble().ids)
        for d in demos:
            n = len(renderer.demo(d).ids)
            if out[-1] and size + n > self.block_tokens:
                out.append([])
                size = 0
            out[-1].append(d)
            size += n
        return out

    @torch.no_grad()
    def build(self, adapter, demos: list[Example], instruction: str | None = None, resume: TaskMemory | None = None,
              on_chunk=None, probes: Sequence[Example] = ()) -> TaskMemory:  # fmt: skip
        limit = adapter.model.config.get_text_config().max_position_embeddings
        if self.block_tokens > limit:
            raise ValueError(f"block_tokens={self.block_tokens} is larger than the model's context ({limit} positions)")
        start, renderer = time.perf_counter(), adapter.renderer(instruction)
        groups = self.groups(renderer, demos)
        self._block, self._blocks, self._observed = 0, len(groups), []
        if resume is not None and self.observes_prefill:
            resume = None  # the finished blocks' prefill scores were not saved: prefill again
        full = super().build(adapter, demos, instruction, resume=resume, on_chunk=on_chunk, probes=probes)
        rows = [sum((renderer.demo(d) for d in g), renderer.preamble() if i == 0 else Row([], [], []))
                for i, g in enumerate(groups)]  # fmt: skip
        context = Prefilled(full, renderer, [adapter.collate([r]) for r in rows], len(renderer.preamble().ids),
                            _summed(self._observed, full.num_source_tokens))  # fmt: skip
        scores = self.score(adapter, context, probes)
        ratio, sizing = self.ratio(adapter, context, scores, probes)
        memory = self.keep(context, scores, ratio)
        record = memory.chunks[0]
        record.sizing, record.trials, record.seconds = sizing, len(sizing), time.perf_counter() - start
        return memory

    def keep(self, context: Prefilled, scores: list[torch.Tensor], ratio: float) -> TaskMemory:
        """The per-head memory keeping `ratio` of all the context's entries, by one threshold."""
        full, n = context.memory, scores[0].shape[-1]
        count = round(ratio * sum(s.numel() for s in scores))
        first = torch.arange(n) < context.sink
        protect = context.token_mask("targets") | context.token_mask("predict") if self.protect_answers else None
        keep = scoring.global_keep(scores, count, first, protect, int(self.protect_share * count))
        kinds = context.kinds()
        record = ChunkRecord(0, len(full.provenance.get("demo_ids", [])), n, [], [None] * len(keep),
                             extent=full.position_offset)  # fmt: skip
        for heads in keep:
            record.kept.append(round(sum(len(i) for i in heads) / len(heads)))
            record.kept_by_kind.append({name: sum(float((kinds[i.cpu()] == k).sum()) for i in heads) / len(heads)
                                        for k, name in enumerate(KIND_NAMES)})  # fmt: skip
        record.tokens_by_kind = {name: int((kinds == k).sum()) for k, name in enumerate(KIND_NAMES)}
        return full.select_heads(keep, record)


def _summed(blocks: list[list[torch.Tensor]], n: int) -> list[torch.Tensor] | None:
    """Per layer (kv_heads, n): the blocks' prefill scores (each over the tokens up to its end), summed."""
    if not blocks:
        return None
    out = [torch.zeros(s.shape[0], n, device=s.device) for s in blocks[0]]
    for block in blocks:
        for total, s in zip(out, block):
            total[:, : s.shape[-1]] += s
    return out


def _block_scores(adapter, context: Prefilled, rows: list[Row], span: tuple[int, int], prefix_span: bool,
                  reduce: str = "max") -> list[torch.Tensor]:  # fmt: skip
    """Per layer (kv_heads, end - first): the attention `rows` (packed, positioned after the whole context) pay to the
    context entries first..end, the largest over rows and the query heads of a KV group (`reduce="max"`) or their
    sum ("sum"). With `prefix_span` the rows see only [preamble | first..end] (KVzip's key span for one block); else
    the whole context, as a query does."""
    full, (first, end) = context.memory, span
    prep = adapter.prepare(adapter.collate(rows), full.position_offset, pack=True)
    if prefix_span:
        prefix = [[(k[:, :, : context.sink], v[:, :, : context.sink]) if first >= context.sink else None,
                   (k[:, :, first:end], v[:, :, first:end])] for k, v in full.prefix()]  # fmt: skip
        cols = slice(context.sink if first >= context.sink else 0, None)
    else:
        prefix, cols = full.prefix(), slice(first, end)
    ctx = AttentionContext(prefix=prefix, score_rows=prep.seg >= 0, score_reduce=reduce)
    adapter.run_layers(prep.hidden, prep.positions, prep.seg, ctx)
    return [ctx.tail_scores[layer][:, cols] for layer in range(full.num_layers)]


@torch.no_grad()
def reconstruction_scores(adapter, context: Prefilled, first_prompt: str, next_prompt: str, overlap: int = 8):
    """KVzip's importance (Kim et al. 2025; docs/method.md §8.2): for each block, a user turn asking to repeat the
    context, then the block's own tokens as the answer, after the whole context; the rows see the preamble and the
    block's span of the cache. An entry's score is the largest attention any row, in any query head of its KV group,
    pays to it; blocks are disjoint, so scores are joined. Later blocks' prompts end with the last `overlap` tokens of
    the block before (where to resume). The preamble scores +inf (always kept)."""
    tokenizer, out = context.renderer.tok, []
    for i, ((first, end), block) in enumerate(zip(context.bounds, context.blocks)):
        if i == 0:
            prompt = first_prompt
        else:
            tail = context.blocks[i - 1].ids[0, -overlap:].tolist()
            prompt = next_prompt + tokenizer.decode(tail, skip_special_tokens=True)
        row = context.renderer.query(Example("repeat", prompt, "-")) + block.rows[0]
        out.append(_block_scores(adapter, context, [row], (first, end), prefix_span=True))
    scores = [torch.cat(per_layer, dim=-1) for per_layer in zip(*out)]
    return [_sink(s, context.sink) for s in scores]


@torch.no_grad()
def input_scores(adapter, context: Prefilled, inputs: Sequence[Example], with_answers: bool = True,
                 batch: int = 32) -> list[torch.Tensor]:  # fmt: skip
    """The attention mass held-out task inputs put on the context: per entry, the softmax attention every token of
    every input (its prompt, and with `with_answers` its reference answer and end of turn) pays to it, the whole
    context visible as a query sees it, summed over those tokens and the query heads of its KV group, per input.
    Mass, not the largest attention: measured on SmolLM2 it keeps the inputs' answers closer at 15-25 % kept
    (docs/method.md §8.4). The preamble scores +inf."""
    full = context.memory
    n, total = full.num_source_tokens, [torch.zeros(full.kv(0)[0].shape[1], full.num_source_tokens)] * full.num_layers
    for b in range(0, len(inputs), batch):
        render = context.renderer.demo if with_answers else context.renderer.query
        rows = [render(q) for q in inputs[b : b + batch]]
        part = _block_scores(adapter, context, rows, (0, n), prefix_span=False, reduce="sum")
        total = [t.to(p.device) + p for t, p in zip(total, part)]
    return [_sink(t / max(len(inputs), 1), context.sink) for t in total]


def _sink(scores: torch.Tensor, sink: int) -> torch.Tensor:
    scores = scores.clone()
    scores[:, :sink] = float("inf")
    return scores
