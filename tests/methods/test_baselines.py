"""The fixed-retention baselines as their authors define them (windows, sinks, schedules, scores), with answer
protection; each on the tiny Llama. Invariants every method shares are in test_methods.py.

pytest tests/methods/test_baselines.py
"""

import math

import pytest
import torch
from transformers.models.llama.modeling_llama import rotate_half

from emloc.engine.attention import AttentionContext
from emloc.engine.compress import ChunkState, FullContext
from emloc.methods.baselines import H2O, PyramidKV, RandomKeep, SnapKV, StreamingLLM
from emloc.methods.expected_attention import ExpectedAttention, mean_rotation
from emloc.methods.kvzip import KVzip
from tests.conftest import make_demos

INSTR = "Name the colour."
UNIFORM = [SnapKV, H2O, StreamingLLM, RandomKeep, ExpectedAttention]


class Spy:
    """Wraps a method to record the ChunkState and the Selection of every chunk."""

    def __init__(self, method):
        self.method, self.seen = method, []
        original = method.select

        def select(adapter, state: ChunkState):
            chosen = original(adapter, state)
            self.seen.append((state, chosen))
            return chosen

        method.select = select


@pytest.mark.parametrize("cls", UNIFORM)
def test_uniform_baselines_keep_their_budget_in_every_layer(llama, cls):
    memory = cls(keep_ratio=0.25, chunk_size=3, show_progress=False).build(llama, make_demos(6), INSTR)
    for c in memory.chunks:
        assert c.kept == [max(1, int(0.25 * c.num_tokens))] * memory.num_layers
    assert 0.15 < memory.retention < 0.3


def kept_positions(state, chosen, layer):
    idx = chosen.keep[layer]
    return set(range(state.length)) if idx is None else set(idx[0].tolist())


