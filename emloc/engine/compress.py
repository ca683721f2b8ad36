"""The chunk loop every method shares (paper §3.1, docs/method.md §2): `Compressor`, and the two methods that keep
every entry or none.

1. Render the demonstrations as one conversation and cut it into chunks of `chunk_size` demos.
2. Encode a chunk with the memory built so far as an always-visible prefix, positioned after the memory's
   uncompressed extent; collect the chunk's own keys/values per layer.
3. Ask the method which of the chunk's entries to keep in each layer (`select`), append them to the memory,
   and advance the offset by the chunk's position extent (kept entries keep their positions).

`FullContext` keeps everything (the paper's MLoC; with one chunk it is the plain many-shot prompt) and `ZeroShot`
keeps only the system turn. What a method keeps is its own module in `emloc.methods` (EMLoC's JS-bounded search:
`emloc.methods.emloc`); answering queries lives in `generate`.
"""

from __future__ import annotations

import json
import logging
import time
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from transformers.cache_utils import DynamicCache

from emloc.data.base import Example
from emloc.engine import scoring
from emloc.engine.attention import KV, AttentionContext
from emloc.engine.memory import ChunkRecord, TaskMemory
from emloc.engine.prompts import KIND_NAMES, Batch, Row, chunks
from emloc.utils.progress import progress as tqdm

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

    option: ClassVar[str]  # no default: every concrete method names its own (checked when the class is defined)
    label: ClassVar[str]
    uses_demos: ClassVar[bool] = True
    compresses: ClassVar[bool] = False
    searches: ClassVar[bool] = False
    lossless: ClassVar[dict[str, Any] | None] = {}
    revision: ClassVar[int | None] = None
    score_over_history: ClassVar[bool] = False  # chunk scores: softmax over [memory | chunk] (else the chunk only)
    keeps_inputs: ClassVar[bool] = False  # the chunk forward keeps every layer's input for `select`

    chunk_size: int | None = None
    show_progress: bool = True

    def __init_subclass__(cls, abstract: bool = False, **kw: Any) -> None:
        """A concrete method declares its own `option` and `label` (`class Base(Compressor, abstract=True)` for a base
        that only shares code): a class that forgets them would otherwise record its runs under another method."""
        super().__init_subclass__(**kw)
        if abstract:
            return
        for name in ("option", "label"):
            if not isinstance(cls.__dict__.get(name), str) or not cls.__dict__[name]:
                raise TypeError(
                    f"{cls.__module__}.{cls.__qualname__} must declare `{name}` (a non-empty str: "
                    + ("its conf/method/<option>.yaml" if name == "option" else "its name in tables and figures")
                    + "); a method class never inherits it"
                )

    def __post_init__(self) -> None:
        _check_types(self)
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
        """How many held-out tuning inputs (neither demonstrations, queries nor certification or fidelity inputs) the
        method wants as `build(probes=...)`."""
        return 0

    def respond(self, adapter, memory: TaskMemory, renderer, queries: list[Example], max_new_tokens: int,
                demos: list[Example]) -> list[tuple[str, list[float] | None]]:  # fmt: skip
        """Answer queries: against the shared task memory (`emloc.engine.generate.respond`). A method that composes a
        context per query from the demonstrations (retrieval) overrides it."""
        from emloc.engine.generate import respond

        return respond(adapter, memory, renderer, queries, max_new_tokens)

    def bound(self) -> float | None:
        """The divergence (nats, next-token JS to the full context) this method sizes its memory to stay under, if
        any. The runner certifies it on the task's certification set, which the method never sees."""
        return None

    def card(self) -> dict[str, Any]:
        """The contract as recorded with every run (`metrics.json`), so analysis never imports a method class. One name
        per concept: `method_option` is the `conf/method/<option>.yaml` a run was composed with (the runner records
        the one chosen, e.g. `snapkv_protect`; this is the class's own), `method_label` what tables and figures show."""
        return {"method_option": self.option, "method_label": self.describe(), "uses_demos": self.uses_demos,
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
        probes: Sequence[Example] = (),
    ) -> TaskMemory:
        """Compress `demos` into a memory. `resume`: a partial memory of the same build (its finished chunks are
        kept, not recomputed); `on_chunk`: called after every chunk (e.g. to persist progress); `probes`: held-out
        task inputs (neither demonstrations nor queries), as many as `heldout_count()` asks for — the methods that
        measure their memory on new inputs use them, the others ignore them."""
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
        groups = self.groups(renderer, demos)
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
        record = ChunkRecord(index, len(rows), state.length, [], [], [], trials=chosen.trials, rungs=chosen.rungs)
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
    def groups(self, renderer, demos: list[Example]) -> list[list[Example]]:
        """The demonstrations of each chunk, in order (default: `chunk_size` at a time, all in one when None)."""
        return chunks(demos, self.chunk_size or max(len(demos), 1)) if demos else [[]]

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


def _check_types(method: Compressor) -> None:
    """Every parameter has its annotated kind (bool, int, float, str, a sequence of numbers; or None where allowed):
    a YAML or command-line value of the wrong kind fails here, naming the parameter, not deep inside a build."""
    hints = typing.get_type_hints(type(method))
    for f in fields(method):
        if not f.init:
            continue
        value, tp = getattr(method, f.name), hints[f.name]
        kinds = (
            [a for a in typing.get_args(tp) if a is not type(None)]
            if typing.get_origin(tp) is types.UnionType
            else [tp]
        )
        if value is None and (type(None) in typing.get_args(tp)):
            continue
        if not any(_is(value, k) for k in kinds):
            raise ValueError(f"{f.name} must be {' or '.join(_name(k) for k in kinds)}, got {value!r}")


def _is(value: Any, kind: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typing.get_origin(kind) is tuple:  # tuple[float, ...]: YAML gives a list
        (item, *_) = typing.get_args(kind)
        return isinstance(value, Sequence) and not isinstance(value, str) and all(_is(v, item) for v in value)
    return not isinstance(kind, type) or isinstance(value, kind)


def _name(kind: Any) -> str:
    if typing.get_origin(kind) is tuple:
        return f"a list of {_name(typing.get_args(kind)[0])}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, str(kind))


@dataclass
class FullContext(Compressor):
    """Uncompressed many-shot context (MLoC). Chunked or not, the memory is the same exact KV."""

    option = "full_context"
    label = "full context"


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
