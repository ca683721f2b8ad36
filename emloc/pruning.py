"""Layer-wise adaptive budgets under a divergence bound (paper §3.2, method.md §3.2–3.3).

A search decides, for each decoder layer, how many of the current chunk's entries to keep, using an oracle
`trial(assignment) -> JS` that measures the output divergence when the layers in `assignment` are pruned to
the given counts (all other layers of the chunk kept in full). Layers are always decided top-down: when a
trial starts at layer l, every layer below l is still unpruned, so the stored teacher hidden state is exactly
the input layer l would receive and one partial re-forward measures the combined effect of all pruning at
layers ≥ l. The last accepted trial therefore measured the chunk's final pruning: whatever the search, the
chunk's JS ≤ δ (the same bound as the reference).

* `greedy` — the reference search: per layer, the smallest ratio on the ladder that passes.
* `bisect` — tries every layer of a block at the first count of its ladder with ONE trial and only splits a
  block (upper half first) when it fails; single layers then walk their ladders as in `greedy`. When most
  layers pass at their first count this needs O(log L) trials instead of O(L) — which is what makes a warm
  start cheap: ladders that begin at the previous chunk's choices usually pass as a whole.

Each layer has its own ladder (counts, smallest first), so a warm start is just shorter ladders. A warm start
alone would only ever move layers UP the ladder (a ratchet: one hard chunk would fix a layer at full for the rest
of the memory), so `lower` then offers some layers one rung down, again under the same bound.

This module knows nothing about models; `compress` supplies the oracle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

Trial = Callable[[dict[int, int]], float]


@dataclass
class SearchResult:
    kept: dict[int, int] = field(default_factory=dict)  # layer -> entries kept (absent: kept in full)
    js: dict[int, float] = field(default_factory=dict)  # layer -> JS of the accepted trial that covered it
    trials: int = 0


def _try(result: SearchResult, trial: Trial, proposal: dict[int, int], threshold: float) -> bool:
    candidate = {**result.kept, **proposal}
    value = trial(candidate)
    result.trials += 1
    if value <= threshold:
        result.kept = candidate
        result.js.update({layer: value for layer in proposal})
        return True
    return False


def greedy(ladders: list[list[int]], trial: Trial, threshold: float) -> SearchResult:
    """Top-down, per layer, the first count of its ladder whose trial passes; a layer with none stays full.

    ladders[l] : the counts layer l may keep, smallest first (an empty ladder: the layer stays full).
    """
    result = SearchResult()
    for layer in reversed(range(len(ladders))):
        for count in ladders[layer]:
            if _try(result, trial, {layer: count}, threshold):
                break
    return result


def bisect(ladders: list[list[int]], trial: Trial, threshold: float) -> SearchResult:
    """Top-down block search: a block whose layers all pass at their first count is accepted with one trial;
    otherwise it is split (upper half first) down to single layers, which walk their ladders."""
    result = SearchResult()

    def solve(block: list[int]) -> None:  # layers in descending order, each with a non-empty ladder
        if len(block) == 1:
            for count in ladders[block[0]]:
                if _try(result, trial, {block[0]: count}, threshold):
                    return
            return
        if _try(result, trial, {layer: ladders[layer][0] for layer in block}, threshold):
            return
        half = len(block) // 2
        solve(block[:half])  # upper layers first: lower ones must still be unpruned when they are tested
        solve(block[half:])

    layers = [layer for layer in reversed(range(len(ladders))) if ladders[layer]]
    if layers:
        solve(layers)
    return result


def lower(result: SearchResult, proposals: dict[int, int], trial: Trial, threshold: float) -> SearchResult:
    """After a search, try to move the layers of `proposals` (layer -> smaller count) down: all at once, then by
    halves. Every accepted trial measures the whole chunk's assignment, so the bound is unchanged."""

    def solve(block: list[int]) -> None:
        if block and not _try(result, trial, {layer: proposals[layer] for layer in block}, threshold) and len(block) > 1:
            half = len(block) // 2
            solve(block[:half])
            solve(block[half:])

    solve(sorted(proposals, reverse=True))
    return result


SEARCHES = {"greedy": greedy, "bisect": bisect}
