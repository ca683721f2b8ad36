"""EMLoC-E2E: a task memory whose divergence from the full context is certified end to end, on held-out probes.

EMLoC (`emloc.methods.emloc.EMLoC`) bounds, per chunk, the JS divergence of the chunk's OWN demonstrations' answers against a
teacher that already sees the compressed history. Both halves of that bound miss what users need: a demonstration
can copy its answer from its own copy in the chunk (so the probes mostly test that the copy survives), the teacher
drifts with the history, and most compared rows are answer tokens after the first, which any context predicts. This
method changes the three, and the search:

1. Probes that generalise: the chunk is probed with `probe_demos` demonstrations it does not hold (the ones that
   follow it, wrapping around), at the row where each one's answer is decided (the row predicting its first answer
   token) — what a new query asks of the memory.
2. An end-to-end teacher: the probes' answers after the uncompressed context of the demonstrations so far, so the
   accepted divergence is that of the memory as it is after the chunk, history included. With `entries="full"`
   the memory is a subset of the uncompressed context's keys/values (each chunk is encoded after the full history,
   kept alongside while building): an entry is exactly what the full context holds, only missing ones diverge.
3. One allocation, certified: per layer, the fewest entries that keep 1 − τ of the probes' attention mass (answer
   tokens first, as in EMLoC) — concentrated layers keep few entries, diffuse layers many — and a bisection over
   the single scalar τ, each trial one forward of the probes; the accepted τ is the largest whose measured
   divergence is ≤ δ. When even the whole chunk exceeds δ (the history alone is too far) nothing is pruned and the
   record says so.

Every chunk records the divergence it was accepted at. `probes="self"`, `teacher="local"`, `entries="chunk"` and
`rows="answer"` reproduce EMLoC's choices, for ablation. Costs per chunk: one chunk forward, two probe passes and
`max_trials` trials of the probes, each probe cut at its first answer token.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from transformers.cache_utils import DynamicCache

from emloc.data.base import Example
from emloc.engine import scoring
from emloc.engine.attention import AttentionContext
from emloc.engine.compress import ChunkState, Compressor, FullContext, Selection
from emloc.engine.divergence import js_divergence
from emloc.engine.prompts import Row, chunks


@dataclass
class Build:
    """The state of one build of EndToEnd (set by `build`, dropped when it returns)."""

    adapter: Any
    instruction: str | None
    groups: list[list[Example]]  # the chunks' demonstrations
    rows: list[Row]  # every demonstration, rendered
    held: list[Row]  # the tuning inputs, rendered as queries
    full: list | None = None  # the uncompressed KV of the chunks so far, pieces per layer
    full_chunks: int = 0  # how many chunks `full` holds
    tau: float | None = None  # the τ the previous chunk accepted (the next search starts there)


# ---- the choices, one small object each: where probes come from, what they are compared to, how τ becomes counts
class NextDemos:
    """The demonstrations after the chunk (not in the memory yet); for the last chunks, the tuning inputs, else the
    demonstrations from the start."""

    def rows(self, b: Build, state: ChunkState, want: int) -> list[Row]:
        n, start = len(b.rows), sum(len(g) for g in b.groups[: state.index])
        own = range(start, start + len(state.demos))
        after = range(own.stop, min(n, own.stop + want))
        rows = [b.rows[i] for i in after]
        if len(rows) < want:
            spare = b.held or [b.rows[i] for i in range(n) if i not in own and i not in after]
            rows += spare[: want - len(rows)]
        return rows


class TuningInputs:
    """The task's tuning inputs only (held out from everything else; their answers are never used)."""

    def rows(self, b: Build, state: ChunkState, want: int) -> list[Row]:
        return b.held or NextDemos().rows(b, state, want)


class OwnDemos:
    """The chunk's own demonstrations, as EMLoC."""

    def rows(self, b: Build, state: ChunkState, want: int) -> list[Row]:
        return list(state.demos)


