"""Per-head memories (`TaskMemory.select_heads`, `attention.Ragged`) and one global threshold (`scoring.global_keep`):
keep-all is the full context, a per-head selection is attention with the other entries masked out, the bytes are
the entries' and nothing else, and save/load round-trips."""

import pytest
import torch

from emloc.engine.attention import AttentionContext, Ragged
from emloc.engine.compress import FullContext
from emloc.engine.memory import CorruptMemoryError, TaskMemory
from emloc.engine.scoring import global_keep
from tests.conftest import make_demos
from tests.engine.test_compress import INSTR, query_logits


def _random_keep(memory: TaskMemory, seed: int = 0, low: float = 0.2) -> list[list[torch.Tensor]]:
    """A different random subset per (layer, KV head), of a different size each."""
    g, n = torch.Generator().manual_seed(seed), memory.num_source_tokens
    heads = memory.kv(0)[0].shape[1]
    keep = []
    for _ in range(memory.num_layers):
        sizes = (low + (1 - low) * torch.rand(heads, generator=g)) * n
        keep.append([torch.randperm(n, generator=g)[: max(1, int(s))] for s in sizes])
    return keep


def test_keeping_every_entry_per_head_is_the_full_context(adapter, demos_for):
    demos, query = demos_for(adapter, 5), demos_for(adapter, 1, offset=40)[0]
    full = FullContext().build(adapter, demos, INSTR)
    every = full.select_heads([[torch.arange(full.num_source_tokens)] * full.kv(0)[0].shape[1]] * full.num_layers)
    assert isinstance(every.kv(0), Ragged) and every.retention == 1.0 and every.nbytes() == full.nbytes()
    assert torch.allclose(query_logits(adapter, every, query), query_logits(adapter, full, query), atol=1e-5)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_a_per_head_selection_is_attention_with_the_other_entries_masked(attn, llama, llama_eager):
    adapter = llama if attn == "sdpa" else llama_eager
    full = FullContext().build(adapter, make_demos(6), INSTR)
    keep = _random_keep(full)
    pruned = full.select_heads(keep)
    assert len({n for lengths in pruned.head_lengths.values() for n in lengths}) > 1  # heads really differ
    group = adapter.model.config.num_attention_heads // full.kv(0)[0].shape[1]
    bias = {}
    for layer, heads in enumerate(keep):
        visible = torch.zeros(len(heads), full.num_source_tokens, dtype=torch.bool)
        for h, idx in enumerate(heads):
            visible[h, idx] = True
        per_query_head = visible.repeat_interleave(group, dim=0)
        bias[layer] = torch.where(per_query_head, 0.0, torch.finfo(torch.float32).min)[None, :, None, :]
    r = adapter.renderer(INSTR)
    prep = adapter.prepare(adapter.collate([r.query(q) for q in make_demos(3, offset=50)]), full.position_offset)
    masked, _ = adapter.run_layers(prep.hidden, prep.positions, prep.seg,
                                   AttentionContext(prefix=full.prefix(), prefix_bias=bias))  # fmt: skip
    ours, _ = adapter.run_layers(prep.hidden, prep.positions, prep.seg, AttentionContext(prefix=pruned.prefix()))
    assert torch.allclose(masked[prep.valid], ours[prep.valid], atol=1e-5)


def test_a_per_head_memory_holds_its_entries_only_and_round_trips(llama, tmp_path):
    full = FullContext().build(llama, make_demos(6), INSTR)
    pruned = full.select_heads(_random_keep(full, seed=3))
    entries = sum(sum(n) for n in pruned.head_lengths.values())
    heads = full.kv(0)[0].shape[1]
    assert pruned.retention == pytest.approx(entries / (full.num_layers * heads * full.num_source_tokens))
    assert pruned.nbytes() == pytest.approx(pruned.retention * full.nbytes())  # no padding, no masked entries
    loaded = TaskMemory.load(pruned.save(tmp_path / "m"), expect=llama.signature())
    assert loaded.fingerprint() == pruned.fingerprint() and loaded.head_lengths == pruned.head_lengths
    query = make_demos(1, offset=70)[0]
    assert torch.equal(query_logits(llama, loaded, query), query_logits(llama, pruned, query))
    with pytest.raises(ValueError, match="per-head"):
        pruned.append(0, *full.kv(0))
    with pytest.raises(ValueError, match="per-head"):
        pruned.lengths()


def test_a_per_head_memory_whose_head_lengths_disagree_with_its_tensors_fails_to_load(llama, tmp_path):
    import json

    full = FullContext().build(llama, make_demos(4), INSTR)
    saved = full.select_heads(_random_keep(full)).save(tmp_path / "m")
    meta = json.loads((saved / "memory.json").read_text())
    meta["head_lengths"]["0"][0] += 1
    (saved / "memory.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptMemoryError, match="layer 0"):
        TaskMemory.load(saved)


def test_one_global_threshold_keeps_the_best_entries_wherever_they_are():
    g = torch.Generator().manual_seed(0)
    scores = [torch.rand(2, 10, generator=g) for _ in range(3)]
    keep = global_keep(scores, 12)
    kept = torch.cat([scores[layer][h, idx] for layer, heads in enumerate(keep) for h, idx in enumerate(heads)])
    assert len(kept) == 12 and kept.min() >= torch.cat([s.reshape(-1) for s in scores]).topk(12).values.min()
    assert len({len(i) for heads in keep for i in heads}) > 1  # per-head budgets
    first = torch.arange(10) < 2
    protect = torch.zeros(10, dtype=torch.bool)
    protect[5:] = True
    keep = global_keep([s * 0 + 0.5 for s in scores], 18, first, protect, protect_cap=6)
    counts = torch.zeros(10)
    for heads in keep:
        for idx in heads:
            counts[idx] += 1
    assert counts[:2].tolist() == [6, 6]  # sinks: every head of every layer
    assert int(counts[5:].sum()) == 6  # protection takes its cap, not the budget
    assert int(counts.sum()) == 18
