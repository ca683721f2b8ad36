"""Jensen–Shannon divergence between two sets of next-token distributions (paper §3.2, docs/method.md §3.3).

Computed from logits in float32 log space, so near-zero probabilities never turn into `0 * log 0 = NaN`
(the reference computes it from bf16 softmax probabilities and silently rejects a layer on NaN). The
reduction is the mean over distributions ("batchmean"): the result is nats per answer token. It does not
know what the distributions are; `compress` decides which positions are compared.
"""

from __future__ import annotations

import math

import torch


def js_rows(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Jensen–Shannon divergence (natural log) of each row pair of two (num_positions, vocab_size) logit matrices:
    a float32 tensor (num_positions,), each value in [0, ln 2]. Raises like `js_divergence`."""
    if logits_p.shape != logits_q.shape or logits_p.ndim != 2:
        raise ValueError(
            f"expected two equal (positions, vocab) matrices, got {tuple(logits_p.shape)} and {tuple(logits_q.shape)}"
        )
    if logits_p.shape[0] == 0:
        raise ValueError("js_divergence needs at least one position")
    lp = torch.log_softmax(logits_p.float(), dim=-1)
    lq = torch.log_softmax(logits_q.float(), dim=-1)
    if not (torch.isfinite(lp).all() and torch.isfinite(lq).all()):
        raise FloatingPointError("non-finite logits reached the JS divergence (NaN/inf in the model output)")
    lm = torch.logaddexp(lp, lq) - math.log(2.0)
    kl_pm = (lp.exp() * (lp - lm)).sum(-1)
    kl_qm = (lq.exp() * (lq - lm)).sum(-1)
    return (0.5 * (kl_pm + kl_qm)).clamp_min(0.0)


def js_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> float:
    """Mean Jensen–Shannon divergence (natural log) between rows of two logit matrices.

    Parameters
    ----------
    logits_p, logits_q : torch.Tensor
        (num_positions, vocab_size) unnormalised logits, any float dtype.

    Returns
    -------
    float
        mean over rows of JS(P_row, Q_row); 0 for identical inputs, at most ln 2.

    Raises
    ------
    FloatingPointError
        when either input holds NaN/inf, or the result is not finite: a divergence that cannot be trusted
        must not be compared against a threshold.
    """
    js = js_rows(logits_p, logits_q).mean().item()
    if not math.isfinite(js):
        raise FloatingPointError(f"JS divergence is not finite: {js}")
    return js
