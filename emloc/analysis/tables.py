"""The paper's tables from a `Sweep`: Markdown for people, CSV with every statistic for programs.

* `summary_table` — every grid point: accuracy, retention, memory, latency, compression time (mean ± std over
  demo seeds).
* `comparison_table` — every arm against a reference arm on the same queries (default: full context at the same
  other grid values): the paired accuracy difference with its crossed-design 95 % CI, the per-seed differences and
  the test's p, agreement, wins / losses and the JS divergence between their candidate distributions
  (`stats.paired`). Needs the runs' predictions.

It deliberately reads no files and draws nothing: loading is `emloc.analysis.loading`, drawing
`emloc.analysis.figures`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from emloc.analysis.frame import PARAM_LABELS, SEED, Sweep, SweepError, fmt_value
from emloc.analysis.stats import Crossed, aggregate, paired, paired_js

# (column, header, scale, decimals) of the tables
TABLE_METRICS = (
    ("accuracy", "accuracy (%)", 100, 1), ("retention", "retention (%)", 100, 1),
    ("heldout_js", "held-out JS (×10⁻³)", 1000, 1),
    ("certified_js_upper", "certified JS bound (×10⁻³)", 1000, 1),
    ("memory_tokens", "memory (tokens/layer)", 1, 0), ("context_tokens", "context (tokens)", 1, 0),
    ("query_seconds_mean", "latency (ms/query)", 1000, 0), ("compress_seconds", "compression (s)", 1, 1),
    ("peak_rss_mb", "peak RSS (MB)", 1, 0),
)  # fmt: skip


@dataclass
class Table:
    name: str
    title: str
    frame: pd.DataFrame  # formatted strings, as in the Markdown
    data: pd.DataFrame  # numbers (the CSV)
    notes: str = ""

    def markdown(self) -> str:
        cols = list(self.frame.columns)
        right = {c for c in cols if c == "n" or c in {h for _, h, _, _ in TABLE_METRICS} or c.startswith("Δ")}
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("--:" if c in right else "---" for c in cols) + "|"]
        lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in self.frame.itertuples(index=False)]
        return f"### {self.title}\n\n" + "\n".join(lines) + (f"\n\n{self.notes}\n" if self.notes else "\n")

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def write(self, directory: str | Path) -> list[Path]:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{self.name}.md").write_text(self.markdown())
        self.data.to_csv(d / f"{self.name}.csv", index=False)
        return [d / f"{self.name}.md", d / f"{self.name}.csv"]


SHOWN = 6  # missing runs named in a table's notes


def _cell(row: pd.Series, m: str, scale: float, decimals: int) -> str:
    mean, std = row[f"{m}_mean"] * scale, row[f"{m}_std"] * scale
    if math.isnan(mean):
        return "–"
    return f"{mean:.{decimals}f}" + ("" if math.isnan(std) else f" ± {std:.{decimals}f}")


def _notes(sweep: Sweep) -> str:
    runs = sweep.runs
    notes = (
        f"mean ± sample std over demo seeds (`{SEED}`); n = seeds per row. {len(runs)} runs of `{sweep.name}` "
        f"({', '.join(sorted(runs['model'].unique()))}, task {', '.join(sorted(runs['task'].unique()))}, "
        f"{'/'.join(str(n) for n in sorted(runs['num_queries'].unique()))} queries per run). "
        "Retention = memory tokens / context tokens; latency = mean wall time per query and compression = wall "
        "time of the memory's build (both depend on how busy the machine was); peak RSS = the run's process. "
        "Certified JS bound = the one-sided 95 % upper bound of next-token JS to the full context on the task's "
        "certification set (never seen by the method), for methods that size their memory by a bound: ✓ only when "
        "every seed's bound met the method's target."
    )
    if sweep.missing:
        named = "; ".join(sweep.missing[:SHOWN]) + (f"; … ({len(sweep.missing) - SHOWN} more: `emloc report` lists all)"
                                                    if len(sweep.missing) > SHOWN else "")  # fmt: skip
        notes += f" **Partial sweep: {len(sweep.missing)} expected runs missing** ({named})."
    return notes


def _table(sweep: Sweep, agg: pd.DataFrame, name: str, title: str, extra: dict[str, list[str]] | None = None) -> Table:
    frame = pd.DataFrame({PARAM_LABELS.get(c, c): [fmt_value(v) for v in agg[c]] for c in sweep.by})
    frame["n"] = agg["n"].astype(str)
    for m, head, scale, dec in TABLE_METRICS:
        frame[head] = [_cell(r, m, scale, dec) for _, r in agg.iterrows()]
    if "certified" in sweep.runs:  # a bound is marked certified only when every seed's upper bound met its target
        met = dict(zip(sweep.runs["signature"], sweep.runs["certified"]))
        head = "certified JS bound (×10⁻³)"
        frame[head] = [c if c == "–" else c + (" ✓" if all(met.get(s) is True for s in r["signatures"]) else " (not met)")
                       for c, (_, r) in zip(frame[head], agg.iterrows())]  # fmt: skip
    for col, values in (extra or {}).items():
        frame[col] = values
    data = agg.drop(columns=["signatures"], errors="ignore")
    return Table(name, title, frame, data, _notes(sweep))


def summary_table(sweep: Sweep) -> Table:
    """Every grid point of the sweep: accuracy, retention, memory, latency, compression time (mean ± std)."""
    agg = aggregate(sweep.runs, sweep.by, per_query=sweep.per_query())
    return _table(sweep, agg, "summary", f"{sweep.name}: results per grid point")


def _reference_of(agg: pd.DataFrame, by: list[str], reference: str | None) -> dict[int, int]:
    """Row → the row of its reference arm: `reference` (a method label), else the arm that uses demonstrations
    without compressing them (full context), at the same values of the other grid columns (a method's own knobs,
    `method.*`, are not the reference's: a keep-ratio grid is compared with the one full context of its point)."""
    others = [c for c in by if c != "method" and not c.startswith("method.")]
    is_ref = agg["method"] == reference if reference else agg["uses_demos"] & ~agg["compresses"]
    out = {}
    for i, row in agg.iterrows():
        same = is_ref & pd.Series([all(fmt_value(r[c]) == fmt_value(row[c]) for c in others)
                                   for _, r in agg.iterrows()], index=agg.index)  # fmt: skip
        if same.any() and not is_ref[i]:
            out[i] = int(same.idxmax())
    return out


def _interval(c: Crossed | None, scale: float, decimals: int) -> str:
    """`+1.2 [-0.4, +2.8]`; the reason instead when the arms share too few seeds or queries for an interval."""
    if c is None:
        return "–"
    if not c.has_interval:
        return f"{c.mean * scale:+.{decimals}f} ({c.note})"
    return f"{c.mean * scale:+.{decimals}f} [{c.ci_low * scale:+.{decimals}f}, {c.ci_high * scale:+.{decimals}f}]"


def _flat(c: Crossed | None, prefix: str) -> dict:
    """A `Crossed` as CSV columns."""
    if c is None:
        return {}
    keys = ("mean", "ci_low", "ci_high", "upper", "p", "df", "seeds", "queries", "note")
    return {**{f"{prefix}{'diff' if k == 'mean' else k}": getattr(c, k) for k in keys},
            f"{prefix}per_seed": " / ".join(f"{v:.6g}" for v in c.per_seed)}  # fmt: skip


def comparison_table(sweep: Sweep, reference: str | None = None) -> Table:
    """Every arm against the reference arm on the same queries (default: full context), with crossed-design 95 %
    intervals (`stats.crossed`), the per-seed differences and the test's p."""
    if "method" not in sweep.by:
        raise SweepError(f"sweep {sweep.name!r} has no method axis: nothing to compare (grid: {sweep.by})")
    if sweep.predictions is None or sweep.predictions.empty:
        raise SweepError(f"paired comparisons need the runs' predictions.jsonl; none were loaded for {sweep.name!r}")
    agg = aggregate(sweep.runs, sweep.by, per_query=sweep.per_query())
    refs = _reference_of(agg, sweep.by, reference)
    if not refs:
        raise SweepError(f"no reference arm ({reference or 'full context'}) in sweep {sweep.name!r}")
    seed_of = dict(zip(sweep.runs["signature"], sweep.runs[SEED]))
    preds = sweep.predictions
    acc, js_head = "Δ accuracy (pp) [95% CI]", "Δ held-out JS (×10⁻³) [95% CI]"
    cols = {k: [] for k in ("vs", acc, "per seed (pp)", "p", js_head, "agreement (%)", "wins / losses",
                            "candidate JS (×10⁻³) [95% CI]")}  # fmt: skip
    queries = sweep.fidelity[sweep.fidelity["curve"] == "query"] if sweep.fidelity is not None else None
    stats = []
    for i, row in agg.iterrows():
        if i not in refs:
            stats.append({})
            for k in cols:
                cols[k].append("reference" if k == "vs" and i in refs.values() else "")
            continue
        ref = agg.loc[refs[i]]
        p = paired(preds[preds["signature"].isin(row["signatures"])], preds[preds["signature"].isin(ref["signatures"])],
                   seed_of)  # fmt: skip
        q = _paired_js(queries, row, ref, seed_of)
        stats.append({"reference": ref["method"], **_flat(p.accuracy, ""), **_flat(p.agreement, "agreement_"),
                      **_flat(p.js, "cjs_"), "wins": p.wins, "losses": p.losses, **_flat(q, "js_")})  # fmt: skip
        cols["vs"].append(str(ref["method"]))
        cols[acc].append(_interval(p.accuracy, 100, 1))
        cols["per seed (pp)"].append(" / ".join(f"{v * 100:+.1f}" for v in p.accuracy.per_seed))
        cols["p"].append(f"{p.accuracy.p:.2g}" if p.accuracy.has_interval else "–")
        cols[js_head].append(_interval(q, 1e3, 1))
        cols["agreement (%)"].append(f"{p.agreement.mean * 100:.1f}")
        cols["wins / losses"].append(f"{p.wins} / {p.losses}")
        cols["candidate JS (×10⁻³) [95% CI]"].append(_interval(p.js, 1e3, 1).lstrip("+"))
    table = _table(sweep, agg, "comparison", f"{sweep.name}: each arm against {reference or 'full context'}", cols)
    table.data = pd.concat([table.data, pd.DataFrame(stats).add_prefix("paired_")], axis=1)
    table.notes += (
        " Δ accuracy = arm − reference on the same queries of the same demo seeds (every seed answers the same "
        "queries: a crossed design). 95 % CI from `emloc.analysis.stats.crossed`: the seed level from the spread of "
        "the per-seed differences (Student-t, S − 1 df), the query level from a bootstrap that resamples the shared "
        "query set once for every seed; p = the test dual to that interval. Per seed = the difference within each "
        "demo seed, so a reader sees when one seed carries a result. Agreement = same prediction; wins / losses = "
        "(seed, query) cells only the arm / only the reference gets right (descriptive: they pool 3 looks at one "
        "query, so no test is run on them); candidate JS = JS divergence (nats) between the two softmax "
        "distributions over each query's candidates. Δ held-out JS = the arm's held-out JS to the full context (next "
        "token, full vocabulary, on the runs' fidelity inputs) − the reference's, paired by input, same interval; "
        "against the full context it is the arm's own. A cell without an interval names what was too few (< 2 common "
        "demo seeds or < 20 common queries)."
    )
    return table


def _paired_js(queries: pd.DataFrame | None, row: pd.Series, ref: pd.Series, seed_of: dict) -> Crossed | None:
    """The paired held-out JS of an arm against its reference, None without per-query fidelity for both."""
    if queries is None or queries.empty:
        return None
    mine = queries[queries["signature"].isin(row["signatures"])]
    theirs = None if not ref.get("compresses", True) else queries[queries["signature"].isin(ref["signatures"])]
    if mine.empty or (theirs is not None and theirs.empty):
        return None
    return paired_js(mine, theirs, seed_of)


def matched_retention_table(sweep: Sweep) -> Table:
    """The pruning strategies at matched retention (paper Table 5): the comparison table, with the retention each
    baseline was matched to (its runs' `keep_ratio`) in the notes."""
    table = comparison_table(sweep)
    table.name, table.title = "matched_retention", f"{sweep.name}: pruning strategies at matched retention"
    keep = sweep.runs.get("method.keep_ratio", pd.Series(dtype=float)).dropna()
    if len(keep):
        table.notes += f" Baselines keep `keep_ratio` {keep.min():.3f}–{keep.max():.3f} of every chunk (per seed)."
    return table


def matched_comparison_table(sweep: Sweep) -> Table:
    """Every arm against the arm the baselines' retention was matched to (`match_retention_of`), same queries."""
    option = sweep.runs.get("match_retention_of", pd.Series(dtype=object)).dropna()
    labels = sweep.runs.loc[sweep.runs["method_option"].isin(set(option)), "method"] if len(option) else []
    if len(labels) == 0:
        raise SweepError(f"sweep {sweep.name!r} matches no arm's retention (no match_retention_of run in it)")
    reference = str(labels.iloc[0])
    table = comparison_table(sweep, reference=reference)
    table.name, table.title = "vs_matched", f"{sweep.name}: each arm against {reference} (the retention they match)"
    return table
