"""The paper's tables from a `Sweep`: Markdown for people, CSV with every statistic for programs.

* `summary_table` — every grid point: accuracy, retention, memory, latency, compression time (mean ± std over
  demo seeds).
* `comparison_table` — every arm against a reference arm on the same queries (default: full context at the same
  other grid values): the paired accuracy difference with its 95 % CI, agreement, wins / losses with McNemar's p,
  and the JS divergence between their candidate distributions (`stats.paired`). Needs the runs' predictions.

It deliberately reads no files and draws nothing: loading is `emloc.analysis.loading`, drawing
`emloc.analysis.figures`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from emloc.analysis.frame import PARAM_LABELS, SEED, Sweep, SweepError, fmt_value
from emloc.analysis.stats import aggregate, paired, paired_js

# (column, header, scale, decimals) of the tables
TABLE_METRICS = (
    ("accuracy", "accuracy (%)", 100, 1), ("retention", "retention (%)", 100, 1),
    ("heldout_js", "held-out JS (×10⁻³)", 1000, 1),
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
        "time of the memory's build (both depend on how busy the machine was); peak RSS = the run's process."
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
    for col, values in (extra or {}).items():
        frame[col] = values
    data = agg.drop(columns=["signatures"], errors="ignore")
    return Table(name, title, frame, data, _notes(sweep))


def summary_table(sweep: Sweep) -> Table:
    """Every grid point of the sweep: accuracy, retention, memory, latency, compression time (mean ± std)."""
    return _table(sweep, aggregate(sweep.runs, sweep.by), "summary", f"{sweep.name}: results per grid point")


def _reference_of(agg: pd.DataFrame, by: list[str], reference: str | None) -> dict[int, int]:
    """Row → the row of its reference arm: `reference` (a method label), else the arm that uses demonstrations
    without compressing them (full context), at the same values of the other grid columns."""
    others = [c for c in by if c != "method"]
    is_ref = agg["method"] == reference if reference else agg["uses_demos"] & ~agg["compresses"]
    out = {}
    for i, row in agg.iterrows():
        same = is_ref & pd.Series([all(fmt_value(r[c]) == fmt_value(row[c]) for c in others)
                                   for _, r in agg.iterrows()], index=agg.index)  # fmt: skip
        if same.any() and not is_ref[i]:
            out[i] = int(same.idxmax())
    return out


def comparison_table(sweep: Sweep, reference: str | None = None) -> Table:
    """Every arm against the reference arm on the same queries (default: full context), with 95 % paired CIs."""
    if "method" not in sweep.by:
        raise SweepError(f"sweep {sweep.name!r} has no method axis: nothing to compare (grid: {sweep.by})")
    if sweep.predictions is None or sweep.predictions.empty:
        raise SweepError(f"paired comparisons need the runs' predictions.jsonl; none were loaded for {sweep.name!r}")
    agg = aggregate(sweep.runs, sweep.by)
    refs = _reference_of(agg, sweep.by, reference)
    if not refs:
        raise SweepError(f"no reference arm ({reference or 'full context'}) in sweep {sweep.name!r}")
    seed_of = dict(zip(sweep.runs["signature"], sweep.runs[SEED]))
    preds = sweep.predictions
    js_head = "Δ held-out JS (×10⁻³) [95% CI]"
    cols = {k: [] for k in ("vs", "Δ accuracy (pp) [95% CI]", js_head, "agreement (%)", "wins / losses (McNemar p)",
                            "JS")}  # fmt: skip
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
        stats.append(
            {"reference": ref["method"], **vars(p), **({f"js_{k}": v for k, v in vars(q).items()} if q else {})}
        )
        cols["vs"].append(str(ref["method"]))
        cols["Δ accuracy (pp) [95% CI]"].append(f"{p.diff * 100:+.1f} [{p.ci_low * 100:+.1f}, {p.ci_high * 100:+.1f}]")
        cols[js_head].append(f"{q.diff * 1e3:+.1f} [{q.ci_low * 1e3:+.1f}, {q.ci_high * 1e3:+.1f}]" if q else "–")
        cols["agreement (%)"].append(f"{p.agreement * 100:.1f}")
        cols["wins / losses (McNemar p)"].append(f"{p.wins} / {p.losses} ({p.mcnemar_p:.2g})")
        cols["JS"].append("–" if math.isnan(p.js) else f"{p.js:.4f}")
    table = _table(sweep, agg, "comparison", f"{sweep.name}: each arm against {reference or 'full context'}", cols)
    table.data = pd.concat([table.data, pd.DataFrame(stats).add_prefix("paired_")], axis=1)
    table.notes += (
        " Δ accuracy = arm − reference on the same queries of the same demo seeds, mean over seeds; 95 % CI from a"
        " two-level bootstrap (queries within a seed, then seeds). Agreement = same prediction; wins / losses = "
        "queries only the arm / only the reference gets right, with McNemar's exact two-sided p; JS = mean JS "
        "divergence (nats) between the two softmax distributions over each query's candidate answers. Δ held-out JS"
        " = the arm's held-out JS to the full context (next token, full vocabulary, on the runs' fidelity queries)"
        " − the reference's, paired by query, same bootstrap; against the full context it is the arm's own, with its"
        " CI."
    )
    return table


def _paired_js(queries: pd.DataFrame | None, row: pd.Series, ref: pd.Series, seed_of: dict):
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