class FullTeacher:
    """The probes' answers after the uncompressed context so far: the bound holds end to end."""

    needs_full = True

    def logits(self, answers: Callable, base: torch.Tensor, full: list, chunk_full: list) -> torch.Tensor:
        return answers([[*f, c] for f, c in zip(full, chunk_full)])


class LocalTeacher:
    """The probes' answers after the compressed history and the whole chunk, as EMLoC."""

    needs_full = False

    def logits(self, answers: Callable, base: torch.Tensor, full: list, chunk_full: list) -> torch.Tensor:
        return base


class MassAllocation:
    """Per layer, the fewest entries that keep 1 − τ of the probes' attention mass."""

    def counts(self, masses: list[torch.Tensor], tau: float, floor: int, length: int) -> list[int]:
        return [max(floor, int((m > tau).sum()) + 1) if tau > 0 else length for m in masses]


class UniformAllocation:
    """1 − τ of every layer."""

    def counts(self, masses: list[torch.Tensor], tau: float, floor: int, length: int) -> list[int]:
        return [max(floor, min(length, math.ceil((1 - tau) * length)))] * len(masses)


PROBES = {"next": NextDemos(), "heldout": TuningInputs(), "self": OwnDemos()}
TEACHERS = {"full": FullTeacher(), "local": LocalTeacher()}
ALLOCATIONS = {"mass": MassAllocation(), "uniform": UniformAllocation()}
CHOICES = {"probes": tuple(PROBES), "teacher": tuple(TEACHERS), "entries": ("full", "chunk"),
           "rows": ("decision", "answer"), "allocation": tuple(ALLOCATIONS)}  # fmt: skip


