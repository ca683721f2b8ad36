"""Invariants of the core engine on tiny random models of every family (fp32, CPU, offline).

pytest tests/engine/test_compress.py
"""

import pytest
import torch

from emloc.data.base import Example
from emloc.engine.attention import AttentionContext
from emloc.engine.compress import FullContext, ZeroShot
from emloc.engine.generate import answer, generate, loglikelihood, score_choices
from emloc.engine.memory import MemoryMismatchError, TaskMemory
from emloc.methods.emloc import EMLoC
from tests.conftest import make_demos

INSTR = "Name the colour."


def query_logits(adapter, memory, query: Example) -> torch.Tensor:
    renderer = adapter.renderer(INSTR)
    prep = adapter.prepare(adapter.collate([renderer.query(query)]), memory.position_offset)
    out, _ = adapter.run_layers(prep.hidden, prep.positions, prep.seg, AttentionContext(prefix=memory.prefix()))
    return adapter.lm_logits(out)[0, -1]


def reference_logits(adapter, demos, query) -> torch.Tensor:
    """The uncompressed many-shot prompt run through the model's own forward (no memory code involved)."""
    r = adapter.renderer(INSTR)
    row = sum([r.demo(d) for d in demos], r.preamble()) + r.query(query)
    batch = adapter.collate([row])
    kwargs = {"input_ids": batch.ids}
    if batch.vision:
        from emloc.engine.prompts import IMAGE

        kwargs.update(batch.vision, mm_token_type_ids=(batch.kinds == IMAGE).int())
    with torch.no_grad():
        return adapter.model(**kwargs).logits[0, -1]


def test_wrapper_is_transparent_without_a_memory(llama):
    ids = torch.randint(10, 500, (2, 9))
    with torch.no_grad():
        ours = llama.model(ids).logits
        llama.model.set_attn_implementation("sdpa")
        try:
            stock = llama.model(ids).logits
        finally:
            llama.model.set_attn_implementation("emloc_sdpa")
    assert torch.allclose(ours, stock, atol=1e-6)


@pytest.mark.parametrize(
    "method",
    [
        FullContext(chunk_size=2),
        EMLoC(chunk_size=2, js_threshold=0.0),
        EMLoC(chunk_size=3, js_threshold=0.5, keep_ratios=(1.0,)),
    ],
    ids=str,
)
def test_lossless_settings_reproduce_the_full_context(adapter, demos_for, method):
    demos, query = demos_for(adapter, 5), demos_for(adapter, 1, offset=40)[0]
    memory = method.build(adapter, demos, INSTR)
    assert len(memory.chunks) >= 2, "the chunk carry must be exercised"
    assert memory.retention == 1.0
    diff = (query_logits(adapter, memory, query) - reference_logits(adapter, demos, query)).abs().max().item()
    assert diff < 1e-4


def test_chunk_size_at_least_the_demo_count_is_the_single_pass(qwen_vl, demos_for):
    demos = demos_for(qwen_vl, 4)
    one = FullContext(chunk_size=None).build(qwen_vl, demos, INSTR)
    big = EMLoC(chunk_size=10, js_threshold=0.0).build(qwen_vl, demos, INSTR)
    assert len(big.chunks) == 1 and one.lengths() == big.lengths()
    assert all(torch.allclose(a[0], b[0], atol=1e-6) for a, b in zip(one.prefix(), big.prefix()))


def test_mrope_offset_is_the_position_extent_not_the_token_count(qwen_vl, demos_for):
    memory = FullContext(chunk_size=2).build(qwen_vl, demos_for(qwen_vl, 4), INSTR)
    assert 0 < memory.position_offset < memory.num_source_tokens  # images advance positions by max(h, w) only


@pytest.mark.parametrize(
    "search, warm_search",
    [("greedy", "bisect"), ("bisect", None), ("greedy", "path"), ("greedy", None)],
)
def test_every_accepted_layer_meets_the_bound_and_stats_match(llama, search, warm_search):
    demos = make_demos(9)
    delta = 0.02
    memory = EMLoC(chunk_size=3, js_threshold=delta, search=search, warm_search=warm_search).build(llama, demos, INSTR)
    assert any(k < c.num_tokens for c in memory.chunks for k in c.kept), "nothing was pruned: the test is vacuous"
    for c in memory.chunks:
        for kept, js in zip(c.kept, c.js):
            assert (js is None) == (kept == c.num_tokens) and (js is None or 0 <= js <= delta)
    assert memory.lengths() == [sum(c.kept[l] for c in memory.chunks) for l in range(memory.num_layers)]


def test_raising_the_threshold_never_keeps_more(llama):
    demos = make_demos(8)
    totals = [
        sum(EMLoC(chunk_size=4, js_threshold=d).build(llama, demos, INSTR).lengths())
        for d in (0.0, 1e-4, 1e-3, 1e-2, 0.1)
    ]
    assert totals == sorted(totals, reverse=True) and totals[0] > totals[-1]


