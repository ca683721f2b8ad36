"""Expected-Attention scoring (NVIDIA kvpress, arXiv 2510.00636): keep the entries that future queries are expected
to attend to — query-agnostic: it models the queries to come instead of observing any.

For every chunk and layer, the chunk's own queries before RoPE (the layer's input through its input norm and query
projection, taken from the chunk forward) give a mean μ and covariance Σ per query head; RoPE averaged over the
`n_future` positions after the chunk, R̄ = mean_t R_t, moves them to where future queries will be (μ̄ = R̄μ,
Σ̄ = R̄ΣR̄ᵀ). The expected attention logit of a key k (post-RoPE, as cached) is μ̄·k/√d + kᵀΣ̄k/(2d) (the Gaussian's
moment generating function); softmax over the chunk's keys per query head, mean over the query heads of a KV group,
times the value's norm ‖v‖ (kvpress' defaults: 512 future positions, covariance and value norm on, 4 sinks).

Adaptations: the statistics come from the chunk (kvpress: the whole prefilled context), and the future starts at
the first position after the chunk, not at its length (which equals it only for a one-shot prefill).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from emloc.engine.compress import ChunkState
from emloc.methods.baselines import FixedRatio, sinks

NUM_SINK = 4


def mean_rotation(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """(d, d) average of the RoPE rotations R_t = diag(cos_t) + diag(sin_t)·P over the rows of cos, sin (T, d), where
    P is `rotate_half` as a matrix (x = [x1, x2] -> [-x2, x1])."""
    d = cos.shape[-1]
    half = torch.eye(d // 2, dtype=torch.float32)
    zero = torch.zeros_like(half)
    rotate = torch.cat([torch.cat([zero, -half], 1), torch.cat([half, zero], 1)], 0)
    return torch.diag(cos.float().mean(0)) + torch.diag(sin.float().mean(0)) @ rotate


@dataclass
class ExpectedAttention(FixedRatio):
    option = "expected_attention"
    label = "Expected Attention"
    keeps_inputs = True

    n_future: int = 512
    use_covariance: bool = True
    use_vnorm: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_future < 1:
            raise ValueError(f"n_future must be an integer >= 1, got {self.n_future!r}")

    def layer_scores(self, adapter, state: ChunkState) -> list[torch.Tensor]:
        num_pos = adapter.row_positions(state.batch)[0].shape[0]  # 1 (RoPE) or 3 (M-RoPE; equal for text)
        future = torch.arange(state.offset_after, state.offset_after + self.n_future, device=adapter.device)
        cos, sin = adapter.rotary(state.inputs[0], future[None, None].expand(num_pos, 1, -1))
        rotation = mean_rotation(cos[0].cpu(), sin[0].cpu()).to(adapter.device)
        return [self._score(adapter, state, layer, rotation) for layer in range(len(state.kv))]

    def _score(self, adapter, state: ChunkState, layer: int, rotation: torch.Tensor) -> torch.Tensor:
        attn, (keys, values) = adapter.layers[layer].self_attn, state.kv[layer]
        kv_heads, n, d = keys.shape[1], keys.shape[2], keys.shape[3]
        hidden = adapter.layers[layer].input_layernorm(state.inputs[layer])
        q = attn.q_proj(hidden).view(hidden.shape[1], -1, d)  # (n, heads, d) before RoPE
        if getattr(attn, "q_norm", None) is not None:
            q = attn.q_norm(q)
        q = q.float()[NUM_SINK if state.index == 0 and n > NUM_SINK else 0 :]
        mu = q.mean(0) @ rotation.T  # (heads, d): R̄ μ
        logits = keys[0].float().repeat_interleave(q.shape[1] // kv_heads, 0) @ mu[:, :, None] / math.sqrt(d)
        logits = logits[..., 0]  # (heads, n)
        if self.use_covariance:
            centred = q - q.mean(0)
            cov = torch.einsum("nhi,nhj->hij", centred, centred) / q.shape[0]  # (heads, d, d), biased
            cov = rotation @ cov @ rotation.T
            k = keys[0].float().repeat_interleave(q.shape[1] // kv_heads, 0)  # (heads, n, d)
            logits = logits + torch.einsum("hni,hij,hnj->hn", k, cov, k) / (2 * d)
        probs = torch.softmax(logits, dim=-1).view(kv_heads, -1, n).mean(1)  # mean over the group's query heads
        if self.use_vnorm:
            probs = probs * values[0].float().norm(dim=-1)
        return probs

    def always(self, state: ChunkState, count: int) -> torch.Tensor | None:
        return sinks(state, count, NUM_SINK)
