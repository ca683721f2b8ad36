"""Token-importance scores → kept indices (paper §3.2, docs/method.md §3.1).

Pure tensor helpers shared by EMLoC and the fixed-ratio baselines: smoothing along the token axis,
protection of tokens that must survive, per-KV-head ranking, and gathering the kept entries. Scores come
from the attention wrapper (`attention.AttentionContext`), already summed over query rows and over the query
heads of each KV group; this module does not know where they came from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def smooth(scores: torch.Tensor, kernel: int) -> torch.Tensor:
    """1-D average pooling along tokens (stride 1, zero padding, so edges are damped). scores: (heads, n)."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"pool_kernel must be a positive odd integer, got {kernel}")
    if kernel == 1:
        return scores
    return F.avg_pool1d(scores[:, None].float(), kernel, stride=1, padding=kernel // 2, count_include_pad=True)[:, 0]


def rank(scores: torch.Tensor, *protected: torch.Tensor | None) -> torch.Tensor:
    """Token indices per head, most important first. Protected tokens (bool (n,) masks, highest priority first) rank
    before all others: every token of the first mask, then of the second, then the rest, each by score.

    Returns (heads, n) long. Ties break towards the earlier token, so the order is deterministic.
    """
    s = scores.float()
    step = (s.abs().max() + 1.0) * 2
    for level, mask in enumerate(reversed([m for m in protected if m is not None])):
        if mask.any():
            s = torch.where(mask[None].to(s.device), s + step * (2**level), s)
    return torch.sort(s, dim=-1, descending=True, stable=True).indices


def keep_indices(order: torch.Tensor, count: int) -> torch.Tensor:
    """The first `count` ranked indices of each head, re-sorted by position: (heads, count)."""
    return order[:, :count].sort(dim=-1).values


def gather(kv: tuple[torch.Tensor, torch.Tensor], idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Select entries per KV head. kv: (1, heads, n, head_dim) each; idx: (heads, m) → (1, heads, m, head_dim)."""
    k, v = kv
    index = idx.to(k.device)[None, :, :, None].expand(1, -1, -1, k.shape[-1])
    return k.gather(2, index), v.gather(2, index)


def count_for(ratio: float, length: int) -> int:
    """Entries kept at a keep ratio (floor, as the reference; at least one)."""
    return max(1, min(length, int(ratio * length)))


def dropped_mass(scores: torch.Tensor, order: torch.Tensor, counts: list[int]) -> list[float]:
    """For each count, the fraction of a layer's score mass (all heads) outside the first `count` ranked entries of
    every head. scores, order: (heads, n)."""
    ranked = scores.float().gather(1, order.to(scores.device)).sum(0).cumsum(0)  # mass of the top-k, k = 1..n
    total = ranked[-1].clamp_min(torch.finfo(torch.float32).tiny)
    return [float(1 - ranked[c - 1] / total) for c in counts]


def global_keep(
    scores: list[torch.Tensor],
    count: int,
    first: torch.Tensor | None = None,
    protect: torch.Tensor | None = None,
    protect_cap: int = 0,
) -> list[list[torch.Tensor]]:
    """One threshold over every (layer, KV head, token) of a whole context (docs/method.md §8.2): the `count`
    highest-ranked entries survive, wherever they are, so layers and heads keep different numbers.

    scores : per layer (heads, n), the same n for every layer. first : (n,) bool, tokens every head of every layer
    keeps before anything else (sinks). protect : (n,) bool, tokens ranked next, but at most `protect_cap` entries
    of them (the best-scoring), so protection can never fill a small budget. Ties break towards the earlier entry.
    Returns keep[l][h]: the kept token indices of head h of layer l, in position order.
    """
    s = torch.stack([x.float() for x in scores])  # (layers, heads, n)
    finite = s[torch.isfinite(s)]
    step = 2 * (float(finite.abs().max()) + 1.0) if finite.numel() else 2.0
    s = torch.nan_to_num(s, posinf=step / 2)  # an entry scored +inf (always wanted) ranks as the best score
    key = s.clone()
    if protect is not None and protect.any() and protect_cap > 0:
        where = protect.to(s.device)[None, None].expand_as(s)
        chosen = s[where].topk(min(protect_cap, int(where.sum()))).indices
        lifted = torch.zeros(int(where.sum()), dtype=torch.bool, device=s.device)
        lifted[chosen] = True
        key[where] = torch.where(lifted, s[where] + step, s[where])
    if first is not None:
        key = torch.where(first.to(s.device)[None, None], key + 2 * step, key)
    flat = key.reshape(-1)
    order = torch.sort(flat, descending=True, stable=True).indices[: max(0, min(count, flat.numel()))]
    kept = torch.zeros_like(flat, dtype=torch.bool)
    kept[order] = True
    kept = kept.view_as(s)
    return [[kept[layer, h].nonzero(as_tuple=True)[0] for h in range(s.shape[1])] for layer in range(s.shape[0])]
