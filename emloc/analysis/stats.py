"""Statistics over runs: per grid point over demo seeds, and paired comparisons of two arms on the same queries.

The design is crossed: a task's queries (and its fidelity inputs) depend on `task.query_seed` only, so every demo seed
and every arm answers the same ones. A mean over a seed × query table then has three sources of noise — which demo
seeds were drawn (a_s), which queries (b_q), and their interaction (e_sq) — and

    Var(mean) = σ_a² / S + σ_b² / Q + σ_e² / (S Q).

* `crossed` — the mean of such a table with its 95 % interval, one-sided 95 % upper bound and two-sided p-value.
  Seed level: the spread of the S per-seed means, which carries σ_a²/S + σ_e²/(SQ) with S − 1 degrees of freedom
  (three seeds are too few for a bootstrap to see their spread; a t-quantile with 2 df can). Query level: a bootstrap
  that resamples the query set once per replicate and applies that one draw to every seed (what was sampled: one
  shared query set); less the interaction already counted, it is σ_b²/Q. The interval is Student-t on their sum with
  Welch–Satterthwaite degrees of freedom in which the seed level counts `SEED_GUARD` (3) times: plain Satterthwaite,
  fed a variance estimated from 3 seeds, claims many degrees of freedom whenever the seeds happen to agree and
  covers only 92 % when the seed level dominates; Cochran–Cox over-covers (97.2 %). Integrated exactly over the
  2-df chi-square of the seed level, the guarded rule covers 94.7–96.1 % at every share of seed variance (3 seeds;
  95.0–96.1 % for 5 and 10). The p-value is the test dual to the interval (p < 0.05 exactly when it excludes 0); a
  sign-flip test over queries would condition on the three demo seeds drawn and reject too often when the seed
  moves the effect.
  Coverage and false-positive rate are checked by simulation in tests/analysis/test_crossed_design.py.
* `aggregate` — per grid point: n seeds and, per metric, mean, sample std, min–max and a 95 % Student-t interval.
* `paired` — one arm against a reference arm (default: full context) on the same queries of the same demo seeds:
  the accuracy difference, the agreement of their predictions and the mean JS divergence between their candidate
  distributions, each `crossed`, plus the per-seed differences and the queries each gets right and the other wrong.
* `paired_js` — the same for per-query held-out JS (against the full context itself, or another arm).

It deliberately reads no files and draws nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats as sps

from emloc.analysis.frame import FLAGS, METRICS, SEED, SweepError, method_rank, sort_key, t975

BOOTSTRAP = 4000
MIN_SEEDS, MIN_QUERIES = 2, 20  # below either, a comparison is reported without an interval
SEED_GUARD = 3.0  # see `crossed`: calibrated so that 3 seeds cover 94.7–96.1 % at any share of seed variance


def aggregate(df: pd.DataFrame, by: list[str], metrics: tuple[str, ...] = METRICS, seed: str = SEED,
              per_query: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:  # fmt: skip
    """Per grid point (`by`): n seeds and, per metric, `_mean`, `_std`, `_min`, `_max`, `_ci_low`, `_ci_high` (95 %).
    The interval is Student-t over the seeds' values, except for a metric given `per_query` (`Sweep.per_query`:
    rows of signature, uid, value), whose interval is `crossed` over the seed × query table (it also carries the
    query level the seeds share) and which gains `_upper` (one-sided 95 %).
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
            cells = (per_query or {}).get(m)
            if cells is not None and seed in g:
                mine = cells[cells["signature"].isin(g["signature"])]
                if not mine.empty:
                    c = crossed(table_of(mine.assign(seed=mine["signature"].map(dict(zip(g["signature"], g[seed])))),
                                         "value"))  # fmt: skip
                    row.update({f"{m}_ci_low": c.ci_low, f"{m}_ci_high": c.ci_high, f"{m}_upper": c.upper})
        rows.append(row)
    out = pd.DataFrame(rows)
    for c in [c for c in by if c != "method"][::-1]:  # the first grid column varies slowest
        out = out.sort_values(c, key=sort_key, kind="stable")
    if "method" in by:
        out = out.assign(_rank=out.apply(method_rank, axis=1)).sort_values("_rank", kind="stable").drop(columns="_rank")
    return out.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- crossed design
