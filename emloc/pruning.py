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
* `gallop` — along one path of assignments ordered from most to least pruned (`budget_path`), the first that
  passes, found by galloping from a starting point then bisection: O(log distance) trials, each of a whole
  assignment. Started at the previous chunk's choices it needs a handful of trials per chunk.

Each layer has its own ladder (counts, smallest first), so a warm start is just shorter ladders (`compress` decides
where each ladder starts).

This module knows nothing about models; `compress` supplies the oracle.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

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


def budget_path(rungs: list[list[tuple[int, float]]], begin: list[int] | None = None) -> list[dict[int, int]]:
    """Assignments from the most pruned to none, raising one layer by one rung per step.

    rungs[l] : layer l's ladder as (count, cost) pairs, smallest count first, the last one keeping everything
        (cost: what pruning to that count loses, e.g. dropped attention mass).
    begin[l] : the rung layer l starts at (default: the first). Steps go level by level — every layer's first step
        up from its beginning before any second step — and within a level the step that removes the most cost per
        extra entry kept comes first. Returns len = total steps + 1; the last assignment is empty."""
    begin = list(begin) if begin is not None else [0] * len(rungs)
    at = list(begin)

    def key(layer: int) -> tuple[int, float, int]:
        (c0, cost0), (c1, cost1) = rungs[layer][at[layer]], rungs[layer][at[layer] + 1]
        return at[layer] - begin[layer], -(cost0 - cost1) / max(c1 - c0, 1), layer

    assign = {layer: r[at[layer]][0] for layer, r in enumerate(rungs) if at[layer] < len(r) - 1}
    heap = [key(layer) for layer in assign]
    heapq.heapify(heap)
    path = [dict(assign)]
    while heap:
        layer = heapq.heappop(heap)[2]
        at[layer] += 1
        if at[layer] == len(rungs[layer]) - 1:
            del assign[layer]
        else:
            assign[layer] = rungs[layer][at[layer]][0]
            heapq.heappush(heap, key(layer))
        path.append(dict(assign))
    return path


def gallop(path: list[dict[int, int]], trial: Trial, threshold: float, start: int) -> SearchResult:
    """The first assignment of `path` (ordered from most to least pruned, the last one empty) whose trial passes,
    assuming the divergence falls along the path: a galloping search from `start`, then bisection — O(log distance)
    trials, each measuring a whole assignment, so the accepted one meets the bound whatever the path."""
    result, values = SearchResult(), {len(path) - 1: 0.0}  # pruning nothing changes nothing: no trial

    def passes(t: int) -> bool:
        if t not in values:
            values[t] = trial(path[t])
            result.trials += 1
        return values[t] <= threshold

    lo, hi = -1, len(path) - 1  # path[lo] fails (or lo = -1), path[hi] passes
    t, step = min(max(start, 0), hi), 1
    if passes(t):
        hi = t
        while hi - step > lo and passes(hi - step):
            hi, step = hi - step, step * 2
        lo = max(lo, hi - step)
    else:
        lo = t
        while lo + step < hi and not passes(lo + step):
            lo, step = lo + step, step * 2
        hi = min(hi, lo + step)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if passes(mid) else (mid, hi)
    result.kept = dict(path[hi])
    result.js = dict.fromkeys(result.kept, values[hi])
    return result


SEARCHES = {"greedy": greedy, "bisect": bisect}  # searches from scratch (`gallop` needs a path and a start)
