"""The statistics checked against the design they serve: 3 demo seeds × 256 shared queries, per-query effects shared
by the seeds (cross-seed correlation of the per-query differences 0 to 0.35, as measured on the default task), a
demo-seed effect on the arm, and differences that take the values −1 / 0 / +1 like paired accuracies.

`crossed` must cover the true difference in 93–97 % of simulated studies, and its test must reject a true null in
at most 6 % at α = 5 %. Fixed RNG; a few seconds."""

import numpy as np
import pytest

from emloc.analysis.stats import components, crossed

SEEDS, QUERIES, STUDIES = 3, 256, 2000
FLIP = 0.3  # P(the two arms disagree on a query): the interaction's variance


def study(rng: np.random.Generator, truth: float, seed_sd: float, rho: float) -> np.ndarray:
    """One simulated seed × query table of paired differences."""
    query_sd = np.sqrt(rho / (1 - rho) * FLIP)
    noise = rng.choice([-1.0, 0.0, 1.0], p=[FLIP / 2, 1 - FLIP, FLIP / 2], size=(SEEDS, QUERIES))
    seed = seed_sd * rng.standard_normal(SEEDS)[:, None]
    query = query_sd * rng.standard_normal(QUERIES)[None, :]
    return truth + seed + query + noise


@pytest.mark.parametrize("seed_sd", [0.0, 0.03, 0.1])  # none, comparable to the query noise, dominant
@pytest.mark.parametrize("rho", [0.0, 0.2, 0.35])
def test_interval_covers_and_the_test_keeps_its_level(seed_sd, rho):
    rng = np.random.default_rng([2026, round(rho * 100), round(seed_sd * 100)])  # one stream per scenario
    covered = rejected = 0
    for _ in range(STUDIES):
        hit = crossed(study(rng, 0.03, seed_sd, rho), n=1000)
        covered += hit.ci_low <= 0.03 <= hit.ci_high
        null = crossed(study(rng, 0.0, seed_sd, rho), n=1000)
        rejected += null.p < 0.05
        assert (null.p < 0.05) == (not null.ci_low <= 0 <= null.ci_high)  # the test is the interval's dual
        assert null.upper <= null.ci_high  # one-sided 95 % sits inside the two-sided 95 %
    assert 0.93 <= covered / STUDIES <= 0.97
    assert rejected / STUDIES <= 0.06


def test_the_old_nested_bootstrap_would_fail_here():
    """The seeds-then-queries-within-seed bootstrap this replaced, on the same studies: when the demo seed moves the
    effect it under-covers well below 93 % (the reason for the crossed design)."""
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(400):
        table = study(rng, 0.03, 0.1, 0.2)
        picks = rng.integers(0, SEEDS, (300, SEEDS))
        boots = [np.mean([table[s][rng.integers(0, QUERIES, QUERIES)].mean() for s in p]) for p in picks]
        covered += np.quantile(boots, 0.025) <= 0.03 <= np.quantile(boots, 0.975)
    assert covered / 400 < 0.9


def test_components_recover_the_simulated_variances():
    rng = np.random.default_rng(3)
    big = np.stack([study(rng, 0.0, 0.0, 0.2) for _ in range(50)])  # no seed effect: σ_a² ≈ 0
    comps = [components(t) for t in big]
    assert np.mean([c.error for c in comps]) == pytest.approx(FLIP, rel=0.05)
    assert np.mean([c.query for c in comps]) == pytest.approx(0.2 / 0.8 * FLIP, rel=0.15)
    assert np.mean([c.seed for c in comps]) < 0.002


def test_too_few_seeds_or_queries_give_no_interval():
    rng = np.random.default_rng(0)
    one = crossed(rng.normal(size=(1, 100)))
    assert not one.has_interval and "1 common demo seed" in one.note and np.isnan(one.ci_low)
    few = crossed(rng.normal(size=(3, 19)))
    assert not few.has_interval and "19 common queries" in few.note and np.isnan(few.p)
    assert crossed(rng.normal(size=(2, 20))).has_interval
