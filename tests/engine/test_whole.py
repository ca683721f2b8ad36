"""The whole-context path (`emloc.engine.whole`): blocked prefill is the full context's KV, blocks respect their size,
KVzip's scores are what a direct computation with the stock attention gives, EMLoC-G's size is the smallest rung
within δ on tuning inputs its ranking did not see, and bad values are one line naming the key."""

import pytest
import torch
from transformers.cache_utils import DynamicCache

from emloc.data.base import Example
from emloc.engine.compress import FullContext
from emloc.engine.divergence import js_rows
from emloc.engine.fidelity import answer_logits, answer_row_logits
from emloc.engine.prompts import Row
from emloc.engine.whole import Prefilled, input_scores, reconstruction_scores
from emloc.methods.emloc_g import EMLoCG
from emloc.methods.kvzip import KVzipPublished
from tests.conftest import make_demos
from tests.engine.test_compress import INSTR


@pytest.mark.parametrize("block", [30, 80, 4_000])
def test_blocked_prefill_is_the_full_context(llama, block):
    demos = make_demos(8)
    method = KVzipPublished(keep_ratio=1.0, block_tokens=block, show_progress=False)
    r = llama.renderer(INSTR)
    groups = method.groups(r, demos)
    assert [d for g in groups for d in g] == demos
    sizes = [len(r.preamble().ids) * (i == 0) + sum(len(r.demo(d).ids) for d in g) for i, g in enumerate(groups)]
    assert all(s <= block or len(g) == 1 for s, g in zip(sizes, groups)) and (len(groups) > 1) == (block < 4_000)
    blocked = FullContext.build(method, llama, demos, INSTR)  # the prefill alone: the chunk loop over the blocks
    full = FullContext().build(llama, demos, INSTR)
    assert blocked.position_offset == full.position_offset
    for layer in range(full.num_layers):
        for a, b in zip(blocked.kv(layer), full.kv(layer)):
            assert torch.allclose(a, b, atol=1e-5)


def _prefilled(adapter, demos, block: int) -> Prefilled:
    method = KVzipPublished(block_tokens=block, show_progress=False)
    r = adapter.renderer(INSTR)
    full = FullContext.build(method, adapter, demos, INSTR)
    rows = [sum((r.demo(d) for d in g), r.preamble() if i == 0 else Row([], [], []))
            for i, g in enumerate(method.groups(r, demos))]  # fmt: skip
    return Prefilled(full, r, [adapter.collate([row]) for row in rows], len(r.preamble().ids))


def test_kvzip_scores_are_the_stock_attention_of_the_reconstruction(llama_eager):
    """Direct computation: for each block, the reconstruction row through the stock model (eager attention, a stock
    `DynamicCache` holding [preamble | the block's span], output_attentions), its attention over the span, maxed over
    rows and the query heads of each KV group."""
    adapter, demos = llama_eager, make_demos(8)
    context = _prefilled(adapter, demos, block=60)
    assert len(context.blocks) > 1
    ours = reconstruction_scores(adapter, context, "Repeat.", "Go on from ", overlap=3)
    full, sink, model = context.memory, context.sink, adapter.model
    group = model.config.num_attention_heads // model.config.num_key_value_heads
    for i, ((first, end), block) in enumerate(zip(context.bounds, context.blocks)):
        prompt = "Repeat." if i == 0 else "Go on from " + context.renderer.tok.decode(
            context.blocks[i - 1].ids[0, -3:].tolist(), skip_special_tokens=True)  # fmt: skip
        ids = torch.tensor([(context.renderer.query(Example("r", prompt, "-")) + block.rows[0]).ids])
        lo = sink if first >= sink else 0
        cache = DynamicCache()
        for layer in range(full.num_layers):
            k, v = full.kv(layer)
            pieces = [(k[:, :, :sink], v[:, :, :sink])] if first >= sink else []
            pieces.append((k[:, :, first:end], v[:, :, first:end]))
            cache.update(torch.cat([p[0] for p in pieces], 2), torch.cat([p[1] for p in pieces], 2), layer)
        past = cache.get_seq_length()
        positions = full.position_offset + torch.arange(ids.shape[1])[None]
        mask = torch.ones(1, past + ids.shape[1], dtype=torch.long)
        out = model(input_ids=ids, cache=cache, position_ids=positions, attention_mask=mask,
                    output_attentions=True, use_cache=True)  # fmt: skip
        for layer, att in enumerate(out.attentions):  # (1, heads, rows, past + rows)
            span = att[0, :, :, lo:past]
            direct = span.amax(1).view(-1, group, span.shape[-1]).amax(1)  # (kv_heads, span)
            start = first if first >= sink else sink
            assert torch.allclose(ours[layer][:, start:end], direct[:, -(end - start) :], atol=1e-5)
            assert torch.isinf(ours[layer][:, :sink]).all()  # the preamble: KVzip's sink, always kept