def test_snapkv_keeps_its_window_and_h2o_its_recent_half(llama):
    for method, recent in (
        (SnapKV(keep_ratio=0.5, window=4, chunk_size=3), 4),
        (H2O(keep_ratio=0.5, chunk_size=3), None),
    ):
        spy = Spy(method)
        method.build(llama, make_demos(6), INSTR)
        for state, chosen in spy.seen:
            n = max(1, int(0.5 * state.length))
            tail = set(range(state.length - (recent or n // 2), state.length))
            for layer in range(llama.num_layers):
                assert tail <= kept_positions(state, chosen, layer)


def test_streamingllm_keeps_the_first_sinks_and_each_chunks_tail(llama):
    spy = Spy(StreamingLLM(keep_ratio=0.3, chunk_size=3))
    spy.method.build(llama, make_demos(6), INSTR)
    for state, chosen in spy.seen:
        n = max(1, int(0.3 * state.length))
        sinks = set(range(4)) if state.index == 0 else set()
        expect = sinks | set(range(state.length - (n - len(sinks)), state.length))
        assert all(kept_positions(state, chosen, l) == expect for l in range(llama.num_layers))


def test_pyramidkv_budgets_fall_from_bottom_to_top_with_the_uniform_total():
    method = PyramidKV(keep_ratio=0.3)
    for n, layers in ((200, 30), (57, 4), (1000, 28)):
        budgets = [method.budget(l, layers, n) for l in range(layers)]
        assert budgets == sorted(budgets, reverse=True) and budgets[0] > budgets[-1]
        assert abs(sum(budgets) - 0.3 * n * layers) <= layers  # the mean is the uniform budget (up to rounding)
    steep = [method.budget(l, 30, 1000) for l in (0, 29)]
    assert steep[0] / steep[1] > 15  # β = 20: the published schedule, far steeper than 1.5x -> 0.5x


def test_answer_protection_keeps_every_answer_token_the_budget_allows(llama):
    for cls in (SnapKV, StreamingLLM, RandomKeep, KVzip, ExpectedAttention):
        memory = cls(keep_ratio=0.5, chunk_size=3, protect_answers=True).build(llama, make_demos(6), INSTR)
        for c in memory.chunks:  # kept_by_kind: entries per head of each kind
            assert all(k["answer"] == c.tokens_by_kind["answer"] for k in c.kept_by_kind), cls.__name__
        assert cls(protect_answers=True).describe().endswith("+ answer protection")


def test_kvzip_spends_one_budget_over_all_layers_and_scores_by_peak_attention(llama):
    spy = Spy(KVzip(keep_ratio=0.3, chunk_size=3))
    memory = spy.method.build(llama, make_demos(6), INSTR)
    for state, _ in spy.seen:
        budgets = spy.method.budgets(spy.method.layer_scores(llama, state), state)
        assert abs(sum(budgets) - 0.3 * state.length * llama.num_layers) <= llama.num_layers
    assert len({tuple(c.kept) for c in memory.chunks if len(set(c.kept)) > 1}) >= 1  # non-uniform across layers
    uniform = KVzip(keep_ratio=0.3, chunk_size=3, uniform_layers=True).build(llama, make_demos(6), INSTR)
    assert all(len(set(c.kept)) == 1 for c in uniform.chunks)


def test_peak_scores_are_the_largest_attention_of_any_row_and_group_head():
    torch.manual_seed(0)
    q, k = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 7, 8)  # 4 query heads over 2 KV heads; 7 keys
    ctx = AttentionContext(score_rows=torch.ones(1, 5, dtype=torch.bool), score_reduce="max")
    from emloc.engine.attention import _accumulate_scores

    mask = torch.zeros(1, 1, 5, 7)
    _accumulate_scores(ctx, 0, q, k, mask, m=7, start=0, scaling=None)
    probs = torch.softmax(q[0] @ k[0].repeat_interleave(2, 0).transpose(-1, -2) / math.sqrt(8), -1)  # (4, 5, 7)
    expect = probs.amax(1).view(2, 2, 7).amax(1)
    assert torch.allclose(ctx.tail_scores[0], expect, atol=1e-6)


def test_mean_rotation_is_the_average_of_the_rotations():
    torch.manual_seed(0)
    d, t = 8, 6
    angles = torch.rand(t, d // 2) * 3
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    x = torch.randn(d)
    rotated = torch.stack([x * cos[i] + rotate_half(x) * sin[i] for i in range(t)]).mean(0)
    assert torch.allclose(mean_rotation(cos, sin) @ x, rotated, atol=1e-6)


def test_expected_attention_scores_rank_keys_by_the_modelled_queries(llama):
    """Without covariance and value norms, the score is softmax(R̄μ·k/√d), mean over the group: recompute it."""
    spy = Spy(ExpectedAttention(keep_ratio=0.5, chunk_size=6, use_covariance=False, use_vnorm=False))
    spy.method.build(llama, make_demos(6), INSTR)
    state, _ = spy.seen[0]
    scores = spy.method.layer_scores(llama, state)
    layer = llama.layers[1]
    q = layer.self_attn.q_proj(layer.input_layernorm(state.inputs[1]))[0].view(state.length, -1, 16)[4:]
    future = torch.arange(state.offset_after, state.offset_after + 512)
    cos, sin = llama.rotary(state.inputs[0], future[None, None])
    mu = mean_rotation(cos[0], sin[0]) @ q.mean(0).T  # (d, heads)
    keys = state.kv[1][0][0].repeat_interleave(2, 0)  # (heads, n, d)
    expect = torch.softmax(torch.einsum("hnd,dh->hn", keys, mu) / 4, -1).view(2, 2, -1).mean(1)
    assert torch.allclose(scores[1], expect, atol=1e-5)


def test_baselines_are_lossless_at_full_retention(llama):
    full = FullContext().build(llama, make_demos(6), INSTR)
    for cls in (*UNIFORM, PyramidKV, KVzip):
        method = cls(chunk_size=3, **cls.lossless)
        assert method.build(llama, make_demos(6), INSTR).lengths() == full.lengths()


def test_capped_answer_protection_leaves_room_in_a_small_budget(llama):
    """With `protect_share`, answer tokens take at most that share of each budget (the best-scoring of them), so the
    rest of the budget still goes by score; without it every answer token is ranked first."""
    from emloc.methods.kvzip import KVzip
    from tests.conftest import make_demos

    demos = make_demos(8)
    kept = {}
    for share in (None, 0.25):
        memory = KVzip(keep_ratio=0.3, chunk_size=4, protect_answers=True, protect_share=share,
                       show_progress=False).build(llama, demos, "Name the colour.")  # fmt: skip
        kept[share] = [(c.kept_by_kind[layer]["answer"], c.kept[layer]) for c in memory.chunks
                       for layer in range(memory.num_layers)]  # fmt: skip
    assert all(answers <= int(0.25 * budget) for answers, budget in kept[0.25])
    assert sum(a for a, _ in kept[None]) > sum(a for a, _ in kept[0.25])
    with pytest.raises(ValueError, match=r"protect_share must be in \(0, 1\] or null, got 1.5"):
        KVzip(protect_share=1.5)
