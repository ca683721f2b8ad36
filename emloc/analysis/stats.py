"""Statistics over runs: per grid point over demo seeds, and paired comparisons of two arms on the same queries.

* `aggregate` — per grid point: n seeds and, per metric, mean, sample std, min–max and a 95 % Student-t interval.
* `paired` — one arm against a reference arm (default: full context) on the same queries of the same demo seeds:
  the accuracy difference with a 95 % CI from a two-level bootstrap (queries resampled within each seed, seeds
  resampled), the agreement of their predictions, the queries each gets right and the other wrong (with McNemar's
  exact p), and the mean JS divergence between their candidate distributions (a fidelity measure far less noisy
  than accuracy: softmax over each query's candidate log-probabilities).

It deliberately reads no files and draws nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from emloc.analysis.frame import FLAGS, METRICS, SEED, SweepError, method_rank, sort_key, t975

BOOTSTRAP = 4000


def aggregate(df: pd.DataFrame, by: list[str], metrics: tuple[str, ...] = METRICS, seed: str = SEED) -> pd.DataFrame:
    """Per grid point (`by`): n seeds and, per metric, `_mean`, `_std`, `_min`, `_max`, `_ci_low`, `_ci_high` (95 %).
    Points are ordered by method (zero-shot, full context, searching methods, others), then by the other columns."""
    rows = []
    for key, g in df.groupby(by, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        if seed in g and g[seed].duplicated().any():
            varying = [c for c in g.columns if "." in c and c != seed and g[c].astype(str).nunique() > 1]
            raise SweepError(f"several runs per demo seed at {dict(zip(by, key))}: group also by {varying}")
        seeds = " ".join(str(int(s)) for s in sorted(g[seed])) if seed in g else ""
        row = {**dict(zip(by, key)), "n": len(g), "seeds": seeds, "signatures": tuple(g["signature"])}
        row.update({f: bool(g[f].iloc[0]) for f in FLAGS if f in g})
        for m in metrics:
            v = pd.to_numeric(g[m], errors="coerce").dropna() if m in g else pd.Series(dtype=float)
            mean = v.mean() if len(v) else math.nan
            std = v.std(ddof=1) if len(v) > 1 else math.nan
            half = t975(len(v)) * std / math.sqrt(len(v)) if len(v) > 1 else math.nan
            row.update({f"{m}_mean": mean, f"{m}_std": std, f"{m}_min": v.min(), f"{m}_max": v.max(),
                        f"{m}_ci_low": mean - half, f"{m}_ci_high": mean + half})  # fmt: skip
        rows.append(row)
    out = pd.DataFrame(rows)
    for c in [c for c in by if c != "method"][::-1]:  # the first grid column varies slowest
        out = out.sort_values(c, key=sort_key, kind="stable")
    if "method" in by:
        out = out.assign(_rank=out.apply(method_rank, axis=1)).sort_values("_rank", kind="stable").drop(columns="_rank")
    return out.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------- paired
@dataclass
class Paired:
    """One arm against a reference on the same queries (differences are arm − reference)."""

    seeds: int
    queries: int  # paired queries over all seeds
    diff: float  # accuracy difference, mean over seeds of the per-seed mean
    ci_low: float
    ci_high: float
    agreement: float  # share of queries with the same prediction
    wins: int  # arm right, reference wrong
    losses: int  # arm wrong, reference right
    mcnemar_p: float  # exact two-sided binomial p on wins vs losses
    js: float  # mean JS between the candidate distributions (NaN when the queries were not ranked)


def mcnemar_exact(wins: int, losses: int) -> float:
    """Two-sided exact McNemar p-value: P(a split at least as uneven as wins/losses under a fair coin)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def candidate_js(a: list[float], b: list[float]) -> float:
    """JS divergence (nats) between the softmax distributions of two candidate log-probability vectors."""
    la, lb = np.asarray(a, float), np.asarray(b, float)
    la, lb = la - np.logaddexp.reduce(la), lb - np.logaddexp.reduce(lb)
    lm = np.logaddexp(la, lb) - math.log(2)
    return float(max(0.0, 0.5 * (np.exp(la) * (la - lm)).sum() + 0.5 * (np.exp(lb) * (lb - lm)).sum()))


