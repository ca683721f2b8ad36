"""EMLoC-E2E's promises on tiny models: the divergence it records for each chunk is the end-to-end divergence of
held-out probes (the next chunk's demonstrations) from the full context, recomputed independently, and it is ≤ δ;
more δ never keeps more; its knobs reproduce EMLoC's halves. Lossless δ = 0, immutability and resume come from the
shared matrix (test_methods.py).

pytest tests/methods/test_e2e.py
"""

import pytest

from emloc.engine.attention import AttentionContext
from emloc.engine.compress import FullContext
from emloc.engine.divergence import js_divergence
from emloc.methods.e2e import EndToEnd
from tests.conftest import make_demos

INSTR = "Name the colour."


def probe_js(adapter, memory, full, k: int, demos, chunk: int) -> float:
    """JS at the decision rows of the 8 demos after chunk k (then from the start), after memory[:k] vs full[:k]."""
    entries, tokens, offset = memory.chunk_ends()[k]
    own = range(k * chunk, min((k + 1) * chunk, len(demos)))
    after = list(range(own.stop, min(len(demos), own.stop + 8)))
    probe = [demos[i] for i in after + [i for i in range(len(demos)) if i not in own and i not in after]][:8]
    r = adapter.renderer(INSTR)
    batch = adapter.collate([r.demo(d) for d in probe])
    prep = adapter.prepare(batch, offset, pack=True)
    rows = prep.select(batch.decision_rows())

    def logits(prefix):
        out, _ = adapter.run_layers(prep.hidden, prep.positions, prep.seg, AttentionContext(prefix=prefix))
        return adapter.lm_logits(out[rows])

    return js_divergence(logits(memory.prefix(entries)), logits(full.prefix([tokens] * full.num_layers)))


@pytest.mark.parametrize("family", ["llama", "qwen2_vl"])
def test_recorded_divergence_is_the_end_to_end_divergence_and_within_delta(family, demos_for):
    from emloc.models.loading import load

    adapter = load(f"tiny:{family}")
    demos, delta = demos_for(adapter, 9), 0.02
    memory = EndToEnd(chunk_size=3, js_threshold=delta, show_progress=False).build(adapter, demos, INSTR)
    full = FullContext(show_progress=False).build(adapter, demos, INSTR)
    assert memory.retention < 1, "nothing was pruned: the test would be vacuous"
    for k, c in enumerate(memory.chunks):
        recorded = {v for v in c.js if v is not None}
        assert len(recorded) == 1
        (value,) = recorded
        assert value <= delta or all(n == c.num_tokens for n in c.kept)  # pruned only within the bound
        assert probe_js(adapter, memory, full, k, demos, 3) == pytest.approx(value, rel=1e-3, abs=1e-6)


def test_raising_the_threshold_never_keeps_more(llama):
    demos = make_demos(9)
    totals = [sum(EndToEnd(chunk_size=3, js_threshold=d).build(llama, demos, INSTR).lengths())
              for d in (0.0, 1e-3, 1e-2, 0.1, 0.5)]  # fmt: skip
    assert totals == sorted(totals, reverse=True) and totals[0] > totals[-1]


def test_knobs_and_bad_values():
    assert EndToEnd().describe() == "EMLoC-E2E"
    assert EndToEnd(probes="self", teacher="local").describe() == "EMLoC-E2E (probes=self, teacher=local)"
    for kwargs, match in (({"probes": "all"}, "probes"), ({"teacher": "x"}, "teacher"),
                          ({"allocation": "pyramid"}, "allocation"), ({"max_trials": 0}, "max_trials"),
                          ({"js_threshold": -1}, "js_threshold")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            EndToEnd(**kwargs)


@pytest.mark.parametrize("previous", [None, 0.45, 0.9, 0.05])
def test_tau_search_finds_the_largest_passing_value_within_its_trials(previous):
    method = EndToEnd(js_threshold=0.05, max_trials=5)
    calls = []
    tau, value, trials = method._search(lambda t: calls.append(t) or t / 10, previous)  # passes up to τ = 0.5
    assert trials == len(calls) <= 5 and value == pytest.approx(tau / 10) and value <= 0.05
    assert 0.5 - tau < 0.1 and all(t > 0 for t in calls)  # never spends a trial on τ = 0 (the unpruned chunk)
    assert method._search(lambda t: 1.0)[0] == 0.0  # nothing passes: prune nothing


def test_heldout_inputs_probe_every_chunk_and_the_runner_draws_them_apart(llama, tmp_path):
    """With held-out inputs (`probes="heldout"`), each chunk's recorded divergence is that of those inputs' next token
    after the memory so far against the full context so far; the runner draws them from neither demos nor queries."""
    from emloc.engine.fidelity import answer_logits
    from emloc.experiment.runner import plan
    from tests.conftest import compose

    demos, held = make_demos(9), make_demos(5, offset=50)
    memory = EndToEnd(chunk_size=3, js_threshold=0.02, probes="heldout", probe_demos=5).build(
        llama, demos, INSTR, probes=held
    )
    full = FullContext().build(llama, demos, INSTR)
    r = llama.renderer(INSTR)
    for k, c in enumerate(memory.chunks):
        entries, tokens, offset = memory.chunk_ends()[k]
        ours = answer_logits(llama, memory.prefix(entries), offset, r, held)
        ref = answer_logits(llama, full.prefix([tokens] * full.num_layers), offset, r, held)
        assert js_divergence(ours, ref) == pytest.approx(c.js[0], rel=1e-3, abs=1e-6)
    p = plan(compose(["debug=tiny", "method=emloc_e2e", "task.num_shots=8", "task.num_queries=8"], tmp_path))
    assert len(p.probes) == 8 and not {q.uid for q in p.probes} & {d.uid for d in p.demos + p.queries}
