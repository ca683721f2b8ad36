"""Power, before anyone runs a grid: from the per-query variance an existing sweep measured, how many queries and
demo seeds a difference needs to be separable (two-sided 5 % test of `stats.crossed`) with 80 % power.

The variance components (demo seed σ_a², shared query σ_b², interaction σ_e²: `stats.components`) are measured on
the sweep's own paired tables — each compressed arm against its reference for accuracy, each pair of compressed arms
for held-out JS — and their median over the comparisons is the "typical comparison" the table plans for. A design
of S seeds × Q queries then has Var = σ_a²/S + σ_b²/Q + σ_e²/(SQ), the degrees of freedom of `crossed`'s rule, and
power from the noncentral t. It deliberately reads no files and draws nothing.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from emloc.analysis.frame import SEED, Sweep, SweepError
from emloc.analysis.stats import SEED_GUARD, Components, aggregate, components, table_of
from emloc.analysis.tables import Table

SEEDS = (3, 5, 10, 20)
QUERIES = (64, 128, 256, 512, 1024, 2048, 4096)
TARGETS = (("accuracy", 0.01, "1 pp"), ("accuracy", 0.02, "2 pp"), ("accuracy", 0.05, "5 pp"),
           ("heldout_js", 1e-3, "1 × 10⁻³"))  # fmt: skip


def power(comp: Components, diff: float, seeds: int, queries: int, alpha: float = 0.05) -> float:
    """P(the crossed test rejects) for a true difference `diff` under these components and this design."""
    var = comp.variance(seeds, queries)
    if var <= 0:
        return 1.0
    seed_part, query_part = (comp.seed + comp.error / queries) / seeds, comp.query / queries
    guarded = SEED_GUARD * seed_part
    df = (guarded + query_part) ** 2 / (guarded**2 / (seeds - 1) + query_part**2 / (queries - 1))
    crit, ncp = sps.t.ppf(1 - alpha / 2, df), diff / math.sqrt(var)
    return float(sps.nct.sf(crit, df, ncp) + sps.nct.cdf(-crit, df, ncp))


def _tables(sweep: Sweep, metric: str) -> list[np.ndarray]:
    """The seed × query difference tables of the sweep's comparisons for `metric` (see the module docstring)."""
    cells = sweep.per_query().get(metric)
    if cells is None or "method" not in sweep.by:
        return []
    seed_of = dict(zip(sweep.runs["signature"], sweep.runs[SEED]))
    agg = aggregate(sweep.runs, sweep.by)
    others = [c for c in sweep.by if c != "method"]
    out = []
    for _, group in agg.groupby(others, dropna=False) if others else [(None, agg)]:
        arms = {i: cells[cells["signature"].isin(r["signatures"])].assign(seed=lambda d: d["signature"].map(seed_of))
                for i, r in group.iterrows()}  # fmt: skip
        if metric == "accuracy":
            refs = [i for i, r in group.iterrows() if r.get("uses_demos", True) and not r.get("compresses", True)]
            pairs = [
                (i, refs[0]) for i in group.index if refs and i != refs[0] and group.loc[i].get("uses_demos", True)
            ]
        else:
            pairs = list(itertools.combinations([i for i in group.index if group.loc[i].get("compresses", True)], 2))
        for a, b in pairs:
            both = arms[a].merge(arms[b], on=["seed", "uid"], suffixes=("", "_ref"))
            table = table_of(both.assign(d=both["value"] - both["value_ref"]), "d") if len(both) else np.empty((0, 0))
            if table.shape[0] >= 2 and table.shape[1] >= 2:
                out.append(table)
    return out


def typical(sweep: Sweep, metric: str) -> Components | None:
    """The median variance components over the sweep's comparisons for `metric`; None when it has none."""
    comps = [components(t) for t in _tables(sweep, metric)]
    if not comps:
        return None
    return Components(*(float(np.median([getattr(c, k) for c in comps])) for k in ("seed", "query", "error")))


def power_table(sweep: Sweep, target: float = 0.8) -> Table:
    """Per target difference and number of demo seeds: the fewest queries (of `QUERIES`) that reach `target` power,
    with the components measured; "> 4096" when none does (the seed level alone is too noisy: add seeds)."""
    rows = []
    for metric, diff, label in TARGETS:
        comp = typical(sweep, metric)
        if comp is None:
            continue
        for s in SEEDS:
            need = next((q for q in QUERIES if power(comp, diff, s, q) >= target), None)
            rows.append({"metric": metric, "difference": label, "demo seeds": s,
                         "queries needed": str(need) if need else f"> {QUERIES[-1]}",
                         "power at 256 queries": round(power(comp, diff, s, 256), 2),
                         "σ_seed²": comp.seed, "σ_query²": comp.query, "σ_error²": comp.error})  # fmt: skip
    if not rows:
        raise SweepError(f"sweep {sweep.name!r} has no paired per-query data to measure variance on")
    data = pd.DataFrame(rows)
    frame = data.drop(columns=["σ_seed²", "σ_query²", "σ_error²"]).astype(str)
    first = data.groupby("metric", sort=False).first()
    comps = "; ".join(f"{m}: σ_seed² {r['σ_seed²']:.3g}, σ_query² {r['σ_query²']:.3g}, σ_error² {r['σ_error²']:.3g}"
                      for m, r in first.iterrows())  # fmt: skip
    notes = (f"Queries (of {', '.join(map(str, QUERIES))}) needed for {target:.0%} power at α = 5 % (two-sided "
             "crossed test of `emloc.analysis.stats`), from the median variance components of this sweep's "
             f"comparisons ({comps}). Accuracy: each arm − its reference; held-out JS: each pair of compressed arms. "
             "'> 4096' means more queries cannot get there: the demo-seed level needs more seeds.")  # fmt: skip
    return Table("power", f"{sweep.name}: queries and demo seeds a difference needs", frame, data, notes)
