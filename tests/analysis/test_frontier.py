"""The fidelity–retention frontier: which grid points no other point beats on both retention and held-out JS."""

import pandas as pd

from emloc.analysis.frame import Sweep
from emloc.analysis.frontier import frontier_figure, frontier_table, points


def sweep() -> Sweep:
    """Three arms at 64 shots, two seeds each: B dominates C; A and B trade retention for divergence."""
    grid = {("A", 0.2): (0.20, 0.030), ("A", 0.4): (0.40, 0.010), ("B", 0.3): (0.30, 0.008), ("C", 0.3): (0.35, 0.020),
            ("full", None): (1.0, None)}  # fmt: skip
    rows, fid = [], []
    for (method, knob), (ret, js) in grid.items():
        for seed in (0, 1):
            sig = f"{method}{knob}{seed}"
            rows.append({"signature": sig, "method": method, "method.keep_ratio": knob, "task.demo_seed": seed,
                         "task.num_shots": 64, "retention": ret, "heldout_js": js, "accuracy": 0.5,
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
