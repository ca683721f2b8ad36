"""The fidelity–retention frontier of a sweep: how far each memory is from the full context for the room it takes.

Every grid point (method × its knob: a keep ratio for the fixed-ratio arms, δ for the bounded ones; one point per
shot count) is aggregated over demo seeds with crossed-design intervals (`stats.aggregate` with per-query data):
retention, held-out JS to the full context with its 95 % interval and one-sided 95 % upper bound, the certified
bound where the method has one, and accuracy. A point lies on the frontier when no other point of the same shot count
keeps at most as much and diverges at most as much, one of them strictly (mean retention, mean held-out JS).

* `frontier_table(sweep)` — the table, frontier points marked;
* `frontier_figure(sweep, err)` — held-out JS (log scale, with its interval) and accuracy against retention, one curve
  per method, one column per shot count, frontier points ringed.

It deliberately reads no files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from emloc.analysis.frame import SEED, Sweep, SweepError, fmt_value
from emloc.analysis.plotting import MARKERS, legend_below
from emloc.analysis.stats import aggregate
from emloc.analysis.tables import Table

SHOTS = "task.num_shots"


def points(sweep: Sweep) -> pd.DataFrame:
    """One row per compressing grid point with held-out JS: the aggregate, `shots`, `knob` and `on_frontier`."""
    runs = sweep.runs[sweep.runs["compresses"].astype(bool) & sweep.runs["heldout_js"].notna()]
    if runs.empty:
        raise SweepError(f"sweep {sweep.name!r} has no compressing run with held-out JS: no frontier to draw")
    by = sweep.by if "method" in sweep.by else ["method", *sweep.by]
    agg = aggregate(runs, by, per_query=sweep.per_query())
    knobs = [c for c in by if c not in ("method", SHOTS)]
    agg["shots"] = agg[SHOTS] if SHOTS in agg else agg["num_shots_mean"]
    option = dict(zip(runs["method"], runs.get("method_option", runs["method"])))

    def own(method: str, column: str) -> bool:  # with per-method grids, a point names only what its own grid sets
        return not sweep.grids or column in sweep.grids.get(option.get(method), {})

    agg["knob"] = [", ".join(f"{c.split('.')[-1]} = {fmt_value(r[c])}" for c in knobs if pd.notna(r[c])
                             and own(r["method"], c)) for _, r in agg.iterrows()]  # fmt: skip
    agg["on_frontier"] = False
    for _, group in agg.groupby("shots"):
        x, y = group["retention_mean"].to_numpy(float), group["heldout_js_mean"].to_numpy(float)
        for i, idx in enumerate(group.index):
            beaten = (x <= x[i]) & (y <= y[i]) & ((x < x[i]) | (y < y[i]))
            agg.loc[idx, "on_frontier"] = not beaten.any()
    return agg.sort_values(["shots", "retention_mean"], kind="stable").reset_index(drop=True)


def _ci(row: pd.Series, m: str, scale: float, dec: int) -> str:
    mean, lo, hi = (row.get(f"{m}_{k}", np.nan) * scale for k in ("mean", "ci_low", "ci_high"))
    return (
        "–"
        if np.isnan(mean)
        else f"{mean:.{dec}f} [{lo:.{dec}f}, {hi:.{dec}f}]"
        if not np.isnan(lo)
        else f"{mean:.{dec}f}"
    )


def frontier_table(sweep: Sweep) -> Table:
    agg = points(sweep)
    frame = pd.DataFrame({
        "shots": [fmt_value(v) for v in agg["shots"]],
        "method": agg["method"].astype(str),
        "knob": agg["knob"],
        "n": agg["n"].astype(str),
        "retention (%)": [f"{v * 100:.1f}" for v in agg["retention_mean"]],
        "held-out JS (×10⁻³) [95% CI]": [_ci(r, "heldout_js", 1e3, 1) for _, r in agg.iterrows()],
        "upper 95 % (×10⁻³)": ["–" if np.isnan(v) else f"{v * 1e3:.1f}" for v in agg.get("heldout_js_upper", agg["n"] * np.nan)],
        "accuracy (%) [95% CI]": [_ci(r, "accuracy", 100, 1) for _, r in agg.iterrows()],
        "frontier": ["✓" if f else "" for f in agg["on_frontier"]],
    })  # fmt: skip
    notes = (f"{len(agg)} compressing grid points of `{sweep.name}` over demo seeds (`{SEED}`; n per row). Held-out JS ="
             " next-token JS to the full context on the task's fidelity set, mean over seeds and inputs with the "
             "crossed-design 95 % interval and one-sided upper bound (`emloc.analysis.stats.crossed`). ✓ = on the "
             "frontier: no other point of the same shot count keeps at most as much with at most as much held-out JS.")  # fmt: skip
    return Table(
        "frontier", f"{sweep.name}: fidelity–retention frontier", frame, agg.drop(columns=["signatures"]), notes
    )


def frontier_figure(sweep: Sweep, err: str = "ci95") -> Figure:
    agg = points(sweep)
    shots, methods = sorted(agg["shots"].unique()), list(agg["method"].unique())  # one style per method, every panel
    fig = Figure(figsize=(5.2 * len(shots), 7.5), layout="constrained")
    axes = np.atleast_2d(fig.subplots(2, len(shots), squeeze=False))
    for j, s in enumerate(shots):
        here = agg[agg["shots"] == s]
        for method, g in here.groupby("method", sort=False):
            g, k = g.sort_values("retention_mean"), methods.index(method)
            x = g["retention_mean"].to_numpy(float) * 100
            for i, (m, scale) in enumerate((("heldout_js", 1e3), ("accuracy", 100))):
                y = g[f"{m}_mean"].to_numpy(float) * scale
                lo = y - g[f"{m}_ci_low"].to_numpy(float) * scale
                hi = g[f"{m}_ci_high"].to_numpy(float) * scale - y
                yerr = np.nan_to_num(np.vstack([lo, hi])) if err != "none" else None
                axes[i, j].errorbar(x, y, yerr=yerr, marker=MARKERS[k % len(MARKERS)], color=f"C{k % 10}", capsize=2,
                                   label=str(method))  # fmt: skip
            front = g[g["on_frontier"]]
            axes[0, j].scatter(front["retention_mean"] * 100, front["heldout_js_mean"] * 1e3, s=160,
                               facecolors="none", edgecolors="black", zorder=4)  # fmt: skip
        axes[0, j].set_yscale("log")
        axes[0, j].set_title(f"{fmt_value(s)} shots")
        axes[0, j].set_ylabel("held-out JS to the full context (×10⁻³)")
        axes[1, j].set_ylabel("accuracy (%)")
        for i in range(2):
            axes[i, j].set_xlabel("retention (% of the context's KV entries)")
            axes[i, j].grid(alpha=0.3)
    legend_below(fig, *axes[0])
    fig.suptitle(f"{sweep.name}: fidelity–retention frontier (ringed: on the frontier; bars: 95 % CI)")
    return fig
