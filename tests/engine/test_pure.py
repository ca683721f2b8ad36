"""Pure pieces: divergence, scoring, the layer searches, chunking and prompt rendering (milliseconds)."""

import math

import pytest
import torch

from emloc.engine import pruning, scoring
from emloc.engine.divergence import js_divergence
from emloc.engine.prompts import ANSWER, QUESTION, chunks


def test_js_is_zero_for_identical_symmetric_and_bounded():
    a, b = torch.randn(5, 50), torch.randn(5, 50)
    assert js_divergence(a, a) == pytest.approx(0.0, abs=1e-7)
    assert js_divergence(a, b) == pytest.approx(js_divergence(b, a), rel=1e-5)
    far = torch.full((1, 2), -1e4)
    far[0, 0], other = 1e4, torch.full((1, 2), -1e4)
    other[0, 1] = 1e4
    assert js_divergence(far, other) == pytest.approx(math.log(2), rel=1e-4)  # disjoint supports: ln 2
    assert js_divergence(a.bfloat16(), a.bfloat16()) == pytest.approx(0.0, abs=1e-7)  # computed in fp32


def test_js_matches_the_definition():
    p, q = torch.softmax(torch.randn(3, 7), -1), torch.softmax(torch.randn(3, 7), -1)
    m = (p + q) / 2
    expect = (0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)).mean().item()
    assert js_divergence(p.log(), q.log()) == pytest.approx(expect, rel=1e-5)


def test_js_refuses_nan():
    a = torch.randn(2, 4)
    b = a.clone()
    b[0, 0] = float("nan")
    with pytest.raises(FloatingPointError):
        js_divergence(a, b)


def test_smooth_rank_keep_gather():
    s = torch.tensor([[0.0, 0.0, 5.0, 0.0, 0.0, 1.0]])
    sm = scoring.smooth(s, 3)
    assert sm[0, 1] == pytest.approx(5 / 3) and sm[0, 0] == 0 and sm[0, 5] == pytest.approx(1 / 3)
    protected = torch.tensor([False, False, False, False, False, True])
    order = scoring.rank(s, protected)
    assert order[0, :2].tolist() == [5, 2]
    idx = scoring.keep_indices(order, 2)
    assert idx.tolist() == [[2, 5]]
    k = torch.arange(12.0).view(1, 1, 6, 2)
    gk, gv = scoring.gather((k, k + 100), idx)
    assert gk[0, 0].tolist() == [[4.0, 5.0], [10.0, 11.0]] and gv[0, 0, 0, 0] == 104
    assert scoring.count_for(0.1, 375) == 37 and scoring.count_for(0.1, 3) == 1
    with pytest.raises(ValueError, match="kernel"):
        scoring.smooth(s, 2)


def make_oracle(cost_per_layer):
    """JS grows additively with how much each layer is pruned (cost[layer][count])."""
    calls = []

    def trial(assign):
        calls.append(dict(assign))
        return sum(cost_per_layer[layer][n] for layer, n in assign.items())

    return trial, calls


@pytest.mark.parametrize("search", ["greedy", "bisect"])
def test_searches_respect_the_bound_and_go_top_down(search):
    cost = {l: {1: 0.004 if l >= 4 else 0.02, 2: 0.001, 5: 0.0005} for l in range(8)}
    trial, calls = make_oracle(cost)
    res = {"greedy": pruning.greedy, "bisect": pruning.bisect}[search]([[1, 2, 5]] * 8, trial, 0.01)
    final = sum(cost[l][n] for l, n in res.kept.items())
    assert final <= 0.01 and all(v <= 0.01 for v in res.js.values())
    assert res.trials == len(calls)
    for call in calls:  # layers below the lowest tested layer are never pruned in an accepted state
        low = min(call)
        assert all(l >= low for l in call)


def test_bisect_needs_one_trial_when_every_layer_takes_the_smallest_budget():
    trial, _ = make_oracle({l: {1: 0.001, 2: 0.0} for l in range(16)})
    res = pruning.bisect([[1, 2]] * 16, trial, 0.05)
    assert res.trials == 1 and res.kept == {l: 1 for l in range(16)}
    assert pruning.greedy([[1, 2]] * 16, trial, 0.05).trials == 16


def test_greedy_is_the_reference_rule():
    cost = {l: {1: 0.006, 2: 0.001} for l in range(3)}
    trial, _ = make_oracle(cost)
    res = pruning.greedy([[1, 2]] * 3, trial, 0.01)
    assert res.kept == {2: 1, 1: 2, 0: 2}  # top layer takes the smallest; then the budget is nearly spent


def test_per_layer_ladders_warm_start_and_empty_ladders_stay_full():
    trial, calls = make_oracle({0: {2: 0.001}, 1: {1: 0.5, 2: 0.001}, 2: {}})
    res = pruning.bisect([[2], [2], []], trial, 0.01)
    assert res.kept == {0: 2, 1: 2} and res.trials == 1 and 2 not in calls[0]  # one trial certifies the block


