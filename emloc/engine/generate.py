"""Answering queries against a task memory: greedy generation and log-likelihood ranking (docs/method.md §1.3).

A query is rendered as the next user turn of the conversation the memory holds and positioned right after
the memory's uncompressed extent. Its own tokens live in a fresh `DynamicCache`; the memory is only ever
read (through the attention prefix), so it is bit-identical after any number of queries. Batches are
packed into one sequence (rows kept apart by the mask), so the memory, which every row sees, is never copied
per row; ranking a batch of queries' candidate answers costs two forwards, whatever the number of candidates.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache

from emloc.data.base import Example
from emloc.engine.attention import AttentionContext
from emloc.engine.memory import TaskMemory
from emloc.engine.prompts import ChatRenderer, Row


@torch.no_grad()
def generate(
    adapter, memory: TaskMemory, renderer: ChatRenderer, queries: list[Example], max_new_tokens: int = 32
) -> list[str]:
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
def score_choices(
    adapter, memory: TaskMemory, renderer: ChatRenderer, queries: list[Example], candidates: list[list[str]]
) -> list[list[float]]:
    """For each query, the summed log-probability of each of its candidate answers (answer tokens + end of turn).

    Two forwards for the whole batch: the query prompts packed into one sequence (their keys cached), then every
    candidate of every query packed into another, each seeing the memory, its own query's cached keys (segment
    `parent`) and its own earlier tokens. Only the positions that predict a scored token reach the LM head.
    """
    for q, cands in zip(queries, candidates, strict=True):
        if not cands:
            raise ValueError(f"query {q.uid!r} has no candidate answers to score")
    ctx, cache = AttentionContext(prefix=memory.prefix()), DynamicCache()
    prep = adapter.prepare(adapter.collate([renderer.query(q) for q in queries]), memory.position_offset, pack=True)
    hidden, _ = adapter.run_layers(prep.hidden, prep.positions, prep.seg, ctx, cache=cache)
    last = hidden[0, prep.last()]  # (queries, hidden): predicts each candidate's first token
    rows, owner = [], []
    for b, cands in enumerate(candidates):
        for c in cands:
            r = renderer.answer_row(c)
            end = max(i for i, t in enumerate(r.targets) if t) + 1  # each candidate up to its last scored token
            rows.append(Row(r.ids[:end], r.kinds[:end], r.targets[:end]))
            owner.append(b)
    # the last scored token is predicted, never fed: a row's input is all but its last token
    fed = adapter.collate(
        [Row(r.ids[:-1] or r.ids, r.kinds[:-1] or r.kinds, r.targets[:-1] or r.targets) for r in rows]
    )
    owner = torch.tensor(owner, device=adapter.device)
    packed = adapter.prepare(fed, prep.extents[owner], pack=True)
    seg = packed.seg + len(queries)  # candidate segments after the query segments
    out, _ = adapter.run_layers(
        packed.hidden,
        packed.positions,
        torch.cat([prep.seg, seg], dim=1),
        ctx,
        cache=cache,
        parent_seg=owner[packed.seg],
    )
    predictors, tokens, which, start = [], [], [], 0
    for i, (r, n) in enumerate(zip(rows, fed.valid.sum(-1).tolist())):
        h = torch.cat([last[owner[i]][None], out[0, start : start + len(r.ids) - 1]])  # position j-1 predicts token j
        keep = torch.tensor(r.targets, device=h.device)
        predictors.append(h[keep]), tokens.append(torch.tensor(r.ids, device=h.device)[keep])
        which += [i] * int(keep.sum())
        start += n
    h, tokens = torch.cat(predictors), torch.cat(tokens)
    logp = torch.cat(
        [
            torch.log_softmax(adapter.lm_logits(h[i : i + 256]).float(), -1).gather(-1, tokens[i : i + 256, None])[:, 0]
            for i in range(0, len(tokens), 256)
        ]
    )
    per_row = iter(
        torch.zeros(len(rows), dtype=torch.float64).index_add_(0, torch.tensor(which), logp.double().cpu()).tolist()
    )
    return [[next(per_row) for _ in cands] for cands in candidates]


def loglikelihood(
    adapter, memory: TaskMemory, renderer: ChatRenderer, query: Example, candidates: list[str]
) -> list[float]:
    """Sum of log-probabilities of each candidate answer of one query (see `score_choices`)."""
    return score_choices(adapter, memory, renderer, [query], [list(candidates)])[0]


def respond(
    adapter, memory: TaskMemory, renderer: ChatRenderer, queries: list[Example], max_new_tokens: int = 32
) -> list[tuple[str, list[float] | None]]:
    """Per query: the prediction and, when it was ranked (`choices`), every candidate's log-probability (in
    `choices` order: the evidence paired comparisons need); greedy text and None otherwise."""
    free = [q for q in queries if not q.choices]
    generated = iter(generate(adapter, memory, renderer, free, max_new_tokens) if free else [])
    ranked = [q for q in queries if q.choices]
    scores = iter(score_choices(adapter, memory, renderer, ranked, [list(q.choices) for q in ranked]) if ranked else [])
    out: list[tuple[str, list[float] | None]] = []
    for q in queries:
        if q.choices:
            s = next(scores)
            out.append((q.choices[max(range(len(s)), key=s.__getitem__)], s))
        else:
            out.append((next(generated), None))
    return out


def answer(
    adapter, memory: TaskMemory, renderer: ChatRenderer, queries: list[Example], max_new_tokens: int = 32
) -> list[str]:
    """Predictions for a batch: ranked candidates when a query has `choices`, greedy text otherwise."""
    return [pred for pred, _ in respond(adapter, memory, renderer, queries, max_new_tokens)]
