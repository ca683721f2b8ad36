"""Paired statistics on synthetic predictions: exact values where they have a closed form, coverage where they don't."""

import math

import numpy as np
import pandas as pd
import pytest

from emloc.analysis.stats import candidate_js, paired, paired_js


def predictions(signature: str, correct: list[int], scores=None) -> pd.DataFrame:
    return pd.DataFrame({"signature": signature, "uid": [f"q{i}" for i in range(len(correct))], "correct": correct,
                         "prediction": [str(c) for c in correct], "scores": scores or [None] * len(correct)})  # fmt: skip


def test_candidate_js_is_symmetric_zero_on_equal_and_at_most_ln2():
    assert candidate_js([-1.0, -2.0], [-1.0, -2.0]) == pytest.approx(0.0, abs=1e-12)
    a, b = [-0.1, -5.0, -3.0], [-4.0, -0.2, -3.0]
    assert candidate_js(a, b) == pytest.approx(candidate_js(b, a))
    assert candidate_js([0.0, -1e4], [-1e4, 0.0]) == pytest.approx(math.log(2), rel=1e-6)
    assert candidate_js([-1.0, -2.0], [-11.0, -12.0]) == pytest.approx(0.0, abs=1e-12)  # shift-invariant


def test_paired_difference_agreement_and_counts_are_exact():
    ref = pd.concat([predictions("r0", [1, 1, 0, 0]), predictions("r1", [1, 0, 1, 0])])
    arm = pd.concat([predictions("a0", [1, 0, 1, 0]), predictions("a1", [1, 0, 1, 1])])
    seeds = {"r0": 0, "a0": 0, "r1": 1, "a1": 1}
    p = paired(arm, ref, seeds)
    assert (p.accuracy.seeds, p.accuracy.queries, p.wins, p.losses) == (2, 4, 2, 1)
    assert p.accuracy.mean == pytest.approx(np.mean([0.0, 0.25])) and p.accuracy.per_seed == (0.0, 0.25)
    assert p.agreement.mean == pytest.approx(5 / 8) and p.js is None
    assert not p.accuracy.has_interval and "4 common queries" in p.accuracy.note  # too few for an interval


def test_paired_interval_covers_a_known_difference():
    """Arm = reference with a 10-point gain on each of 3 seeds: the 95 % interval covers +0.10 and excludes 0."""
    rng = np.random.default_rng(1)
    frames, seeds = [], {}
    for s in range(3):
        ref = (rng.random(400) < 0.5).astype(int)
        arm = ref.copy()
        flip = rng.choice(np.flatnonzero(ref == 0), 40, replace=False)
        arm[flip] = 1
        frames += [
            predictions(f"r{s}", ref.tolist()).assign(kind="ref"),
            predictions(f"a{s}", arm.tolist()).assign(kind="arm"),
        ]
        seeds.update({f"r{s}": s, f"a{s}": s})
    df = pd.concat(frames)
    p = paired(df[df["kind"] == "arm"], df[df["kind"] == "ref"], seeds)
    a = p.accuracy
    assert a.mean == pytest.approx(0.10) and a.ci_low > 0 and a.ci_low <= 0.10 <= a.ci_high and a.p < 1e-3
    assert a.per_seed == pytest.approx((0.10, 0.10, 0.10)) and a.upper < a.ci_high
    assert p.losses == 0 and p.wins == 120


def test_paired_held_out_js_is_paired_by_seed_and_query():
    def rows(sig, js, uids=("q0", "q1", "q2")):
        return pd.DataFrame({"signature": sig, "uid": list(uids), "js": js})

    seeds = {"a0": 0, "a1": 1, "r0": 0, "r1": 1}
    arm = pd.concat([rows("a0", [0.010, 0.020, 0.030]), rows("a1", [0.004, 0.004, 0.004])])
    ref = pd.concat([rows("r0", [0.001, 0.002], uids=("q1", "q0")), rows("r1", [0.004, 0.004, 0.001])])
    q = paired_js(arm, ref, seeds)
    assert (q.seeds, q.queries) == (2, 2)  # the crossed table: the inputs every seed has (q0, q1), paired by uid
    assert q.mean == pytest.approx(np.mean([0.010 - 0.002, 0.020 - 0.001, 0.004 - 0.004, 0.004 - 0.004]))
    alone = paired_js(arm, None, seeds)  # against the full context itself: the arm's own held-out JS
    assert alone.mean == pytest.approx(np.mean([0.020, 0.004])) and alone.queries == 3


def test_the_crossed_table_is_what_every_seed_answered_and_the_interval_widens_with_the_seeds():
    """Two arms on 3 seeds × 60 shared queries; the arm is +10 points on seeds 0 and 2 but −10 on seed 1: the
    pooled mean is positive, the per-seed values show the disagreement, and the interval (seed level, 2 df) spans 0."""
    rng = np.random.default_rng(4)
    frames, seeds = [], {}
    for s, shift in enumerate((6, -6, 6)):
        ref = (rng.random(60) < 0.5).astype(int)
        arm = ref.copy()
        idx = rng.choice(np.flatnonzero(ref == (0 if shift > 0 else 1)), abs(shift), replace=False)
        arm[idx] = 1 - arm[idx]
        frames += [predictions(f"r{s}", ref.tolist()).assign(kind="ref"),
                   predictions(f"a{s}", arm.tolist()).assign(kind="arm")]  # fmt: skip
        seeds.update({f"r{s}": s, f"a{s}": s})
    df = pd.concat(frames)
    a = paired(df[df["kind"] == "arm"], df[df["kind"] == "ref"], seeds).accuracy
    assert a.per_seed == pytest.approx((0.1, -0.1, 0.1)) and a.mean == pytest.approx(0.1 / 3)
    assert a.ci_low < 0 < a.ci_high and a.p > 0.05
