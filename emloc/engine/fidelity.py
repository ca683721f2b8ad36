"""How far a task memory is from the full context on held-out queries (the quantity a user cares about).

For each query, the next-token distribution at the end of its prompt (it predicts the answer's first token) is
computed once against the memory and once against the uncompressed context of the same demonstrations, and their
JS divergence (nats, full vocabulary: the unit of δ) is taken. `measure` gives:

* `heldout_js` — the mean over the queries, for the finished memory;
* `drift` — the same after each chunk (the memory as it was then, against the full context of the demonstrations
  seen so far: the uncompressed KV of a prefix is a prefix of the uncompressed KV), the drift curve;
* `per_layer` — the finished memory with only layer l compressed (every other layer full): which layers carry the
  divergence.

The full-context memory must be one pass over the same demonstrations (`FullContext`). It deliberately does not
decide anything from these numbers: methods that need them call it, the runner records them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from emloc.data.base import Example
from emloc.engine.attention import AttentionContext
from emloc.engine.divergence import js_rows
from emloc.engine.memory import TaskMemory
from emloc.engine.prompts import ChatRenderer


@torch.no_grad()
def answer_logits(adapter, prefix: list, offset: int, renderer: ChatRenderer, queries: list[Example]) -> torch.Tensor:
    """(queries, vocab) logits after each query prompt, the queries packed into one sequence after `prefix`."""
    prep = adapter.prepare(adapter.collate([renderer.query(q) for q in queries]), offset, pack=True)
    hidden, _ = adapter.run_layers(prep.hidden, prep.positions, prep.seg, AttentionContext(prefix=prefix))
    return adapter.lm_logits(hidden[0, prep.last()])


@torch.no_grad()
def answer_row_logits(
    adapter, prefix: list, offset: int, renderer: ChatRenderer, inputs: list[Example]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, vocab) logits at every row that predicts a token of each input's reference answer or its end of turn
    (teacher-forced: the input rendered with its answer), the inputs packed into one sequence after `prefix`; and
    (rows,) bool marking each input's first such row, where its answer is decided: the prompt is a prefix of the
    teacher-forced rendering, so those rows are the rows `answer_logits` reads, from the same pass."""
    batch = adapter.collate([renderer.demo(q) for q in inputs])
    prep = adapter.prepare(batch, offset, pack=True)
    hidden, _ = adapter.run_layers(prep.hidden, prep.positions, prep.seg, AttentionContext(prefix=prefix))
    rows = batch.probe_rows()[batch.valid]
    first = batch.decision_rows()[batch.valid][rows]
    return adapter.lm_logits(hidden[0, rows.to(hidden.device)]), first


@dataclass
class Fidelity:
    heldout_js: float  # mean over the queries, finished memory vs full context
    per_query: list[float]
    drift: list[float]  # after each chunk
    per_layer: list[float]  # only layer l compressed


@torch.no_grad()
def divergence(
    adapter, memory: TaskMemory, full: TaskMemory, renderer: ChatRenderer, inputs: list[Example]
) -> list[float]:
    """Per input: JS of the next-token distribution against `memory` from the one against `full` (the finished
    memory only: what a certificate needs)."""
    reference = answer_logits(adapter, full.prefix(), full.position_offset, renderer, inputs)
    return js_rows(
        answer_logits(adapter, memory.prefix(), memory.position_offset, renderer, inputs), reference
    ).tolist()


@torch.no_grad()
def measure(adapter, memory: TaskMemory, full: TaskMemory, renderer: ChatRenderer, queries: list[Example],
            per_layer: bool = True, drift: bool = True) -> Fidelity:  # fmt: skip
    """JS divergence of `memory` from `full` (one uncompressed pass over the same demonstrations) on `queries`;
    without `drift`, the drift curve holds the finished memory's point only."""
    if full.num_source_tokens != memory.num_source_tokens:
        raise ValueError(
            f"the full-context memory holds {full.num_source_tokens} tokens, the memory {memory.num_source_tokens}: "
            "not the same demonstrations"
        )
    reference = answer_logits(adapter, full.prefix(), full.position_offset, renderer, queries)
    rows = js_rows(answer_logits(adapter, memory.prefix(), memory.position_offset, renderer, queries), reference)
    curve = []
    for entries, tokens, offset in memory.chunk_ends()[:-1] if drift else []:
        ref = answer_logits(adapter, full.prefix([tokens] * full.num_layers), offset, renderer, queries)
        ours = answer_logits(adapter, memory.prefix(entries), offset, renderer, queries)
        curve.append(float(js_rows(ours, ref).mean()))
    curve.append(float(rows.mean()))
    layers = []
    if per_layer:
        for layer in range(memory.num_layers):
            mixed = full.prefix()
            mixed[layer] = memory.kv(layer)
            ours = answer_logits(adapter, mixed, memory.position_offset, renderer, queries)
            layers.append(float(js_rows(ours, reference).mean()))
    return Fidelity(float(rows.mean()), rows.tolist(), curve, layers)