def test_pruned_memory_equals_full_memory_with_pruned_slots_masked(llama_eager):
    demos, query = make_demos(6), make_demos(1, offset=50)[0]
    pruned = EMLoC(chunk_size=None, js_threshold=0.05).build(llama_eager, demos, INSTR)  # one chunk: same keys
    full = FullContext().build(llama_eager, demos, INSTR)
    assert pruned.lengths() != full.lengths(), "nothing was pruned"
    heads = llama_eager.model.config.num_attention_heads
    bias = {}
    for layer in range(full.num_layers):
        fk, pk = full.kv(layer)[0][0], pruned.kv(layer)[0][0]  # (kv_heads, n, d)
        kept = (fk[:, :, None, :] == pk[:, None, :, :]).all(-1).any(-1)  # (kv_heads, n)
        assert int(kept.sum()) == pk.shape[0] * pk.shape[1]
        per_query_head = kept.repeat_interleave(heads // kept.shape[0], dim=0)
        bias[layer] = torch.where(per_query_head, 0.0, torch.finfo(torch.float32).min)[None, :, None, :]
    r = llama_eager.renderer(INSTR)
    prep = llama_eager.prepare(llama_eager.collate([r.query(query)]), full.position_offset)
    masked, _ = llama_eager.run_layers(
        prep.hidden, prep.positions, prep.seg, AttentionContext(prefix=full.prefix(), prefix_bias=bias)
    )
    assert torch.allclose(llama_eager.lm_logits(masked)[0, -1], query_logits(llama_eager, pruned, query), atol=1e-5)


def test_memory_is_unchanged_by_queries_and_survives_save_load(adapter, demos_for, tmp_path):
    demos = demos_for(adapter, 4)
    memory = EMLoC(chunk_size=2, js_threshold=0.05).build(adapter, demos, INSTR)
    before = memory.fingerprint()
    queries = demos_for(adapter, 3, offset=20)
    r = adapter.renderer(INSTR)
    first = generate(adapter, memory, r, queries, max_new_tokens=4)
    scores = loglikelihood(adapter, memory, r, queries[0], ["red", "green", "blue"])
    assert memory.fingerprint() == before
    loaded = TaskMemory.load(memory.save(tmp_path / "mem"), expect=adapter.signature())
    assert loaded.fingerprint() == before and loaded.lengths() == memory.lengths()
    assert generate(adapter, loaded, r, queries, max_new_tokens=4) == first
    assert loglikelihood(adapter, loaded, r, queries[0], ["red", "green", "blue"]) == scores


def test_loading_into_another_model_is_refused(llama, tmp_path):
    from emloc.models.loading import load

    path = ZeroShot().build(llama, [], INSTR).save(tmp_path / "m")
    other = load("tiny:llama", seed=1)
    with pytest.raises(MemoryMismatchError, match="model_hash"):
        TaskMemory.load(path, expect=other.signature())


def test_batched_generation_equals_one_by_one(llama):
    memory = FullContext(chunk_size=2).build(llama, make_demos(4), INSTR)
    r = llama.renderer(INSTR)
    queries = [
        Example("a", "Item 7: colour?", "red"),
        Example("b", "A much longer question about item 9: colour?", "blue"),
    ]
    assert generate(llama, memory, r, queries, 6) == [generate(llama, memory, r, [q], 6)[0] for q in queries]


def test_loglikelihood_scores_the_answer_the_full_model_would(llama):
    demos, query = make_demos(4), Example("q", "Item 99: what colour is it?", "red", choices=("red", "green"))
    memory = FullContext().build(llama, demos, INSTR)
    r = llama.renderer(INSTR)
    row = sum([r.demo(d) for d in demos], r.preamble()) + r.query(query)
    cand = r.answer_row("green")
    ids = torch.tensor([row.ids + cand.ids])
    with torch.no_grad():
        logp = torch.log_softmax(llama.model(ids).logits[0].float(), -1)
    start = len(row.ids)
    expect = sum(logp[start + j - 1, t].item() for j, t in enumerate(cand.ids) if cand.targets[j])
    assert loglikelihood(llama, memory, r, query, ["red", "green"])[1] == pytest.approx(expect, abs=1e-4)
    assert answer(llama, memory, r, [query])[0] in ("red", "green")


def test_batched_scoring_equals_one_by_one(llama):
    memory = EMLoC(chunk_size=2, js_threshold=0.05).build(llama, make_demos(4), INSTR)  # per-layer lengths differ
    r = llama.renderer(INSTR)
    queries = [
        Example("a", "Item 7: colour?", "red"),
        Example("b", "A much longer question about item 9: colour?", "blue"),
        Example("c", "Item 3?", "green"),
    ]
    cands = [["red", "green", "a much longer colour name"], ["blue"], ["green", "red"]]
    batched = score_choices(llama, memory, r, queries, cands)
    assert [len(s) for s in batched] == [3, 1, 2]
    for q, c, s in zip(queries, cands, batched):
        assert s == pytest.approx(loglikelihood(llama, memory, r, q, c), abs=1e-4)
    with pytest.raises(ValueError, match="'b' has no candidate"):
        score_choices(llama, memory, r, queries, [["red"], [], ["red"]])


def test_single_demo_chunks_work(llama):
    memory = EMLoC(chunk_size=2, js_threshold=0.01).build(llama, make_demos(5), INSTR)
    assert [c.num_demos for c in memory.chunks] == [2, 2, 1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"chunk_size": 0}, "chunk_size"),
        ({"js_threshold": -0.1}, "js_threshold"),
        ({"js_threshold": float("nan")}, "js_threshold"),
        ({"keep_ratios": (0.5, 0.2)}, "keep_ratios"),
        ({"keep_ratios": (0.0, 0.5)}, "keep_ratios"),
        ({"keep_ratios": (0.5, 1.5)}, "keep_ratios"),
        ({"pool_kernel": 4}, "kernel"),
        ({"search": "annealing"}, "search"),
        ({"warm_search": "path2"}, "path2"),
    ],
)
def test_bad_parameters_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EMLoC(**kwargs)


def test_bad_inputs_fail_before_any_forward(llama):
    with pytest.raises(ValueError, match="at least one demonstration"):
        EMLoC().build(llama, [])
    with pytest.raises(ValueError, match="no answer"):
        Example("x", "question", "  ")
    with pytest.raises(NotImplementedError, match="GPT2LMHeadModel"):
        from transformers import GPT2Config, GPT2LMHeadModel

        from emloc.models.loading import adapter_for

        adapter_for(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=50)), llama.tokenizer)
