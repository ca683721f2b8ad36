"""Per-layer figures of a `Sweep`: what each layer kept, at which divergence, of which tokens, and how far the memory
drifts from the full context (from the runs' memory statistics and fidelity measurements). Kinds:

* `kept_heatmap` — kept entries per layer × chunk, as % of the chunk's tokens (mean, and its spread over seeds);
* `js_per_layer` — the accepted JS divergence per layer against the threshold δ;
* `token_kinds` — % of each token kind (template / image / question / answer) pruned per layer (paper Fig. 5);
* `drift` — held-out JS to the full context after each chunk (the drift curve), and with one layer compressed.

It reads only the `Sweep` it is given, never files.
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from emloc.analysis.frame import SEED, Sweep, SweepError, point_label, same_value, t975
from emloc.analysis.plotting import KIND_COLOURS, MARKERS, SPREAD_TEXT, band, grid, legend_below, suptitle
from emloc.analysis.stats import aggregate


def _per_layer(sweep: Sweep) -> list[dict]:
    """The memory_stats rows of the runs with a pruned memory, per grid point (with its aggregate row and label)."""
    lf = sweep.layers()
    lf = lf[lf["compresses"]]
    if lf.empty:
        raise SweepError(f"sweep {sweep.name!r} has no pruned memories (only zero-shot / full context runs)")
    groups = []
    for _, point in aggregate(sweep.runs[sweep.runs["signature"].isin(lf["signature"])], sweep.by).iterrows():
        mask = np.logical_and.reduce([lf[c].map(lambda v, w=point[c]: same_value(v, w)) for c in sweep.by])
        groups.append({"point": point, "label": point_label(point, sweep.by), "rows": lf[mask]})
    return groups


def _spread(per_seed: pd.DataFrame, err: str) -> pd.Series:
    """Per row, the spread of the columns (seeds): max − min, std, or the 95 % CI half-width."""
    n = per_seed.notna().sum(axis=1)
    if err == "minmax":
        spread = per_seed.max(axis=1) - per_seed.min(axis=1)
    else:
        spread = per_seed.std(axis=1, ddof=1) * (n.map(t975) / np.sqrt(n) if err == "ci95" else 1)
    return spread.where(n > 1)  # one seed: no spread (drawn grey)


def _heat(ax, frame: pd.DataFrame, cmap: str, vmax: float):
    """frame: index = layer, columns = chunk."""
    colours = matplotlib.colormaps[cmap].with_extremes(bad="lightgrey")
    image = ax.imshow(
        frame.to_numpy(), origin="lower", aspect="auto", cmap=colours, vmin=0, vmax=vmax, interpolation="nearest"
    )
    step = max(1, math.ceil(frame.shape[1] / 8))
    ax.set_xticks(range(0, frame.shape[1], step), [str(c) for c in frame.columns[::step]])
    ax.set_yticks(range(0, frame.shape[0], max(1, round(frame.shape[0] / 8))))
    ax.set_xlabel("chunk (compression order)")
    ax.set_ylabel("layer (0 = input side)")
    ax.grid(False)
    return image


def kept_heatmap(sweep: Sweep, err: str) -> Figure:
    """Per grid point: the mean kept share per layer × chunk (top) and its spread over the seeds (below)."""
    groups = _per_layer(sweep)
    cols = min(len(groups), 3)
    rows = math.ceil(len(groups) / cols)
    fig = Figure(figsize=(3.7 * cols + 1.6, 7.4 * rows + 0.9), layout="constrained")
    axes = fig.subplots(2 * rows, cols, squeeze=False)
    for i in range(len(groups), rows * cols):
        axes[2 * (i // cols), i % cols].set_visible(False)
        axes[2 * (i // cols) + 1, i % cols].set_visible(False)
    for i, g in enumerate(groups):
        top, bottom = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        kept = g["rows"].assign(pct=lambda d: 100 * d["kept"] / d["num_tokens"])
        per_seed = kept.pivot_table(index=["layer", "chunk"], columns=SEED, values="pct")
        mean_image = _heat(top, per_seed.mean(axis=1).unstack("chunk"), "viridis", 100)
        spread_image = _heat(bottom, _spread(per_seed, err).unstack("chunk"), "Reds", 100)
        n = int(g["point"]["n"])
        seeds = f"{n} seed" + "s" * (n > 1)
        top.set_title(
            f"{g['label']}\nretention {g['point']['retention_mean'] * 100:.0f} %, mean of {seeds}", fontsize=10.5
        )
        bottom.set_title(f"{g['label']}: spread over {seeds}" + (" (none: grey)" if n < 2 else ""), fontsize=10.5)
    for r in range(rows):  # one pair of colour bars per row of panels
        fig.colorbar(mean_image, ax=list(axes[2 * r]), label="kept, mean (% of chunk)", shrink=0.9)
        fig.colorbar(spread_image, ax=list(axes[2 * r + 1]), label=f"spread: {SPREAD_TEXT[err]} (pp)", shrink=0.9)
    suptitle(fig, sweep, "Kept tokens per layer × chunk (top: mean; below: spread over demo seeds)", None)
    return fig


def js_per_layer(sweep: Sweep, err: str) -> Figure:
    groups = _per_layer(sweep)
    groups = [g for g in groups if g["rows"]["js"].notna().any()]
    if not groups:
        raise SweepError(f"no accepted JS values in sweep {sweep.name!r} (only methods without a JS search, or δ = 0)")
    fig = Figure(figsize=(8.5, 4.8), layout="constrained")
    ax = fig.subplots()
    positive = []
    for j, g in enumerate(groups):
        per_run = g["rows"].groupby([SEED, "layer"])["js"].mean().unstack(SEED)
        colour = f"C{j}"
        label = f"{g['label']} (n={int(g['point']['n'])})"
        band(ax, per_run.index, per_run, colour, label, MARKERS[j % len(MARKERS)], err)
        runs = sweep.runs[sweep.runs["signature"].isin(g["rows"]["signature"])]
        delta = runs["method.js_threshold"].iloc[0] if "method.js_threshold" in runs else None
        if delta is not None and not (isinstance(delta, float) and math.isnan(delta)):
            ax.axhline(delta, color=colour, ls="--", lw=1.1)
            positive.append(delta)
        positive += [v for v in per_run.stack().tolist() if v > 0]
    if positive and max(positive) / max(min(positive), 1e-12) > 20:
        ax.set_yscale("log")
    ax.plot([], [], color="grey", ls="--", label="threshold δ (same colour)")
    ax.set_xlabel("layer (0 = input side)")
    ax.set_ylabel("accepted JS divergence (nats / answer token)")
    ax.set_title("JS divergence of the accepted pruning per layer (mean over chunks)")
    legend_below(fig, ax)
    suptitle(fig, sweep, "Accepted JS divergence per layer", err, "bands")
    return fig


def token_kinds(sweep: Sweep, err: str) -> Figure:
    groups = _per_layer(sweep)
    rows = pd.concat([g["rows"] for g in groups])
    kinds = [k for k in KIND_COLOURS if rows.get(f"tokens_{k}", pd.Series(dtype=float)).sum() > 0]
    absent = [k for k in KIND_COLOURS if k not in kinds]
    fig, axes = grid(len(groups), 4.4, 3.6)
    for ax, g in zip(axes, groups):
        per = g["rows"].groupby([SEED, "layer"])[[f"tokens_{k}" for k in kinds] + [f"kept_{k}" for k in kinds]].sum()
        for k in kinds:
            pruned = (100 * (1 - per[f"kept_{k}"] / per[f"tokens_{k}"])).unstack(SEED)
            band(ax, pruned.index, pruned, KIND_COLOURS[k], k, None, err)
        ax.set_ylim(-3, 103)
        ax.set_xlabel("layer (0 = input side)")
        ax.set_ylabel("pruned (% of that kind's tokens)")
        ax.set_title(f"{g['label']} (n={int(g['point']['n'])})")
    fig.legend(*axes[0].get_legend_handles_labels(), title="token kind", loc="outside right center")
    note = f" (no {', '.join(absent)} tokens in this task)" if absent else ""
    suptitle(fig, sweep, f"Kinds of pruned tokens per layer{note}", err, "bands")
    return fig


def drift(sweep: Sweep, err: str) -> Figure:
    """Held-out JS to the full context after each chunk (left) and with only one layer compressed (right), per grid
    point, with the threshold δ where the method has one."""
    fid = sweep.fidelity
    if fid is None or fid.empty:
        raise SweepError(
            f"sweep {sweep.name!r} has no fidelity.json in its run folders (eval.fidelity = false, or task.heldout.fidelity = 0?)"
        )
    runs = sweep.runs[sweep.runs["compresses"] & sweep.runs["signature"].isin(fid["signature"])]
    if runs.empty:
        raise SweepError(f"sweep {sweep.name!r} has no compressed memory with a fidelity measurement")
    searching = runs["searches"].astype(bool) if "searches" in runs else None
    if searching is not None and searching.any() and not searching.all():
        runs = runs[searching]  # the methods that size their memory by a bound (fixed ratios: in the tables)
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for j, (_, point) in enumerate(aggregate(runs, sweep.by).iterrows()):
        rows = fid[fid["signature"].isin(point["signatures"])].merge(runs[["signature", SEED]], on="signature")
        label = f"{point_label(point, sweep.by)} (n={int(point['n'])})"
        for ax, curve in zip(axes, ("chunk", "layer")):
            per_seed = rows[rows["curve"] == curve].pivot_table(index="index", columns=SEED, values="js")
            x = per_seed.index + (1 if curve == "chunk" else 0)
            band(ax, x, per_seed, f"C{j % 10}", label, MARKERS[j % len(MARKERS)], err)
        delta = (
            runs.loc[runs["signature"].isin(point["signatures"]), "method.js_threshold"]
            if "method.js_threshold" in runs
            else None
        )
        if delta is not None and delta.notna().any():
            axes[0].axhline(float(delta.dropna().iloc[0]), color=f"C{j % 10}", ls="--", lw=1)
    axes[0].plot([], [], color="grey", ls="--", label="threshold δ (same colour)")
    for ax, xlabel, title in zip(
        axes, ("chunks compressed so far", "layer (0 = input side)"),
        ("Drift: held-out JS after each chunk", "Held-out JS with only this layer compressed"),
    ):  # fmt: skip
        ax.set_xlabel(xlabel)
        ax.set_ylabel("JS to full context (nats, next token)")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
    legend_below(fig, axes[0])
    suptitle(fig, sweep, "Held-out divergence from the full context (queries the memory never saw)", err, "bands")
    return fig
