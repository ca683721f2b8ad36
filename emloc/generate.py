"""Answering queries against a task memory: greedy generation and log-likelihood ranking (method.md §1.5).

A query is rendered as the next user turn of the conversation the memory holds and positioned right after
the memory's uncompressed extent. Its own tokens live in a fresh `DynamicCache`; the memory is only ever
read (through the attention prefix), so it is bit-identical after any number of queries. Batches are
packed into one sequence
(rows kept apart by the mask), so the memory, which every row sees, is never copied per row.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache

from emloc.attention import SHARED, AttentionContext
from emloc.data.base import Example
from emloc.memory import TaskMemory
from emloc.prompts import ChatRenderer, Row


@torch.no_grad()
def generate(adapter, memory: TaskMemory, renderer: ChatRenderer, queries: list[Example],
             max_new_tokens: int = 32) -> list[str]:
    """Greedy decoding for a batch of queries (packed into one sequence); stops at end-of-turn or EOS."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    prep = adapter.prepare(adapter.collate([renderer.query(q) for q in queries]), memory.position_offset, pack=True)
    ctx, cache, key_seg = AttentionContext(prefix=memory.prefix()), DynamicCache(), prep.seg
    hidden, _ = adapter.run_layers(prep.hidden, prep.positions, key_seg, ctx, cache=cache)
    logits = adapter.lm_logits(hidden[0, prep.last()])
    stops = {renderer.end_of_turn, adapter.tokenizer.eos_token_id}
    rows = torch.arange(len(queries), device=adapter.device)[None]
    next_pos, outputs = prep.extents.clone(), [[] for _ in queries]
    done = torch.zeros(len(queries), dtype=torch.bool)
    for _ in range(max_new_tokens):
        token = logits.argmax(-1)
        for b, t in enumerate(token.tolist()):
            if not done[b]:
                done[b] = t in stops
                if not done[b]:
                    outputs[b].append(t)
        if done.all():
            break
        key_seg = torch.cat([key_seg, rows], dim=1)  # one new token per row, appended to the packed sequence
        positions = next_pos[None, None, :].expand(prep.positions.shape[0], 1, -1)
        hidden, _ = adapter.run_layers(adapter.decoder.embed_tokens(token[None]), positions, key_seg, ctx, cache=cache)
        logits, next_pos = adapter.lm_logits(hidden[0]), next_pos + 1
    return [adapter.tokenizer.decode(o, skip_special_tokens=True).strip() for o in outputs]


@torch.no_grad()
def loglikelihood(adapter, memory: TaskMemory, renderer: ChatRenderer, query: Example,
                  candidates: list[str]) -> list[float]:
    """Sum of log-probabilities of each candidate answer (answer tokens and the end-of-turn token).

    The query prompt is run once; all candidates are then packed into one sequence that sees the memory and the
    query's cached keys (segment `SHARED`) and only its own earlier tokens.
    """
    if not candidates:
        raise ValueError(f"query {query.uid!r} has no candidate answers to score")
    ctx = AttentionContext(prefix=memory.prefix())
    prep = adapter.prepare(adapter.collate([renderer.query(query)]), memory.position_offset)
    cache = DynamicCache()
    hidden, _ = adapter.run_layers(prep.hidden, prep.positions, prep.seg, ctx, cache=cache)
    first = torch.log_softmax(adapter.lm_logits(hidden[0, -1]).float(), -1)
    rows = [renderer.answer_row(c) for c in candidates]
    rows = [Row(r.ids[:end], r.kinds[:end], r.targets[:end]) for r in rows for end in [max(i for i, t in enumerate(r.targets) if t) + 1]]
    cands = adapter.collate(rows)  # each candidate up to its last scored token
    packed = adapter.prepare(cands, int(prep.extents[0]), pack=True)
    key_seg = torch.cat([torch.full_like(prep.seg, SHARED), packed.seg], dim=1)
    out, _ = adapter.run_layers(packed.hidden, packed.positions, key_seg, ctx, cache=cache)
    logp = torch.log_softmax(adapter.lm_logits(out[0]).float(), -1)  # (tokens of all candidates, vocab)
    ids, targets = packed.select(cands.ids)[0], packed.select(cands.targets)[0]
    scores, start = [], 0
    for n in cands.valid.sum(-1).tolist():
        prev = torch.cat([first[None], logp[start : start + n - 1]], dim=0)  # the distribution predicting token j
        tok = prev.gather(-1, ids[start : start + n, None])[:, 0]
        scores.append(float(tok[targets[start : start + n]].sum()))
        start += n
    return scores


def answer(adapter, memory: TaskMemory, renderer: ChatRenderer, queries: list[Example],
           max_new_tokens: int = 32) -> list[str]:
    """Predictions for a batch: ranked candidates when a query has `choices`, greedy text otherwise."""
    free = [q for q in queries if not q.choices]
    generated = iter(generate(adapter, memory, renderer, free, max_new_tokens) if free else [])
    preds = []
    for q in queries:
        if q.choices:
            scores = loglikelihood(adapter, memory, renderer, q, list(q.choices))
            preds.append(q.choices[max(range(len(scores)), key=scores.__getitem__)])
        else:
            preds.append(next(generated))
    return preds
