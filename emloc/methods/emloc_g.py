"""EMLoC-G: a small task memory, sized over the whole context by one scalar and certified out of sample
(docs/method.md §8.4).

1. Prefill the demonstrations once (the whole-context path, `emloc.engine.whole`).
2. Score every (layer, KV head, token) by the attention mass the task's tuning inputs put on it: every token of each
   input and of its reference answer (`rows="answers"`; "prompt": the prompt's tokens only), the inputs a memory
   exists for (`importance="reconstruction"`: KVzip's query-agnostic score instead, for the ablation). Measured on the
   default task, mass beats KVzip's score and the largest attention at 15-25 % kept (docs/method.md §8.4).
3. Size: one scalar, the fraction of all entries kept (one threshold over all layers and heads, so each head has its
   own budget). On the `ladder` of fractions, bisect for the smallest whose memory keeps the tuning inputs' mean
   next-token JS to the full context at most δ both at the answer's first token (what the certificate measures) and,
   with `rows="answers"`, over every row that predicts a token of their reference answers and its end of turn (what
   ranking candidates reads). Cross-fitted (`sizing="crossfit"`, the default): the tuning inputs are split in two
   halves, and each half's first-token JS is measured on a memory of that size ranked by the other half, so the
   quantity the certificate checks is sized on inputs the ranking did not see (ranked and measured on the same
   inputs it reads 1.5-7 x too low at 256 shots); the memory kept is ranked by all of them. The top rung, everything,
   always qualifies: δ = 0 keeps it.
4. Certify: the runner measures the finished memory on the certification set (inputs nothing above saw) and records
   the one-sided 95 % upper bound against `bound()` = `slack` × δ; a miss is recorded as "bound not met".

Why these choices: the chunk-local budgets of EMLoC and EMLoC-E2E compound their errors over chunks and grow with
the number of demonstrations; one threshold over the whole context spends the budget where the scores are, and the
inputs that choose the size are never the ones that certify it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from emloc.data.base import Example
from emloc.engine.divergence import js_rows
from emloc.engine.fidelity import answer_logits, answer_row_logits
from emloc.engine.memory import TaskMemory
from emloc.engine.whole import Prefilled, WholeContext, input_scores, reconstruction_scores

SCORES = ("inputs", "reconstruction")
ROWS = ("answers", "prompt")
SIZING = ("crossfit", "insample")


@dataclass
class EMLoCG(WholeContext):
    option = "emloc_global"
    label = "EMLoC-G"
    searches = False
    lossless: ClassVar[dict[str, Any] | None] = {"delta": 0.0}
    revision: ClassVar[int | None] = 4  # 2: answer rows size; 3: and the first token too; 4: cross-fitted, one pass

    delta: float = 0.005
    slack: float = 2.0
    tuning_inputs: int = 64
    importance: str = "inputs"
    rows: str = "answers"
    sizing: str = "crossfit"
    ladder: tuple[float, ...] = (0.02, 0.03, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8)
    prompt: str = "Repeat the previous context exactly."
    resume_prompt: str = "Repeat the part of the previous context exactly, starting with "

    def __post_init__(self) -> None:
        super().__post_init__()
        self.ladder = tuple(float(r) for r in self.ladder)  # a YAML list arrives as an OmegaConf ListConfig
        if self.delta < 0:
            raise ValueError(f"delta must be >= 0, got {self.delta!r}")
        if self.slack < 1:
            raise ValueError(f"slack must be >= 1 (the certificate is at least δ), got {self.slack!r}")
        if self.tuning_inputs < 1:
            raise ValueError(f"tuning_inputs must be >= 1, got {self.tuning_inputs!r}")
        if self.rows not in ROWS:
            raise ValueError(f"rows must be one of {list(ROWS)}, got {self.rows!r}")
        if self.sizing not in SIZING:
            raise ValueError(f"sizing must be one of {list(SIZING)}, got {self.sizing!r}")
        if self.sizing == "crossfit" and self.importance == "inputs" and self.tuning_inputs < 2:
            raise ValueError(f"sizing='crossfit' splits the tuning inputs in two: tuning_inputs must be >= 2, got "
                             f"{self.tuning_inputs!r}")  # fmt: skip
        if self.importance not in SCORES:
            raise ValueError(f"importance must be one of {list(SCORES)}, got {self.importance!r}")
        if any(not 0 < r < 1 for r in self.ladder) or list(self.ladder) != sorted(set(self.ladder)):
            raise ValueError(f"ladder must be increasing fractions in (0, 1), got {list(self.ladder)!r}")

    def describe(self) -> str:
        return super().describe() + ("" if self.importance == "inputs" else f" ({self.importance} scores)")

    def heldout_count(self) -> int:
        return self.tuning_inputs

    def bound(self) -> float:
        return self.slack * self.delta

    def score(self, adapter, context: Prefilled, probes: Sequence[Example]) -> list[torch.Tensor]:
        """Per entry, the score ranking the memory. Cross-fitted, also each half's (kept for `ratio`); the inputs'
        mass is a mean over inputs, so the whole set's is the halves' weighted mean (no extra pass)."""
        self._folds = None
        if self.importance == "reconstruction":  # the ranking sees no tuning input: nothing to cross-fit
            return reconstruction_scores(adapter, context, self.prompt, self.resume_prompt)
        with_answers = self.rows == "answers"
        if self.sizing == "insample" or len(probes) < 2:
            return input_scores(adapter, context, probes, with_answers=with_answers)
        halves = [list(range(0, len(probes), 2)), list(range(1, len(probes), 2))]
        parts = [input_scores(adapter, context, [probes[i] for i in h], with_answers=with_answers) for h in halves]
        self._folds = [(parts[0], halves[1]), (parts[1], halves[0])]  # (the ranking, the inputs it is measured on)
        n = [len(h) for h in halves]
        return [(a * n[0] + b * n[1]) / sum(n) for a, b in zip(*parts)]

    def ratio(self, adapter, context: Prefilled, scores, probes: Sequence[Example]) -> tuple[float, list]:
        """The smallest rung whose tuning JS is at most δ, by bisection (JS falls as more is kept)."""
        rungs, sizing = [*self.ladder, 1.0], []
        if self.delta == 0:
            return 1.0, sizing
        if not probes:
            raise ValueError(
                f"{self.option} sizes its memory on held-out tuning inputs, and none were given "
                "(build(probes=...); the runner passes task.heldout.tuning)"
            )
        reference = self._logits(adapter, context.memory, context, list(probes))
        lo, hi = 0, len(rungs) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            js = self._tuning_js(adapter, context, scores, rungs[mid], list(probes), reference)
            sizing.append([rungs[mid], js])
            lo, hi = (lo, mid) if js <= self.delta else (mid + 1, hi)
        return rungs[lo], sizing

    def _tuning_js(self, adapter, context: Prefilled, scores, ratio: float, probes: list[Example], reference) -> float:
        """The larger of two mean JS to the full context on the tuning inputs, for the memory keeping `ratio`:
        - at the answer's first token, what the certificate measures. Cross-fitted, each half's is measured on the
          memory the other half ranked (a prompt-only pass), so no input measures a ranking it chose;
        - with `rows="answers"`, over every row of their teacher-forced answers, on the memory itself: a guard for
          candidate ranking, which reads every answer token.
        Cross-fitted, a rung whose first-token JS already exceeds δ fails whatever the answer rows say: that JS alone
        is returned and the teacher-forced pass is skipped (the same decisions, fewer passes)."""
        ref, decided = reference
        first = None
        if self._folds is not None:
            first = torch.empty(int(decided.sum()), dtype=ref.dtype, device=ref.device)
            for fold, measured in self._folds:
                kept = self.keep(context, fold, ratio)
                logits = answer_logits(adapter, kept.prefix(), kept.position_offset, context.renderer,
                                       [probes[i] for i in measured])  # fmt: skip
                first[measured] = js_rows(logits, ref[decided][measured]).to(first.dtype)
            if float(first.mean()) > self.delta:
                return float(first.mean())
        ours, _ = self._logits(adapter, self.keep(context, scores, ratio), context, probes)
        per_row = js_rows(ours, ref)
        first = per_row[decided] if first is None else first
        return max(float(first.mean()), float(per_row.mean()) if self.rows == "answers" else 0.0)

    def _logits(self, adapter, memory: TaskMemory, context: Prefilled, inputs: list[Example]):
        """Logits after `memory` at every row of the inputs' teacher-forced answers (`rows="answers"`) or at their
        answers' first token alone, and the mask of the first-token rows (one pass)."""
        if self.rows == "answers":
            return answer_row_logits(adapter, memory.prefix(), memory.position_offset, context.renderer, inputs)
        logits = answer_logits(adapter, memory.prefix(), memory.position_offset, context.renderer, inputs)
        return logits, torch.ones(len(logits), dtype=torch.bool)
