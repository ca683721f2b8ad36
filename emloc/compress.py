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
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from transformers.cache_utils import DynamicCache

from emloc import pruning, scoring
from emloc.attention import KV, AttentionContext
from emloc.data.base import Example
from emloc.divergence import js_divergence
from emloc.memory import ChunkRecord, TaskMemory
from emloc.progress import progress as tqdm
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
    inputs: list[torch.Tensor] | None = None  # the input of every layer in the chunk forward (`keeps_inputs`)
    offset: int = 0  # position of the chunk's first token

    @property
    def length(self) -> int:
        return self.batch.ids.shape[1]


@dataclass
class Selection:
    """What a method keeps of one chunk, and how it decided."""

    keep: list[torch.Tensor | None]  # per layer: kept indices (kv_heads, n), or None to keep the whole chunk
    js: dict[int, float] = field(default_factory=dict)  # layer -> JS of the accepted trial that covered it
    trials: int = 0  # divergence trials run
    rungs: list[int] = field(default_factory=list)  # per layer: rung taken on the keep-ratio ladder (searches)


@dataclass
class Compressor:
    """Chunk loop; subclasses decide what each layer keeps (`select`). `chunk_size=None`: all demos in one chunk.

    A method declares what the rest of the framework asks of it, as class attributes: `option` (its
    `conf/method/<option>.yaml`), `label` (its name in tables and figures; `describe()` adds what distinguishes
    an instance), `uses_demos`, `compresses` (its memory keeps fewer entries than the context), `searches` (a
    divergence-bounded search picks the entries: per-layer JS is recorded), `lossless` (parameter values under
    which it reproduces the full context exactly; None: it never does) and `revision` (bumped when the same
    parameters would build a different memory; None: never bumped).
    """

    option: ClassVar[str] = "full_context"
    label: ClassVar[str] = "full context"
    uses_demos: ClassVar[bool] = True
    compresses: ClassVar[bool] = False
    searches: ClassVar[bool] = False
    lossless: ClassVar[dict[str, Any] | None] = {}
    revision: ClassVar[int | None] = None
    score_over_history: ClassVar[bool] = False  # chunk scores: softmax over [memory | chunk] (else the chunk only)
    keeps_inputs: ClassVar[bool] = False  # the chunk forward keeps every layer's input for `select`

    chunk_size: int | None = None
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.chunk_size is not None and (not isinstance(self.chunk_size, int) or self.chunk_size < 1):
            raise ValueError(f"chunk_size must be an integer >= 1 or null, got {self.chunk_size!r}")

    def params(self) -> dict[str, Any]:
        """The constructor arguments that shape the memory (not `show_progress`)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init and f.name != "show_progress"}

    def identity(self) -> dict[str, Any]:
        """Everything about the method that a memory depends on: option, parameters and revision."""
        return {"option": self.option, **self.params(), "revision": self.revision}

    def describe(self) -> str:
        """The label of this instance in tables (subclasses add the parameters that set variants apart)."""
        return self.label

    def heldout_count(self) -> int:
        """How many held-out inputs (neither demonstrations nor queries) the method wants as `build(probes=...)`."""
        return 0

    def card(self) -> dict[str, Any]:
        """The contract as recorded with every run (`metrics.json`), so analysis never imports a method class."""
        return {"method": self.option, "method_label": self.describe(), "uses_demos": self.uses_demos,
                "compresses": self.compresses, "searches": self.searches}  # fmt: skip

    def validate_demos(self, demos: list[Example]) -> None:
        if not demos:
            raise ValueError(f"{self.option} needs at least one demonstration, got an empty list")

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
            "method": self.option,
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
        bar = tqdm(groups, desc=f"compress[{self.option}]", disable=not self.show_progress, initial=len(memory.chunks))
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
        over = [0] * memory.num_layers if self.score_over_history else memory.lengths()
        ctx = AttentionContext(prefix=self.chunk_context(history, index), score_rows=self.chunk_score_rows(batch),
                               score_start=over)  # fmt: skip
        cache = DynamicCache()
        _, inputs = adapter.run_layers(
            prep.hidden, prep.positions, prep.seg, ctx, cache=cache, keep_inputs=self.keeps_inputs
        )
        kv = [(lay.keys, lay.values) for lay in cache.layers]
        state = ChunkState(batch, rows, kv, history, int(prep.extents[0]), ctx, index,
                           memory.chunks[-1] if memory.chunks else None, inputs or None,
                           memory.position_offset)  # fmt: skip
        chosen = self.select(adapter, state)
        record = ChunkRecord(index, len(rows), state.length, [], [], [], trials=chosen.trials, steps=chosen.rungs)
        kinds = batch.kinds[0]
        for layer, idx in enumerate(chosen.keep):
            entries = kv[layer] if idx is None else scoring.gather(kv[layer], idx)
            memory.append(layer, *entries)
            record.kept.append(entries[0].shape[-2])
            record.js.append(chosen.js.get(layer))
            k = kinds.expand(kv[layer][0].shape[1], -1) if idx is None else kinds[idx.cpu()]
            record.kept_by_kind.append({n: float((k == i).sum()) / k.shape[0] for i, n in enumerate(KIND_NAMES)})
        record.tokens_by_kind = {n: int((kinds == i).sum()) for i, n in enumerate(KIND_NAMES)}
        record.extent = state.offset_after - memory.position_offset
        memory.advance(record.extent, state.length)
        record.seconds = time.perf_counter() - start
        memory.chunks.append(record)

    # -- what subclasses override -------------------------------------------------------------------------
    def chunk_context(self, history: list, index: int) -> list:
        """The prefix chunk `index` is encoded after (default: the memory built so far, the paper's chunk-wise
        compression); its keys/values are what `select` chooses from."""
        return history

    def chunk_score_rows(self, batch: Batch) -> torch.Tensor | None:
        """Rows of the chunk forward whose attention to the chunk is accumulated (baselines); None: no scoring."""
        return None

    def select(self, adapter, state: ChunkState) -> Selection:
        """What each layer keeps of the chunk (default: everything)."""
        return Selection([None] * len(state.kv))


@dataclass
class FullContext(Compressor):
    """Uncompressed many-shot context (MLoC). Chunked or not, the memory is the same exact KV."""


@dataclass
class ZeroShot(Compressor):
    """No demonstrations: the memory holds only the system turn, so queries see the plain chat prompt."""

    option = "zero_shot"
    label = "zero-shot"
    uses_demos = False
    lossless = None

    def validate_demos(self, demos: list[Example]) -> None:
        pass

    @torch.no_grad()
    def build(self, adapter, demos: list[Example], instruction: str | None = None, **kw) -> TaskMemory:
        return super().build(adapter, [], instruction, **kw)


@dataclass
class EMLoC(Compressor):
    """Chunk-wise compression with JS-bounded layer-wise adaptive pruning. The defaults are the paper's algorithm
    (the reference code's settings); the framework's faster configuration is `conf/method/emloc.yaml`.

    Parameters
    ----------
    chunk_size : demonstrations per chunk (reference: 4; 20 for ImageNet).
    js_threshold : δ, the bound on the mean JS divergence (nats per answer token) of the probes' answers.
    keep_ratios : increasing ladder of fractions of the chunk tried per layer; if none passes the layer keeps all.
    pool_kernel : average-pooling kernel applied to the scores along the token axis.
    search : how a chunk is searched without a warm start: "greedy" (the reference, one layer at a time) or
        "bisect" (blocks of layers, split on failure).
    warm_search : null (every chunk from scratch, the reference), "bisect" (later chunks start from the previous
        chunk's rungs, see `pruning.WarmBisect`) or "path" (experimental, `pruning.WarmPath`).
    probe_end_of_turn : the probes also compare the row at each answer's end-of-turn token (it predicts what follows
        the turn, nearly always the same: its JS is near zero, so it dilutes the mean). True is the reference's label
        span (method.md §9.7); False compares only the rows that predict the answer and its end of turn.
    Whatever the search, every accepted chunk has JS ≤ δ on its probes.
    """

    option = "emloc"
    label = "EMLoC"
    compresses = True
    searches = True
    lossless: ClassVar[dict[str, Any] | None] = {"js_threshold": 0.0}
    revision = 2

    chunk_size: int | None = 4
    js_threshold: float = 0.005
    keep_ratios: tuple[float, ...] = (0.1, 0.2, 0.5)
    pool_kernel: int = 5
    search: str = "greedy"
    warm_search: str | None = None
    probe_end_of_turn: bool = True
    strategy: pruning.Search = field(init=False, repr=False)

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
        self.strategy = pruning.strategy(self.search, self.warm_search)

    def describe(self) -> str:
        search = self.search if self.warm_search is None else f"warm {self.warm_search}"
        rows = "" if self.probe_end_of_turn else ", answer rows only"
        return f"{self.label}, {'paper' if search == 'greedy' else search} search{rows}"

    def select(self, adapter, state: ChunkState) -> Selection:
        layers = range(len(state.kv))
        if self.js_threshold == 0:  # only an unchanged output has JS 0: keep everything, no trial needed
            return Selection([None] * len(layers), rungs=[len(self.keep_ratios)] * len(layers))
        # 4. teacher pass: the chunk's demos re-encoded alone after [history | full chunk]
        work = [[h, c] for h, c in zip(state.history, state.kv)]  # pieces, not a copy of the memory
        probes = adapter.collate(state.demos)
        prep = adapter.prepare(probes, state.offset_after, pack=True)  # one sequence: the memory is never copied
        rows = prep.select(probes.probe_rows(self.probe_end_of_turn))
        history_lengths = [0 if h is None else h[0].shape[-2] for h in state.history]
        ctx = AttentionContext(prefix=work, score_rows=rows, score_start=history_lengths)
        final, inputs = adapter.run_layers(prep.hidden, prep.positions, prep.seg, ctx, keep_inputs=True)
        teacher = adapter.lm_logits(final[rows])
        # 5. ranking per layer and KV head: pooled attention of the answer-predicting rows, own answers first
        protected = state.batch.targets[0] | state.batch.predict[0]
        order = [scoring.rank(scoring.smooth(ctx.tail_scores[l], self.pool_kernel), protected) for l in layers]

        # 6. a trial prunes some layers >= l and re-runs the probes from the stored input of layer l
        def trial(assign: dict[int, int]) -> float:
            prefix = list(work)
            for layer, n in assign.items():
                kept = scoring.gather(state.kv[layer], scoring.keep_indices(order[layer], n))
                prefix[layer] = [state.history[layer], kept]
            low = min(assign)
            out, _ = adapter.run_layers(
                inputs[low], prep.positions, prep.seg, AttentionContext(prefix=prefix), start=low
            )
            return js_divergence(adapter.lm_logits(out[rows]), teacher)

        # 7. the ladder (keep ratios as entry counts) and the search over it
        counts = [scoring.count_for(r, state.length) for r in self.keep_ratios]
        chunk = pruning.ChunkSearch(
            counts, state.length, len(layers), trial, self.js_threshold, state.index,
            previous=state.previous.steps if state.previous is not None else None,
            cost=lambda l, cs: scoring.dropped_mass(ctx.tail_scores[l], order[l], cs),
        )  # fmt: skip
        result = self.strategy(chunk)
        # 8. keep
        keep = [scoring.keep_indices(order[l], result.kept[l]) if l in result.kept else None for l in layers]
        return Selection(keep, result.js, result.trials, result.rungs(counts, len(layers)))