def _bootstrap(per_seed: list[np.ndarray], rng: np.random.Generator, n: int = BOOTSTRAP) -> np.ndarray:
    """Means of the two-level bootstrap: seeds with replacement, then queries with replacement within each."""
    out = np.empty(n)
    k = len(per_seed)
    for i in range(n):
        picks = rng.integers(0, k, k) if k > 1 else [0]
        out[i] = np.mean([per_seed[s][rng.integers(0, len(per_seed[s]), len(per_seed[s]))].mean() for s in picks])
    return out


def _pair(arm: pd.DataFrame, ref: pd.DataFrame, seed_of: dict[str, int], what: str) -> pd.DataFrame:
    """The rows of two arms joined by (demo seed, uid), the reference's columns suffixed `_ref`."""
    both = arm.assign(seed=arm["signature"].map(seed_of)).merge(
        ref.assign(seed=ref["signature"].map(seed_of)), on=["seed", "uid"], suffixes=("", "_ref")
    )
    if both.empty:
        raise SweepError(f"the two arms share no (demo seed, {what}) pair: nothing to compare")
    return both


def _interval(both: pd.DataFrame, column: str, rng_seed: int) -> tuple[int, float, float, float]:
    """(seeds, mean over seeds of the per-seed mean difference, 95 % CI low, high) of `column` − `column_ref`."""
    diffs = [(g[column].astype(float) - g[f"{column}_ref"].astype(float)).to_numpy() for _, g in both.groupby("seed")]
    boot = _bootstrap(diffs, np.random.default_rng(rng_seed))
    return (len(diffs), float(np.mean([d.mean() for d in diffs])), float(np.quantile(boot, 0.025)),
            float(np.quantile(boot, 0.975)))  # fmt: skip


@dataclass
class PairedJS:
    """Held-out JS to the full context, one arm − a reference, on the same fidelity queries (nats)."""

    seeds: int
    queries: int
    diff: float  # mean over seeds of the per-seed mean difference
    ci_low: float
    ci_high: float


def paired_js(arm: pd.DataFrame, ref: pd.DataFrame | None, seed_of: dict[str, int], rng_seed: int = 0) -> PairedJS:
    """Compare two arms' per-query held-out JS (`load_fidelity` rows of curve "query"), paired by (demo seed, uid);
    `ref` None is the full context itself (JS 0 on every query): the CI is then the arm's held-out JS's own."""
    if ref is None:
        ref = arm.assign(js=0.0)
    both = _pair(arm, ref, seed_of, "fidelity query")
    seeds, diff, low, high = _interval(both, "js", rng_seed)
    return PairedJS(seeds, len(both), diff, low, high)


def paired(arm: pd.DataFrame, ref: pd.DataFrame, seed_of: dict[str, int], rng_seed: int = 0) -> Paired:
    """Compare two arms' predictions (`load_predictions` rows, one signature per demo seed) on shared queries.

    seed_of : run signature → demo seed; queries are paired by (demo seed, uid)."""
    both = _pair(arm, ref, seed_of, "query")
    seeds, diff, low, high = _interval(both, "correct", rng_seed)
    right, right_ref = both["correct"].astype(float) >= 0.5, both["correct_ref"].astype(float) >= 0.5
    wins, losses = int((right & ~right_ref).sum()), int((~right & right_ref).sum())
    js = math.nan
    if "scores" in both and both["scores"].notna().all() and both["scores_ref"].notna().all():
        js = float(np.mean([candidate_js(x, y) for x, y in zip(both["scores"], both["scores_ref"])]))
    return Paired(
        seeds=seeds, queries=len(both), diff=diff, ci_low=low, ci_high=high,
        agreement=float((both["prediction"].astype(str) == both["prediction_ref"].astype(str)).mean()),
        wins=wins, losses=losses, mcnemar_p=mcnemar_exact(wins, losses), js=js,
    )  # fmt: skip