def test_warm_start_offers_a_rotating_quarter_of_the_layers_one_rung_down():
    """A warm start begins each layer's ladder at its previous rung, except a rotating window of a quarter of the
    layers that begins one rung lower: over four chunks every layer (a full one too) may move back down."""
    prev = [3, 3, 3, 3, 0, 1, 2, 3]
    counts, seen = [1, 2, 5], []

    def cold(chunk):
        raise AssertionError("a chunk with a previous one must not be searched from scratch")

    def starts(index):  # the first count each layer's ladder offers (the full length 10 when the ladder is empty)
        seen.clear()
        chunk = pruning.ChunkSearch(counts, 10, 8, lambda a: seen.append(dict(a)) or 0.0, 0.01, index, prev)
        res = pruning.WarmBisect(cold)(chunk)
        return [res.kept.get(l, 10) for l in range(8)]

    first = dict(zip([1, 2, 5], range(3)))
    rungs = lambda index: [first.get(n, 3) for n in starts(index)]  # noqa: E731
    assert rungs(1) == [3, 3, 2, 2, 0, 1, 2, 3] and len(seen) == 1  # everything passes: one trial certifies it
    lowered = [{l for l, (a, b) in enumerate(zip(prev, rungs(i))) if b < a} for i in range(4)]
    assert lowered == [{0, 1}, {2, 3}, {5}, {6, 7}]  # layer 4 is already at the bottom rung
    chunk0 = pruning.ChunkSearch(counts, 10, 8, lambda a: 0.0, 0.01, 0, None)
    assert pruning.WarmBisect(pruning.Greedy())(chunk0).kept == {l: 1 for l in range(8)}


def test_strategies_come_from_the_yaml_keys():
    assert isinstance(pruning.strategy("greedy", None), pruning.Greedy)
    assert isinstance(pruning.strategy("bisect", None), pruning.Bisect)
    warm = pruning.strategy("greedy", "bisect")
    assert isinstance(warm, pruning.WarmBisect) and isinstance(warm.cold, pruning.Greedy)
    assert isinstance(pruning.strategy("bisect", "path"), pruning.WarmPath)
    for bad in (("greedy2", None), ("greedy", "path2")):
        with pytest.raises(ValueError, match=bad[0] if bad[0] != "greedy" else bad[1]):
            pruning.strategy(*bad)


def test_budget_path_raises_the_cheapest_rung_first_and_ends_unpruned():
    rungs = [
        [(1, 0.5), (2, 0.1), (4, 0.0)],  # layer 0: its first step removes 0.4 of cost for 1 entry
        [(1, 0.2), (2, 0.15), (4, 0.0)],
        [(4, 0.0)],
    ]  # a layer with nothing to prune never appears
    path = pruning.budget_path(rungs)
    assert path[0] == {0: 1, 1: 1} and path[1] == {0: 2, 1: 1} and path[-1] == {}
    assert len(path) == 5  # one step per rung above the first
    kept = [sum(a.values()) + 4 * (2 - len(a)) for a in path]
    assert kept == sorted(kept)  # retention only grows along the path


@pytest.mark.parametrize("start", [0, 3, 7, 20, 50])
def test_gallop_finds_the_first_passing_assignment_in_few_trials(start):
    path = [{0: t} for t in range(40)] + [{}]
    js = lambda a: 0.1 * max(0, 25 - a[0]) / 25  # noqa: E731  passes from t = 24 on (δ = 0.005)
    calls = []
    res = pruning.gallop(path, lambda a: calls.append(a) or js(a), 0.005, start)
    assert res.kept == {0: 24} and res.js == {0: js({0: 24})} and res.trials == len(calls)
    assert res.trials <= 2 * (abs(24 - start).bit_length() + 1)
    assert pruning.gallop([{0: 1}, {}], lambda a: 1.0, 0.005, 0).kept == {}  # nothing passes: prune nothing


def test_chunks():
    assert chunks(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError, match="chunk_size"):
        chunks([1], 0)


def test_renderer_spans_come_from_the_template(llama):
    from emloc.data.base import Example

    r = llama.renderer("Be brief.")
    row = r.demo(Example("a", "What is red?", "a colour"))
    tok = llama.tokenizer
    assert tok.decode([i for i, k in zip(row.ids, row.kinds) if k == ANSWER]) == "a colour"
    assert tok.decode([i for i, k in zip(row.ids, row.kinds) if k == QUESTION]) == "What is red?"
    targets = [i for i, t in zip(row.ids, row.targets) if t]
    assert targets[-1] == r.end_of_turn and tok.decode(targets[:-1]) == "a colour"
    full = tok.apply_chat_template(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is red?"},
            {"role": "assistant", "content": "a colour"},
        ],
        tokenize=False,
    )
    assert tok.decode(r.preamble().ids + row.ids) == full


def test_probe_rows_add_the_reference_end_of_turn_row():
    from emloc.engine.prompts import Row, collate

    # template, answer x2, end of turn, trailing template; a second, shorter row (right-padded)
    rows = [
        Row([1, 2, 3, 4, 5], [0, 3, 3, 0, 0], [False, True, True, True, False]),
        Row([1, 2, 3], [0, 3, 0], [False, True, True]),
    ]
    batch = collate(rows, pad_id=0)
    assert batch.probe_rows(False).tolist() == [[True, True, True, False, False], [True, True, False, False, False]]
    assert batch.probe_rows(True).tolist() == [[True, True, True, True, False], [True, True, True, False, False]]


def test_decision_rows_are_the_rows_predicting_each_first_answer_token():
    from emloc.engine.prompts import Row, collate

    rows = [
        Row([1, 2, 3, 4, 5], [0, 3, 3, 0, 0], [False, True, True, True, False]),
        Row([1, 2, 3], [0, 3, 0], [False, True, True]),
    ]
    assert collate(rows, pad_id=0).decision_rows().tolist() == [[True] + [False] * 4, [True] + [False] * 4]
