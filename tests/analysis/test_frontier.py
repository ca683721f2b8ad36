"""The fidelity–retention frontier: which grid points no other point beats on both retention and held-out JS."""

import pandas as pd

from emloc.analysis.frame import Sweep
from emloc.analysis.frontier import frontier_figure, frontier_table, points


def sweep(more_shots: tuple[int, ...] = ()) -> Sweep:
    """Three arms at 64 shots, two seeds each: B dominates C; A and B trade retention for divergence. At each of
    `more_shots`, B and C alone."""
    grid = {("A", 0.2): (0.20, 0.030), ("A", 0.4): (0.40, 0.010), ("B", 0.3): (0.30, 0.008), ("C", 0.3): (0.35, 0.020),
            ("full", None): (1.0, None)}  # fmt: skip
    rows, fid = [], []
    cells = [(64, *cell) for cell in grid.items()] + [
        (n, *c) for n in more_shots for c in grid.items() if c[0][0] != "A"
    ]
    for shots, (method, knob), (ret, js) in cells:
        for seed in (0, 1):
            sig = f"{method}{knob}{seed}{shots}"
            rows.append({"signature": sig, "method": method, "method.keep_ratio": knob, "task.demo_seed": seed,
                         "task.num_shots": shots, "retention": ret, "heldout_js": js, "accuracy": 0.5,
                         "compresses": method != "full", "uses_demos": True, "searches": False})  # fmt: skip
            if js is not None:
                fid += [{"signature": sig, "curve": "query", "index": i, "uid": f"f{i}", "js": js * (0.5 + i / 24)}
                        for i in range(25)]  # fmt: skip
    return Sweep("toy", "toy", pd.DataFrame(rows), ["method", "method.keep_ratio", "task.num_shots"],
                 fidelity=pd.DataFrame(fid))  # fmt: skip


def test_frontier_marks_the_points_no_other_beats_on_both():
    agg = points(sweep())
    on = {(r["method"], r["method.keep_ratio"]) for _, r in agg.iterrows() if r["on_frontier"]}
    assert on == {("A", 0.2), ("B", 0.3)}  # A 0.4 is beaten by B (less kept, less divergence); C by B; full left out
    assert len(agg) == 4 and (agg["heldout_js_upper"] >= agg["heldout_js_mean"]).all()


def test_frontier_table_and_figure():
    table = frontier_table(sweep())
    assert list(table.frame["frontier"]).count("✓") == 2 and "[" in table.frame["held-out JS (×10⁻³) [95% CI]"][0]
    fig = frontier_figure(sweep())
    assert len(fig.axes) == 2


def test_each_method_keeps_its_style_in_every_panel():
    """A method absent from one shot count must not shift the others' colours and markers in the next panel."""
    fig = frontier_figure(sweep(more_shots=(256,)))
    top = [ax for ax in fig.axes if ax.get_yscale() == "log"]
    styles = [{bars.get_label(): (bars.lines[0].get_color(), bars.lines[0].get_marker()) for bars in ax.containers}
              for ax in top]  # fmt: skip
    assert set(styles[0]) == {"A", "B", "C"} and set(styles[1]) == {"B", "C"}
    assert all(styles[1][m] == styles[0][m] for m in ("B", "C"))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["A", "B", "C"]


def test_a_point_names_only_the_knobs_its_own_grid_sets():
    """With per-method grids, a column another method's grid varies (here `protect_share`, set by C's grid) is not
    printed as A's or B's knob, although their runs carry a value for it."""
    s = sweep()
    s.runs["method.protect_share"] = 0.5
    s.runs["method_option"] = s.runs["method"].str.lower()
    s.by = [*s.by, "method.protect_share"]
    s.grids = {"a": {"method.keep_ratio": []}, "b": {"method.keep_ratio": []},
               "c": {"method.keep_ratio": [], "method.protect_share": []}}  # fmt: skip
    knob = dict(zip(points(s)["method"], points(s)["knob"]))
    assert knob["B"] == "keep_ratio = 0.3" and knob["C"] == "keep_ratio = 0.3, protect_share = 0.5"
    s.grids = {}  # no sweep file: every grid column is a knob
    assert dict(zip(points(s)["method"], points(s)["knob"]))["B"] == "keep_ratio = 0.3, protect_share = 0.5"
