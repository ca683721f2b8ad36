"""EMLoC: chunk-wise compression with JS-bounded layer-wise adaptive pruning (paper §3.2, docs/method.md §2–§6).

For each chunk of the shared loop (`emloc.engine.compress.Compressor`):

4. Self-probes: every demo of the chunk is re-encoded alone after [history | chunk]; this teacher pass keeps
   the input of every layer and the attention of the probes' answer-predicting rows over the chunk (softmax
   over [chunk | probe], the compressed history excluded).
5. Scores per layer and KV head: summed attention, average-pooled, the chunk's own answer tokens protected.
6. Top-down search over the keep-ratio ladder: a trial prunes some layers >= l, re-runs the probes from the
   stored input of layer l and compares the answer distributions with the teacher's (JS, fp32, nats/token).
7. The search strategy (`emloc.engine.pruning`) decides which trials to run; 8. the accepted entries are kept.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from emloc.engine import pruning, scoring
from emloc.engine.attention import AttentionContext
from emloc.engine.compress import ChunkState, Compressor, Selection
from emloc.engine.divergence import js_divergence


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
        span (docs/method.md §6.4); False compares only the rows that predict the answer and its end of turn.
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
            previous=state.previous.rungs if state.previous is not None else None,
            cost=lambda l, cs: scoring.dropped_mass(ctx.tail_scores[l], order[l], cs),
        )  # fmt: skip
        result = self.strategy(chunk)
        # 8. keep
        keep = [scoring.keep_indices(order[l], result.kept[l]) if l in result.kept else None for l in layers]
        return Selection(keep, result.js, result.trials, result.rungs(counts, len(layers)))