@dataclass
class EndToEnd(Compressor):
    """See the module docstring.

    Parameters
    ----------
    chunk_size : demonstrations per chunk.
    js_threshold : δ, the bound on the mean JS divergence (nats) of the probes' compared rows.
    probes : "next" (the demonstrations after the chunk, then the task's tuning inputs — held out from demonstrations,
        queries, the fidelity and the certification set, passed to `build`, only their questions used — for the last
        chunks), "heldout" (the tuning inputs only) or "self" (the chunk's own demonstrations, as EMLoC). The bound
        these choose is certified by the runner on the certification set (`bound`), never on them.
    probe_demos : how many inputs probe a chunk.
    rows : "decision" (each probe's first-answer-token row) or "answer" (every answer row, as EMLoC).
    teacher : "full" (the uncompressed context: end to end) or "local" (the compressed history, as EMLoC).
    entries : "full" (kept entries come from the uncompressed context) or "chunk" (from the chunk encoded after the
        compressed memory, as EMLoC; needs no uncompressed history unless the teacher is "full").
    allocation : "mass" (per layer, the fewest entries keeping 1 − τ of the attention) or "uniform" (1 − τ of each).
    max_trials : divergence trials per chunk (the search over τ, from the previous chunk's τ).
    pool_kernel : average pooling of the scores along the tokens.
    protect : rank the chunk's answer tokens first (EMLoC's protection); False leaves them to the allocation.
    """

    option = "emloc_e2e"
    label = "EMLoC-E2E"
    compresses = True
    searches = True
    lossless: ClassVar[dict[str, Any] | None] = {"js_threshold": 0.0}
    revision = 5  # 2: decision rows, probes the chunk does not hold, entries from the full context; 3: warm τ search;
    # 4, 5: held-out inputs

    chunk_size: int | None = 4
    js_threshold: float = 0.005
    probes: str = "next"
    probe_demos: int = 8
    rows: str = "decision"
    teacher: str = "full"
    entries: str = "full"
    allocation: str = "mass"
    max_trials: int = 4
    pool_kernel: int = 5
    protect: bool = True
    _build: Build | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        d = self.js_threshold
        if not isinstance(d, (int, float)) or math.isnan(d) or d < 0:
            raise ValueError(f"js_threshold must be a number >= 0, got {d!r}")
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        for key in ("max_trials", "probe_demos"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {getattr(self, key)!r}")
        scoring.smooth(torch.zeros(1, 1), self.pool_kernel)

    def describe(self) -> str:
        changed = [f"{k}={getattr(self, k)}" for k, allowed in CHOICES.items() if getattr(self, k) != allowed[0]]
        changed += [] if self.protect else ["no protection"]
        return self.label + (f" ({', '.join(changed)})" if changed else "")

    @property
    def _keeps_full(self) -> bool:
        return TEACHERS[self.teacher].needs_full or self.entries == "full"

    def bound(self) -> float | None:
        return self.js_threshold

    def heldout_count(self) -> int:
        return self.probe_demos if self.probes in ("heldout", "next") else 0

    @torch.no_grad()
    def build(self, adapter, demos: list[Example], instruction: str | None = None, probes: list[Example] = (), **kw):
        """As `Compressor.build`; `probes`: the task's tuning inputs (the first `probe_demos` are used)."""
        renderer = adapter.renderer(instruction)
        held = [renderer.query(q) for q in list(probes)[: self.probe_demos]] if self.probes != "self" else []
        self._build = Build(adapter, instruction, chunks(demos, self.chunk_size or max(len(demos), 1)),
                            [renderer.demo(d) for d in demos], held)  # fmt: skip
        try:
            return super().build(adapter, demos, instruction, probes=probes, **kw)
        finally:
            self._build = None

    # ------------------------------------------------------------------------------------------------ pieces
    def _full_history(self, index: int, num_layers: int) -> list:
        """The uncompressed KV of the chunks before `index`, as pieces per layer (rebuilt after a resume)."""
        b = self._build
        if b.full_chunks != index:
            done = [d for g in b.groups[:index] for d in g]
            memory = FullContext(show_progress=False).build(b.adapter, done, b.instruction)
            b.full, b.full_chunks = [[kv] if kv is not None else [] for kv in memory.prefix()], index
        return b.full or [[] for _ in range(num_layers)]

    def chunk_context(self, history: list, index: int) -> list:
        return self._full_history(index, len(history)) if self.entries == "full" else history

    def _full_chunk(self, adapter, state: ChunkState, full: list) -> list:
        """The chunk's KV with the uncompressed history as prefix (the teacher's context)."""
        if self.entries == "full":
            return state.kv  # the chunk was encoded after the full history already
        prep = adapter.prepare(state.batch, state.offset)
        cache = DynamicCache()
        adapter.run_layers(prep.hidden, prep.positions, prep.seg, AttentionContext(prefix=full), cache=cache)
        return [(lay.keys, lay.values) for lay in cache.layers]

    def _probes(self, state: ChunkState) -> list:
        """Rows of the probes (`PROBES[self.probes]`), each ending where its answer is decided with `rows="decision"`
        (demonstrations are cut before their answer: what follows the decision row cannot change it)."""
        rows = PROBES[self.probes].rows(self._build, state, self.probe_demos)
        if self.rows == "decision":
            rows = [r if not any(r.targets) else Row(r.ids[:t], r.kinds[:t], r.targets[:t], r.images, r.videos)
                    for r in rows for t in [r.targets.index(True) if any(r.targets) else 0]]  # fmt: skip
        return rows

    def _search(self, trial, start: float | None = None) -> tuple[float, float, int]:
        """The largest τ whose trial is ≤ δ, in at most `max_trials` trials: from the previous chunk's τ (chunks are
        alike) gallop up or down in steps of 1/16, doubling, then bisect; the first chunk bisects [0, 1]. Returns
        (τ, its measured divergence, trials); τ = 0 (prune nothing) when no trial passes."""
        values: dict[float, float] = {}

        def passes(t: float) -> bool:
            if t not in values:
                values[t] = trial(t)
            return values[t] <= self.js_threshold

        lo, hi, step = 0.0, 1.0, 1 / 16
        t = 0.5 if not start else start
        while len(values) < self.max_trials:
            if passes(t):
                lo = t
                t = min(hi, t + step) if start else (t + hi) / 2
            else:
                hi = t
                t = max(lo, t - step) if start else (t + lo) / 2
            step *= 2
            if start and (t <= lo or t >= hi or t in values):  # the bracket is found: bisect it
                start, t = None, (lo + hi) / 2
            if hi - lo < 1e-3:
                break
        passing = [v for v in values if values[v] <= self.js_threshold]
        best = max(passing, default=0.0)
        return best, values.get(best, float("nan")) if passing else float("nan"), len(values)

    # ------------------------------------------------------------------------------------------------ select
    def select(self, adapter, state: ChunkState) -> Selection:
        layers = range(len(state.kv))
        full = self._full_history(state.index, len(layers)) if self._keeps_full else None
        chunk_full = self._full_chunk(adapter, state, full) if full is not None else None
        if full is not None:  # the uncompressed context after this chunk, for the next one
            self._build.full = [[*f, c] for f, c in zip(full, chunk_full)]
            self._build.full_chunks = state.index + 1
        if self.js_threshold == 0:
            return Selection([None] * len(layers))
        probes = adapter.collate(self._probes(state))
        prep = adapter.prepare(probes, state.offset_after, pack=True)
        if self.rows == "decision":  # each probe's last row: where its answer is decided
            rows = torch.zeros_like(prep.seg, dtype=torch.bool)
            rows[0, prep.last()] = True
        else:
            rows = prep.select(probes.probe_rows(False))

        def answers(prefix: list, ctx: AttentionContext | None = None) -> torch.Tensor:
            ctx = ctx or AttentionContext(prefix=prefix)
            out, _ = adapter.run_layers(prep.hidden, prep.positions, prep.seg, ctx)
            return adapter.lm_logits(out[rows])

        # the student with the whole chunk: its answers, and the probes' attention over the chunk's entries
        history = [0 if h is None else h[0].shape[-2] for h in state.history]
        ctx = AttentionContext(prefix=[[h, c] for h, c in zip(state.history, state.kv)], score_rows=rows,
                               score_start=history)  # fmt: skip
        base = answers([], ctx)
        teacher = TEACHERS[self.teacher].logits(answers, base, full, chunk_full)
        # ranking (answer tokens first) and each layer's dropped attention mass as a function of the count
        protected = (
            (state.batch.targets[0] | state.batch.predict[0])
            if self.protect
            else torch.zeros_like(state.batch.targets[0])
        )
        scores = [scoring.smooth(ctx.tail_scores[l], self.pool_kernel) for l in layers]
        order = [scoring.rank(s, protected) for s in scores]
        every = list(range(1, state.length + 1))
        masses = [torch.tensor(scoring.dropped_mass(s, o, every)) for s, o in zip(scores, order)]
        floor = int(protected.sum())

        def trial(counts: list[int]) -> float:
            prefix = [[h, scoring.gather(c, scoring.keep_indices(o, n))] if n < state.length else [h, c]
                      for h, c, o, n in zip(state.history, state.kv, order, counts)]  # fmt: skip
            return js_divergence(answers(prefix), teacher)

        base_js = js_divergence(base, teacher)
        tau, best_js, trials = 0.0, base_js, 0
        if base_js <= self.js_threshold:  # otherwise the history alone is too far: prune nothing
            counts = ALLOCATIONS[self.allocation].counts
            tau, best_js, trials = self._search(
                lambda t: trial(counts(masses, t, floor, state.length)), self._build.tau
            )
        self._build.tau = tau
        best = ALLOCATIONS[self.allocation].counts(masses, tau, floor, state.length) if tau > 0 else None
        keep = [None] * len(layers) if best is None else [
            scoring.keep_indices(o, n) if n < state.length else None for o, n in zip(order, best)
        ]  # fmt: skip
        return Selection(keep, dict.fromkeys(layers, best_js if tau > 0 else base_js), trials)