def test_emloc_g_keeps_the_smallest_rung_within_delta_on_its_tuning_inputs(llama):
    demos, probes = make_demos(8), make_demos(6, offset=100)
    method = EMLoCG(delta=0.02, tuning_inputs=6, block_tokens=64, show_progress=False)
    memory = method.build(llama, demos, INSTR, probes=probes)
    sizing, chosen = memory.chunks[0].sizing, memory.retention
    assert sizing and memory.chunks[0].trials == len(sizing)
    within = [r for r, js in sizing if js <= 0.02]
    beyond = [r for r, js in sizing if js > 0.02]
    assert chosen == pytest.approx(min(within, default=1.0), abs=0.01)
    assert all(r < chosen for r in beyond)
    assert method.bound() == pytest.approx(0.04)
    with pytest.raises(ValueError, match="tuning inputs"):
        EMLoCG(delta=0.02, block_tokens=64, show_progress=False).build(llama, demos, INSTR)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: KVzipPublished(keep_ratio=0.0), "keep_ratio must be in (0, 1], got 0.0"),
        (lambda: KVzipPublished(keep_ratio=1.5), "keep_ratio must be in (0, 1], got 1.5"),
        (lambda: KVzipPublished(block_tokens=0), "block_tokens must be an integer >= 1, got 0"),
        (lambda: KVzipPublished(protect_share=0.0), "protect_share must be in (0, 1], got 0.0"),
        (lambda: EMLoCG(delta=-1.0), "delta must be >= 0, got -1.0"),
        (lambda: EMLoCG(ladder=(0.5, 0.2)), "ladder must be increasing fractions in (0, 1), got [0.5, 0.2]"),
        (lambda: EMLoCG(importance="norms"), "importance must be one of ['inputs', 'reconstruction'], got 'norms'"),
        (lambda: EMLoCG(rows="all"), "rows must be one of ['answers', 'prompt'], got 'all'"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(make, message):
    with pytest.raises(ValueError) as err:
        make()
    assert str(err.value) == message


def test_a_block_larger_than_the_models_context_is_refused_before_any_work(llama):
    limit = llama.model.config.max_position_embeddings
    with pytest.raises(ValueError, match=f"block_tokens={limit + 1} is larger than the model's context"):
        KVzipPublished(block_tokens=limit + 1).build(llama, make_demos(2), INSTR)


@pytest.mark.parametrize("block", [40, 4_000])
def test_h2o_whole_scores_are_the_column_sums_of_one_stock_forward(llama_eager, block):
    """Prefill scores (`prefill_rows`) summed over blocks equal, whatever the blocking, the attention every context
    token pays each entry in one stock forward of the whole context (eager, output_attentions), summed over the rows
    and the query heads of each KV group."""
    from emloc.methods.baselines import H2OWhole

    class Capture(H2OWhole, abstract=True):
        def score(self, adapter, context, probes):
            self.seen = context.observed
            return super().score(adapter, context, probes)

    adapter, demos = llama_eager, make_demos(8)
    method = Capture(keep_ratio=0.3, block_tokens=block, show_progress=False)
    memory = method.build(adapter, demos, INSTR)
    r = adapter.renderer(INSTR)
    ids = torch.tensor([sum((r.demo(d) for d in demos), r.preamble()).ids])
    out = adapter.model(input_ids=ids, output_attentions=True)
    group = adapter.model.config.num_attention_heads // adapter.model.config.num_key_value_heads
    for layer, att in enumerate(out.attentions):  # (1, heads, n, n)
        direct = att[0].sum(1).view(-1, group, ids.shape[1]).sum(1)
        assert torch.allclose(method.seen[layer], direct, atol=1e-4)
    assert memory.retention == pytest.approx(0.3, abs=0.01) and memory.head_lengths


def test_emloc_g_sizes_on_inputs_its_ranking_did_not_see(llama):
    """Cross-fitted sizing, computed directly: each trial's JS is the larger of (a) the first-token JS of each half of
    the tuning inputs (read after the prompt alone) on the memory of that size the other half ranked, pooled, and
    (b) the JS over every teacher-forced answer row on the memory itself, ranked by all the tuning inputs; (a) alone
    where it exceeds δ."""
    demos, probes = make_demos(8), make_demos(6, offset=100)
    method = EMLoCG(delta=0.02, tuning_inputs=6, block_tokens=64, show_progress=False)
    memory = method.build(llama, demos, INSTR, probes=probes)
    context = _prefilled(llama, demos, block=64)
    r, full = context.renderer, context.memory
    halves = [probes[0::2], probes[1::2]]
    ranked, everything = [input_scores(llama, context, h) for h in halves], input_scores(llama, context, probes)

    def logits(fn, m, inputs):
        return fn(llama, m.prefix(), m.position_offset, r, inputs)

    assert memory.chunks[0].sizing
    for rung, js in memory.chunks[0].sizing:
        first = torch.cat([js_rows(logits(answer_logits, method.keep(context, scores, rung), measured),
                                   logits(answer_logits, full, measured))
                           for scores, measured in ((ranked[0], halves[1]), (ranked[1], halves[0]))])  # fmt: skip
        kept = method.keep(context, everything, rung)
        rows = js_rows(logits(answer_row_logits, kept, probes)[0], logits(answer_row_logits, full, probes)[0])
        both = max(float(first.mean()), float(rows.mean()))
        # a rung failed at the first token records that alone (its answer-row pass is skipped): the same decision
        assert js == pytest.approx(float(first.mean()) if first.mean() > 0.02 else both, abs=1e-5)
        assert (js <= 0.02) == (both <= 0.02)
    chosen = min((rung for rung, js in memory.chunks[0].sizing if js <= 0.02), default=1.0)
    assert memory.head_lengths == method.keep(context, everything, chosen).head_lengths
    with pytest.raises(ValueError, match="tuning_inputs must be >= 2, got 1"):
        EMLoCG(tuning_inputs=1)


def test_answer_rows_mark_the_rows_a_prompt_alone_reads(llama):
    """The first answer row of each teacher-forced input is the row after its prompt: the same logits."""
    probes, full = make_demos(5, offset=100), FullContext().build(llama, make_demos(4), INSTR)
    r = llama.renderer(INSTR)
    rows, first = answer_row_logits(llama, full.prefix(), full.position_offset, r, probes)
    assert int(first.sum()) == len(probes) and len(rows) > len(probes)
    assert torch.allclose(rows[first], answer_logits(llama, full.prefix(), full.position_offset, r, probes), atol=1e-4)
