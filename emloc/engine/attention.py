"""Memory-prefix attention: the one place where a task memory meets a transformers attention layer.

transformers' attention modules compute rotated queries/keys, update their cache, then call the function
registered under `config._attn_implementation` with every extra keyword they received. We register
`emloc_sdpa` and `emloc_eager`, thin wrappers around the stock SDPA and eager functions. When a call carries
an `emloc=AttentionContext(...)` keyword, the wrapper

1. prepends the layer's memory keys/values (post-RoPE, fully visible, their own length per layer) in front
   of the query's own keys, with a zero block in front of the additive mask (docs/method.md §4.1, §6.1), and
2. optionally accumulates, for selected query rows, the softmax attention over a span of keys, summed per
   KV-head group (GQA) — the scores EMLoC and the fixed-ratio baselines rank tokens by (docs/method.md §3.1, §6.2).
   Only those rows are materialised, in float32; the attention output itself is still computed by SDPA.

Without the keyword the wrappers are the stock functions, so the model's own forward/generate keep working.
The per-query cache stays a normal `DynamicCache` holding only query tokens: memory lengths never touch
`get_seq_length`, `cache_position` or the mask width (docs/method.md §6.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import eager_attention_forward

KV = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Ragged:
    """One layer of a per-head memory (docs/method.md §8.1): KV head h keeps its own number of entries, `lengths[h]`.
    Stored flat, with no padding: head h's keys are `keys[:, :, s_h : s_h + lengths[h]]` of one (1, 1, N, head_dim)
    tensor, N = sum(lengths), s_h the sum of the lengths before it; values alike."""

    keys: torch.Tensor
    values: torch.Tensor
    lengths: tuple[int, ...]

    def heads(self) -> list[KV]:
        """Per KV head, (keys, values) each (1, 1, lengths[h], head_dim): views, no copy."""
        return list(zip(self.keys.split(self.lengths, dim=2), self.values.split(self.lengths, dim=2)))


BASES = {"sdpa": sdpa_attention_forward, "eager": eager_attention_forward}
MASKS = {"sdpa": sdpa_mask, "eager": eager_mask}


@dataclass
class AttentionContext:
    """Per-forward instructions for the wrapper.

    Attributes
    ----------
    prefix : per layer, None, (keys, values) or a list of such pieces (joined in order: no caller has to copy a
        memory to append a chunk to it); each (1, num_kv_heads, M_l, head_dim), broadcast over the batch. Or a
        `Ragged` layer of a per-head memory (its heads attended one KV group at a time; never a piece of a list).
    prefix_bias : dict layer -> tensor, optional
        additive bias (1, num_heads | 1, 1, M_l) on the prefix columns; used to mask entries of a full-length
        memory (tests the equivalence of pruning and masking).
    score_rows : (bsz, q_len) bool, optional
        query rows whose attention is accumulated.
    score_start : list[int], optional
        per layer, the first prefix index included in the scoring softmax (earlier entries — the compressed
        history — are excluded from the normalisation, docs/method.md §6.2). Default: the whole prefix.
    score_reduce : "sum" (default: attention summed over the rows and the query heads of a KV group) or "max" (the
        largest attention any row and any head of the group pays: KVzip's score).
    tail_scores / own_scores : outputs, per layer
        (num_kv_heads, M_l - score_start) summed over rows and batch; (bsz, num_kv_heads, k_len) per row.
    """

    prefix: list[KV | Ragged | list[KV | None] | None] | None = None
    prefix_bias: dict[int, torch.Tensor] = field(default_factory=dict)
    score_rows: torch.Tensor | None = None
    score_start: list[int] | None = None
    score_reduce: str = "sum"
    tail_scores: dict[int, torch.Tensor] = field(default_factory=dict)
    own_scores: dict[int, torch.Tensor] = field(default_factory=dict)


def _memory_attention(module, query, key, value, attention_mask, *, _base, emloc: AttentionContext | None = None, **kw):
    if emloc is None:
        return _base(module, query, key, value, attention_mask, **kw)
    layer = module.layer_idx
    bsz, q_len = query.shape[0], query.shape[2]
    pre = emloc.prefix[layer] if emloc.prefix is not None else None
    if isinstance(pre, Ragged):
        if emloc.score_rows is not None:
            raise NotImplementedError("attention scores over a per-head memory: score the full context instead")
        return _per_head(module, query, key, value, attention_mask, pre, emloc.prefix_bias.get(layer), _base, kw)
    pieces = [] if pre is None else [pre] if isinstance(pre, tuple) else [p for p in pre if p is not None]
    m = sum(p[0].shape[-2] for p in pieces)
    if pieces:
        key = torch.cat([p[0].to(key.dtype).expand(bsz, -1, -1, -1) for p in pieces] + [key], dim=2)
        value = torch.cat([p[1].to(value.dtype).expand(bsz, -1, -1, -1) for p in pieces] + [value], dim=2)
        block = torch.zeros(bsz, 1, q_len, m, dtype=attention_mask.dtype, device=attention_mask.device)
        if layer in emloc.prefix_bias:
            block = block + emloc.prefix_bias[layer].to(block.dtype)
            attention_mask = attention_mask.expand(bsz, block.shape[1], -1, -1)
        attention_mask = torch.cat([block, attention_mask], dim=-1)
    if emloc.score_rows is not None:
        start = emloc.score_start[layer] if emloc.score_start is not None else 0
        _accumulate_scores(emloc, layer, query, key, attention_mask, m, start, kw.get("scaling"))
    return _base(module, query, key, value, attention_mask, **kw)


def _per_head(module, query, key, value, mask, pre: Ragged, bias, base, kw):
    """Attention with a per-head memory: each KV head's group of query heads attends to [that head's entries | the
    query's own keys], through the stock function (so SDPA's kernels and eager alike), and the groups' outputs are
    joined along the heads. A prefix bias is for full-length memories (masking is what this replaces)."""
    if bias is not None:
        raise NotImplementedError("a prefix bias over a per-head memory")
    bsz, q_len, num_kv = query.shape[0], query.shape[2], key.shape[1]
    group, outs = query.shape[1] // num_kv, []
    for h, (pk, pv) in enumerate(pre.heads()):
        rows = slice(h * group, (h + 1) * group)
        k = torch.cat([pk.to(key.dtype).expand(bsz, -1, -1, -1), key[:, h : h + 1]], dim=2)
        v = torch.cat([pv.to(value.dtype).expand(bsz, -1, -1, -1), value[:, h : h + 1]], dim=2)
        own = mask if mask.shape[1] == 1 else mask[:, rows]
        block = torch.zeros(bsz, own.shape[1], q_len, pk.shape[-2], dtype=mask.dtype, device=mask.device)
        out, _ = base(module, query[:, rows], k, v, torch.cat([block, own], dim=-1), **kw)
        outs.append(out)  # (bsz, q_len, group, head_dim)
    return torch.cat(outs, dim=2), None


def _accumulate_scores(ctx: AttentionContext, layer: int, query, key, mask, m: int, start: int, scaling) -> None:
    """Softmax attention of the selected rows over keys[start:], summed over rows and per KV-head group."""
    num_heads, num_kv = query.shape[1], key.shape[1]
    group = num_heads // num_kv
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    tail = torch.zeros(num_kv, m - start, dtype=torch.float32, device=query.device)
    own = torch.zeros(query.shape[0], num_kv, key.shape[2] - m, dtype=torch.float32, device=query.device)
    peak = ctx.score_reduce == "max"
    for b in range(query.shape[0]):
        rows = ctx.score_rows[b].nonzero(as_tuple=True)[0]
        for r in rows.split(256):
            q = query[b, :, r].float()  # (heads, n, head_dim)
            k = key[b, :, start:].float().repeat_interleave(group, dim=0)  # (heads, k, head_dim), repeat_kv layout
            logits = q @ k.transpose(-1, -2) * scale + mask[b, :, r, start:].float()
            probs = torch.softmax(logits, dim=-1)
            if peak:  # the largest attention of any row and any query head of the group
                probs = probs.amax(dim=1).view(num_kv, group, -1).amax(dim=1)
                tail = torch.maximum(tail, probs[:, : m - start])
                own[b] = torch.maximum(own[b], probs[:, m - start :])
            else:  # summed over the rows and over the query heads of a KV group
                probs = probs.sum(dim=1).view(num_kv, group, -1).sum(dim=1)
                tail += probs[:, : m - start]
                own[b] += probs[:, m - start :]
    if peak:
        ctx.tail_scores[layer] = torch.maximum(ctx.tail_scores.get(layer, tail), tail)
        ctx.own_scores[layer] = torch.maximum(ctx.own_scores.get(layer, own), own)
        return
    ctx.tail_scores[layer] = ctx.tail_scores.get(layer, 0) + tail
    ctx.own_scores[layer] = ctx.own_scores.get(layer, 0) + own


def register() -> None:
    """Register `emloc_sdpa` / `emloc_eager` attention (and their mask builders) with transformers. Idempotent."""
    for name, base in BASES.items():
        ALL_ATTENTION_FUNCTIONS.register(f"emloc_{name}", partial(_memory_attention, _base=base))
        ALL_MASK_ATTENTION_FUNCTIONS.register(f"emloc_{name}", MASKS[name])


def install(model: torch.nn.Module, base: str) -> None:
    """Switch a loaded model to the memory-aware wrapper around `base` ("sdpa" or "eager")."""
    if base not in BASES:
        raise NotImplementedError(
            f"attention implementation {base!r} cannot carry a task memory; use one of {sorted(BASES)}"
        )
    register()
    model.set_attn_implementation(f"emloc_{base}")


def additive_mask(
    key_seg: torch.Tensor, query_seg: torch.Tensor, dtype: torch.dtype, parent_seg: torch.Tensor | None = None
) -> torch.Tensor:
    """Causal additive mask over a sequence's own keys, for packed or padded batches.

    key_seg : (bsz, k_len) segment id of every own key: a row/sequence id (>= 0), -1 for padding. The queries are
        the last q_len keys; query_seg : (bsz, q_len) their ids.
    parent_seg : (bsz, q_len), optional: one more segment each query token sees (e.g. the cached prompt that the
        packed candidate answers of that prompt continue).
    A query sees earlier-or-equal keys of its own (and its parent) segment; it always sees itself, so no row is
    ever fully masked. Returns (bsz, 1, q_len, k_len): 0 where visible, the dtype's minimum elsewhere.
    """
    k_len, q_len = key_seg.shape[1], query_seg.shape[1]
    qpos = torch.arange(k_len - q_len, k_len, device=key_seg.device)
    kpos = torch.arange(k_len, device=key_seg.device)
    causal = kpos[None, :] <= qpos[:, None]
    same = key_seg[:, None, :] == query_seg[:, :, None]
    if parent_seg is not None:
        same |= key_seg[:, None, :] == parent_seg.to(key_seg.device)[:, :, None]
    visible = (causal[None] & same) | (kpos[None, None, :] == qpos[None, :, None])
    out = torch.zeros(key_seg.shape[0], 1, q_len, k_len, dtype=dtype, device=key_seg.device)
    return out.masked_fill(~visible[:, None], torch.finfo(dtype).min)
