"""Paired statistics on synthetic predictions: exact values where they have a closed form, coverage where they don't."""

import math

import numpy as np
import pandas as pd
import pytest

from emloc.analysis.stats import candidate_js, mcnemar_exact, paired, paired_js


def predictions(signature: str, correct: list[int], scores=None) -> pd.DataFrame:
    return pd.DataFrame({"signature": signature, "uid": [f"q{i}" for i in range(len(correct))], "correct": correct,
                         "prediction": [str(c) for c in correct], "scores": scores or [None] * len(correct)})  # fmt: skip


def test_mcnemar_exact_matches_the_binomial_tail():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)  # one-sided tail 1/64, doubled
    assert mcnemar_exact(72, 45) == pytest.approx(0.0160, abs=0.002)  # the SnapKV-vs-default count


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
    assert (p.seeds, p.queries, p.wins, p.losses) == (2, 8, 2, 1)
    assert p.diff == pytest.approx(np.mean([0.0, 0.25]))
    assert p.agreement == pytest.approx(5 / 8) and math.isnan(p.js)
    assert p.ci_low <= p.diff <= p.ci_high


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
    assert p.diff == pytest.approx(0.10) and p.ci_low > 0 and p.ci_low <= 0.10 <= p.ci_high
    assert p.losses == 0 and p.wins == 120 and p.mcnemar_p < 1e-10


def test_paired_held_out_js_is_paired_by_seed_and_query():
    def rows(sig, js, uids=("q0", "q1", "q2")):
        return pd.DataFrame({"signature": sig, "uid": list(uids), "js": js})

    seeds = {"a0": 0, "a1": 1, "r0": 0, "r1": 1}
    arm = pd.concat([rows("a0", [0.010, 0.020, 0.030]), rows("a1", [0.004, 0.004, 0.004])])
    ref = pd.concat([rows("r0", [0.001, 0.002], uids=("q1", "q0")), rows("r1", [0.004, 0.004, 0.001])])
    q = paired_js(arm, ref, seeds)
    assert (q.seeds, q.queries) == (2, 5)  # seed 0 pairs q0 and q1 only, by uid
    assert q.diff == pytest.approx(np.mean([np.mean([0.010 - 0.002, 0.020 - 0.001]), 0.001]))
    assert q.ci_low <= q.diff <= q.ci_high
    alone = paired_js(arm, None, seeds)  # against the full context itself: the arm's own held-out JS
    assert alone.diff == pytest.approx(np.mean([0.020, 0.004])) and alone.queries == 6
