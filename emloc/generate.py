"""Answering queries against a task memory: greedy generation and log-likelihood ranking (method.md §1.5).

A query is rendered as the next user turn of the conversation the memory holds and positioned right after
the memory's uncompressed extent. Its own tokens live in a fresh `DynamicCache`; the memory is only ever
read (through the attention prefix), so it is bit-identical after any number of queries. Batches are
left-padded; pad keys are masked, and every row sees the whole memory.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache

from emloc.attention import AttentionContext
from emloc.data.base import Example
from emloc.memory import TaskMemory
from emloc.prompts import ChatRenderer


@torch.no_grad()
def generate(adapter, memory: TaskMemory, renderer: ChatRenderer, queries: list[Example],
             max_new_tokens: int = 32) -> list[str]:
    """Greedy decoding for a batch of queries; stops at the end-of-turn or EOS token."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    batch = adapter.collate([renderer.query(q) for q in queries], pad_side="left")
    prep = adapter.prepare(batch, memory.position_offset)
    ctx, cache, valid = AttentionContext(prefix=memory.prefix()), DynamicCache(), prep.valid
    hidden, _ = adapter.run_layers(prep.hidden, prep.positions, valid, ctx, cache=cache)
    stops = {renderer.end_of_turn, adapter.tokenizer.eos_token_id}
    next_pos, outputs = prep.extents.clone(), [[] for _ in queries]
    done = torch.zeros(len(queries), dtype=torch.bool)
    for _ in range(max_new_tokens):
        token = adapter.lm_logits(hidden[:, -1]).argmax(-1)
        for b, t in enumerate(token.tolist()):
            if not done[b]:
                done[b] = t in stops
                if not done[b]:
                    outputs[b].append(t)
        if done.all():
            break
        positions = next_pos[None, :, None].expand(prep.positions.shape[0], -1, 1)
        valid = torch.cat([valid, torch.ones_like(valid[:, :1])], dim=1)
        hidden, _ = adapter.run_layers(adapter.decoder.embed_tokens(token[:, None]), positions, valid, ctx, cache=cache)
        next_pos += 1
    return [adapter.tokenizer.decode(o, skip_special_tokens=True).strip() for o in outputs]


@torch.no_grad()
def loglikelihood(adapter, memory: TaskMemory, renderer: ChatRenderer, query: Example,
                  candidates: list[str]) -> list[float]:
    """Sum of log-probabilities of each candidate answer (answer tokens and the end-of-turn token)."""
    if not candidates:
        raise ValueError(f"query {query.uid!r} has no candidate answers to score")
    ctx = AttentionContext(prefix=memory.prefix())
    prep = adapter.prepare(adapter.collate([renderer.query(query)]), memory.position_offset)
    cache = DynamicCache()
    hidden, _ = adapter.run_layers(prep.hidden, prep.positions, prep.valid, ctx, cache=cache)
    first = torch.log_softmax(adapter.lm_logits(hidden[0, -1]).float(), -1)
    cands = adapter.collate([renderer.answer_row(c) for c in candidates])
    n = len(candidates)
    cache.batch_repeat_interleave(n)
    length = cands.ids.shape[1]
    positions = (prep.extents[0] + torch.arange(length, device=adapter.device)).expand(prep.positions.shape[0], n, -1)
    valid = torch.cat([prep.valid.expand(n, -1), cands.valid.to(adapter.device)], dim=1)
    out, _ = adapter.run_layers(adapter.decoder.embed_tokens(cands.ids.to(adapter.device)), positions, valid, ctx, cache=cache)
    logp = torch.log_softmax(adapter.lm_logits(out).float(), -1)  # (n, length, vocab)
    ids, targets = cands.ids.to(adapter.device), cands.targets.to(adapter.device)
    scores = []
    for c in range(n):
        prev = torch.cat([first[None], logp[c, :-1]], dim=0)  # distribution predicting token j
        tok = prev.gather(-1, ids[c, :, None])[:, 0]
        scores.append(float(tok[targets[c]].sum()))
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