@dataclass(frozen=True)
class Crossed:
    """The mean of a demo seed × query table (every seed saw the same queries) and its uncertainty."""

    seeds: int
    queries: int  # common to every seed
    mean: float
    ci_low: float = math.nan  # 95 % two-sided
    ci_high: float = math.nan
    upper: float = math.nan  # one-sided 95 % upper bound (certificates: "at most this")
    p: float = math.nan  # two-sided p-value of mean = 0, dual to the interval
    df: float = math.nan  # degrees of freedom of its Student-t
    per_seed: tuple[float, ...] = field(default=())  # the mean of each seed, in seed order
    note: str = ""  # why there is no interval (too few common seeds or queries), else ""

    @property
    def has_interval(self) -> bool:
        return not self.note


@dataclass(frozen=True)
class Components:
    """Moment estimates of the variance components of a seed × query table (each ≥ 0)."""

    seed: float  # σ_a²: how much the demo seeds move the mean
    query: float  # σ_b²: how much the queries differ, shared by the seeds
    error: float  # σ_e²: the seed × query interaction

    def variance(self, seeds: int, queries: int) -> float:
        """Var of the mean of a `seeds` × `queries` table with these components."""
        return self.seed / seeds + self.query / queries + self.error / (seeds * queries)


@lru_cache(maxsize=8)
def _query_draws(queries: int, n: int, seed: int) -> np.ndarray:
    """n bootstrap draws of a query set of this size as weights (n × queries, rows sum to 1): one draw per replicate,
    applied to every seed and arm alike."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(queries, np.full(queries, 1 / queries), size=n) / queries


def _mean_squares(table: np.ndarray) -> tuple[float, float, float]:
    """(MS_seed, MS_query, MS_error) of a two-way table without replication."""
    s, q = table.shape
    grand, rows, cols = table.mean(), table.mean(1), table.mean(0)
    resid = table - rows[:, None] - cols[None, :] + grand
    return q * rows.var(ddof=1), s * cols.var(ddof=1), float((resid**2).sum() / ((s - 1) * (q - 1)))


def components(table: np.ndarray) -> Components:
    """σ_a², σ_b², σ_e² of a complete seed × query table (≥ 2 × 2), by the method of moments, floored at 0."""
    s, q = table.shape
    ms_seed, ms_query, ms_error = _mean_squares(np.asarray(table, float))
    return Components(max(0.0, (ms_seed - ms_error) / q), max(0.0, (ms_query - ms_error) / s), ms_error)


def crossed(table: np.ndarray, rng_seed: int = 0, n: int = BOOTSTRAP) -> Crossed:
    """Mean, 95 % interval, one-sided 95 % upper bound and p-value of a complete seed × query table (rows: demo
    seeds, columns: the queries every seed answered). See the module docstring for the method."""
    table = np.asarray(table, float)
    s, q = table.shape
    mean, per_seed = float(table.mean()), tuple(float(v) for v in table.mean(1))
    if s < MIN_SEEDS or q < MIN_QUERIES:
        why = f"{s} common demo seed{'s' * (s != 1)}" if s < MIN_SEEDS else f"{q} common queries"
        return Crossed(
            s, q, mean, per_seed=per_seed, note=f"{why}: no interval (needs ≥ {MIN_SEEDS} and ≥ {MIN_QUERIES})"
        )
    ms_seed, _, ms_error = _mean_squares(table)
    seed_part = ms_seed / (s * q)  # the spread of the per-seed means: σ_a²/S + σ_e²/(SQ), S − 1 df
    v_query = float((_query_draws(q, n, rng_seed) @ table.mean(0)).var(ddof=1))  # σ_b²/Q + σ_e²/(SQ)
    query_part = max(0.0, v_query - ms_error / (s * q))  # σ_b²/Q: the query level every seed shares
    var = seed_part + query_part
    if var <= 0:  # every seed gave the same mean and no query differs from another: nothing to be uncertain of
        return Crossed(s, q, mean, mean, mean, mean, 1.0 if mean == 0 else 0.0, per_seed=per_seed)
    # Welch–Satterthwaite degrees of freedom with the seed level counted SEED_GUARD times: three seeds that happen
    # to agree would otherwise claim many degrees of freedom (see the module docstring)
    guarded = SEED_GUARD * seed_part
    df = (guarded + query_part) ** 2 / (guarded**2 / (s - 1) + query_part**2 / (q - 1))
    se = math.sqrt(var)
    half, up = float(sps.t.ppf(0.975, df)) * se, float(sps.t.ppf(0.95, df)) * se
    p = float(2 * sps.t.sf(abs(mean) / se, df))
    return Crossed(s, q, mean, mean - half, mean + half, mean + up, p, df, per_seed)


def table_of(both: pd.DataFrame, column: str) -> np.ndarray:
    """The complete seed × uid table of `column` from long rows (`seed`, `uid`, `column`): the queries that every
    seed has, in a fixed order."""
    wide = both.pivot_table(index="seed", columns="uid", values=column, aggfunc="mean").dropna(axis=1)
    return wide.to_numpy(float)


# ---------------------------------------------------------------------------------------------------- paired
@dataclass
class Paired:
    """One arm against a reference on the same queries of the same demo seeds (differences are arm − reference)."""

    accuracy: Crossed  # accuracy difference
    agreement: Crossed  # share of queries with the same prediction
    js: Crossed | None  # JS between the candidate distributions (None when the queries were not ranked)
    wins: int  # (seed, query) cells the arm gets right and the reference wrong
    losses: int  # ... and the other way round


def candidate_js(a: list[float], b: list[float]) -> float:
    """JS divergence (nats) between the softmax distributions of two candidate log-probability vectors."""
    la, lb = np.asarray(a, float), np.asarray(b, float)
    la, lb = la - np.logaddexp.reduce(la), lb - np.logaddexp.reduce(lb)
    lm = np.logaddexp(la, lb) - math.log(2)
    return float(max(0.0, 0.5 * (np.exp(la) * (la - lm)).sum() + 0.5 * (np.exp(lb) * (lb - lm)).sum()))


def _pair(arm: pd.DataFrame, ref: pd.DataFrame, seed_of: dict[str, int], what: str) -> pd.DataFrame:
    """The rows of two arms joined by (demo seed, uid), the reference's columns suffixed `_ref`."""
    both = arm.assign(seed=arm["signature"].map(seed_of)).merge(
        ref.assign(seed=ref["signature"].map(seed_of)), on=["seed", "uid"], suffixes=("", "_ref")
    )
    if both.empty:
        raise SweepError(f"the two arms share no (demo seed, {what}) pair: nothing to compare")
    return both


