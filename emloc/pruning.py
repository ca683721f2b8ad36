"""Layer-wise adaptive budgets under a divergence bound (paper §3.2, method.md §3.2–3.3).

A search decides, for each decoder layer, how many of the current chunk's entries to keep, using an oracle
`trial(assignment) -> JS` that measures the output divergence when the layers in `assignment` are pruned to
the given counts (all other layers of the chunk kept in full). Layers are always decided top-down: when a
trial starts at layer l, every layer below l is still unpruned, so the stored teacher hidden state is exactly
the input layer l would receive and one partial re-forward measures the combined effect of all pruning at
layers ≥ l. The last accepted trial therefore measured the chunk's final pruning: whatever the search, the
chunk's JS ≤ δ (the same bound as the reference).

* `greedy` — the reference search: per layer, the smallest ratio on the ladder that passes.
* `first_passing` — the warm start: whole assignments (e.g. the previous chunk's budgets) tried in one trial
  each; the first that passes is the chunk's pruning.
* `bisect` — the same decisions for single layers, but first tries the smallest ratio on a whole block of
  layers with one trial and only splits a block (upper half first) when it fails. Where most layers take the
  smallest ratio this needs O(log L) trials per chunk instead of O(L).

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


def _try(result: SearchResult, trial: Trial, block: list[int], count: int, threshold: float) -> bool:
    proposal = {**result.kept, **{layer: count for layer in block}}
    value = trial(proposal)
    result.trials += 1
    if value <= threshold:
        result.kept = proposal
        for layer in block:
            result.js[layer] = value
        return True
    return False


def greedy(num_layers: int, counts: list[int], trial: Trial, threshold: float) -> SearchResult:
    """Top-down, per layer, the smallest count whose trial passes; a layer with none stays full."""
    result = SearchResult()
    for layer in reversed(range(num_layers)):
        for count in counts:
            if _try(result, trial, [layer], count, threshold):
                break
    return result


def bisect(num_layers: int, counts: list[int], trial: Trial, threshold: float) -> SearchResult:
    """Top-down block search: a block passing at the smallest count is accepted whole, else split."""
    result = SearchResult()

    def solve(block: list[int]) -> None:  # block: layers in descending order
        if len(block) == 1:
            for count in counts:
                if _try(result, trial, block, count, threshold):
                    return
            return
        if _try(result, trial, block, counts[0], threshold):
            return
        half = len(block) // 2
        solve(block[:half])  # upper layers first: lower ones must still be unpruned when they are tested
        solve(block[half:])

    if counts:
        solve(list(reversed(range(num_layers))))
    return result


def first_passing(proposals: list[dict[int, int]], trial: Trial, threshold: float) -> tuple[SearchResult | None, int]:
    """Warm start: accept the first whole assignment whose single trial passes (that trial measures it entirely).

    Returns the accepted result (None if every proposal failed) and the number of trials spent.
    """
    spent = 0
    for proposal in proposals:
        if not proposal:
            continue
        value = trial(proposal)
        spent += 1
        if value <= threshold:
            return SearchResult(dict(proposal), {layer: value for layer in proposal}, spent), spent
    return None, spent


SEARCHES = {"greedy": greedy, "bisect": bisect}
