"""Layer-wise adaptive budgets under a divergence bound (paper §3.2, docs/method.md §3.2–3.3).

A search decides, for each decoder layer, how many of the current chunk's entries to keep, using an oracle
`trial(assignment) -> JS` that measures the output divergence when the layers in `assignment` are pruned to
the given counts (all other layers of the chunk kept in full). Layers are always decided top-down: when a
trial starts at layer l, every layer below l is still unpruned, so the stored teacher hidden state is exactly
the input layer l would receive and one partial re-forward measures the combined effect of all pruning at
layers ≥ l. The last accepted trial therefore measured the chunk's final pruning: whatever the search, the
chunk's JS ≤ δ (the same bound as the reference).

Three procedures over per-layer ladders (counts, smallest first; an empty ladder keeps the layer in full):

* `greedy` — the reference: per layer, the smallest count that passes.
* `bisect` — tries a whole block of layers at their first counts with ONE trial and splits a block (upper half
  first) only when it fails; single layers then walk their ladders as in `greedy`. O(log L) trials when most
  layers pass at their first count.
* `gallop` — along one path of assignments ordered from most to least pruned (`budget_path`), the first that
  passes: a galloping search from a starting point, then bisection.

and the strategies `EMLoC` is configured with, each a small object called once per chunk with a `ChunkSearch`
(`strategy(search, warm_search)` picks one from the YAML keys):

* `Greedy`, `Bisect` — every chunk from scratch (`Greedy` is the paper's algorithm);
* `WarmBisect` — later chunks start each layer's ladder at the rung it took in the previous chunk (one rung lower
  for a rotating quarter of the layers, so no layer is pinned where one hard chunk pushed it) and `bisect` them;
* `WarmPath` — later chunks gallop along a path around the previous chunk's choices (each layer one rung down or
  any number up, ordered by attention mass regained per kept entry). Fewer trials, but its retention drifts up
  with the number of chunks (measured in docs/benchmarks.md). Experimental.

This module knows nothing about models; `compress` supplies the oracle.
"""

from __future__ import annotations

import heapq
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

Trial = Callable[[dict[int, int]], float]


@dataclass
class SearchResult:
    kept: dict[int, int] = field(default_factory=dict)  # layer -> entries kept (absent: kept in full)
    js: dict[int, float] = field(default_factory=dict)  # layer -> JS of the accepted trial that covered it
    trials: int = 0

    def rungs(self, counts: list[int], num_layers: int) -> list[int]:
        """Per layer, the index of the kept count on the ladder `counts` (len(counts): kept in full)."""
        return [counts.index(self.kept[l]) if l in self.kept else len(counts) for l in range(num_layers)]


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


# ------------------------------------------------------------------------------------------------ strategies
@dataclass
class ChunkSearch:
    """One chunk's search problem, as a strategy sees it."""

    counts: list[int]  # the keep-ratio ladder of this chunk as entry counts, smallest first
    length: int  # the chunk's token count: keeping everything
    num_layers: int
    trial: Trial
    threshold: float
    index: int = 0  # the chunk's position in the memory
    previous: list[int] | None = None  # per layer, the rung the previous chunk took (len(counts): kept in full)
    cost: Callable[[int, list[int]], list[float]] | None = None  # layer, counts -> score mass dropped at each count

    def ladder(self, start: int = 0) -> list[int]:
        """The counts from rung `start` on that prune something."""
        return [c for c in self.counts[start:] if c < self.length]


class Search(ABC):
    """A search strategy: called once per chunk, returns what each layer keeps."""

    @abstractmethod
    def __call__(self, chunk: ChunkSearch) -> SearchResult: ...


@dataclass
class Greedy(Search):
    """The paper's search: top-down, one layer at a time, the smallest count that passes."""

    def __call__(self, chunk: ChunkSearch) -> SearchResult:
        return greedy([chunk.ladder()] * chunk.num_layers, chunk.trial, chunk.threshold)


@dataclass
class Bisect(Search):
    """Blocks of layers at their smallest count, split on failure."""

    def __call__(self, chunk: ChunkSearch) -> SearchResult:
        return bisect([chunk.ladder()] * chunk.num_layers, chunk.trial, chunk.threshold)


@dataclass
class WarmBisect(Search):
    """`cold` for the first chunk; later chunks bisect ladders that begin at the previous chunk's rungs, one rung
    lower for a rotating window of `window` of the layers."""

    cold: Search
    window: float = 0.25

    def __call__(self, chunk: ChunkSearch) -> SearchResult:
        if chunk.previous is None:
            return self.cold(chunk)
        width = math.ceil(chunk.num_layers * self.window)
        lowered = {(chunk.index * width + i) % chunk.num_layers for i in range(width)}
        start = [max(rung - (layer in lowered), 0) for layer, rung in enumerate(chunk.previous)]
        return bisect([chunk.ladder(s) for s in start], chunk.trial, chunk.threshold)


@dataclass
class WarmPath(Search):
    """`cold` for the first chunk; later chunks gallop along `budget_path` from the previous chunk's choices (each
    layer may go one rung down or any number up)."""

    cold: Search

    def __call__(self, chunk: ChunkSearch) -> SearchResult:
        if chunk.previous is None:
            return self.cold(chunk)
        if chunk.cost is None:
            raise ValueError("the path search needs per-layer costs (ChunkSearch.cost)")
        full = sorted({c for c in chunk.counts if c < chunk.length}) + [chunk.length]
        prev = [full.index(chunk.counts[r]) if r < len(chunk.counts) else len(full) - 1 for r in chunk.previous]
        begin = [max(r - 1, 0) for r in prev]  # every layer may go one rung down ...
        path = budget_path([list(zip(full, chunk.cost(l, full))) for l in range(chunk.num_layers)], begin)
        start = sum(b < r for b, r in zip(begin, prev))  # ... or stay: path[start] is the previous choice
        return gallop(path, chunk.trial, chunk.threshold, start)


COLD = {"greedy": Greedy, "bisect": Bisect}
WARM = {"bisect": WarmBisect, "path": WarmPath}


def strategy(search: str, warm_search: str | None) -> Search:
    """The strategy for the YAML keys `search` (every chunk, or the first one with a warm start) and
    `warm_search` (null: no warm start)."""
    if search not in COLD:
        raise ValueError(f"search must be one of {sorted(COLD)}, got {search!r}")
    if warm_search is not None and warm_search not in WARM:
        raise ValueError(f"warm_search must be null or one of {sorted(WARM)}, got {warm_search!r}")
    cold = COLD[search]()
    return cold if warm_search is None else WARM[warm_search](cold)