def paired(arm: pd.DataFrame, ref: pd.DataFrame, seed_of: dict[str, int], rng_seed: int = 0) -> Paired:
    """Compare two arms' predictions (`load_predictions` rows, one signature per demo seed) on shared queries.

    seed_of : run signature → demo seed; queries are paired by (demo seed, uid), and only the queries every common
    seed answered enter (the crossed table)."""
    both = _pair(arm, ref, seed_of, "query")
    right, right_ref = both["correct"].astype(float) >= 0.5, both["correct_ref"].astype(float) >= 0.5
    both = both.assign(diff=both["correct"].astype(float) - both["correct_ref"].astype(float),
                       same=(both["prediction"].astype(str) == both["prediction_ref"].astype(str)).astype(float))  # fmt: skip
    js = None
    if "scores" in both and both["scores"].notna().all() and both["scores_ref"].notna().all():
        both["cjs"] = [candidate_js(x, y) for x, y in zip(both["scores"], both["scores_ref"])]
        js = crossed(table_of(both, "cjs"), rng_seed)
    return Paired(crossed(table_of(both, "diff"), rng_seed), crossed(table_of(both, "same"), rng_seed), js,
                  int((right & ~right_ref).sum()), int((~right & right_ref).sum()))  # fmt: skip


def paired_js(arm: pd.DataFrame, ref: pd.DataFrame | None, seed_of: dict[str, int], rng_seed: int = 0) -> Crossed:
    """Held-out JS of an arm (`load_fidelity` rows of curve "query") − a reference's, paired by (demo seed, uid);
    `ref` None is the full context itself (JS 0 on every input): the arm's own held-out JS with its interval and
    one-sided upper bound."""
    ref = arm.assign(js=0.0) if ref is None else ref
    both = _pair(arm, ref, seed_of, "fidelity input")
    return crossed(table_of(both.assign(d=both["js"].astype(float) - both["js_ref"].astype(float)), "d"), rng_seed)
