"""Power of the crossed test: the formula against a simulation of the same design, and its monotonicity."""

import numpy as np
import pytest

from emloc.analysis.power import power
from emloc.analysis.stats import Components, crossed


def simulate(comp: Components, diff: float, seeds: int, queries: int, studies: int, rng) -> float:
    hits = 0
    for _ in range(studies):
        table = (diff + np.sqrt(comp.seed) * rng.standard_normal(seeds)[:, None]
                 + np.sqrt(comp.query) * rng.standard_normal(queries)[None, :]
                 + np.sqrt(comp.error) * rng.standard_normal((seeds, queries)))  # fmt: skip
        hits += crossed(table, n=500).p < 0.05
    return hits / studies


@pytest.mark.parametrize("comp", [Components(0.0, 0.05, 0.3), Components(4e-4, 0.05, 0.3)])
def test_power_matches_a_simulation_of_the_design(comp):
    rng = np.random.default_rng(11)
    for seeds, queries in ((3, 256), (5, 512)):
        predicted = power(comp, 0.05, seeds, queries)
        assert 0.15 < predicted < 0.95  # a regime where the check means something
        assert simulate(comp, 0.05, seeds, queries, 600, rng) == pytest.approx(predicted, abs=0.08)


def test_power_grows_with_queries_seeds_and_the_difference():
    comp = Components(2e-4, 0.05, 0.3)
    assert power(comp, 0.02, 3, 256) < power(comp, 0.02, 3, 1024) < power(comp, 0.02, 10, 1024)
    assert power(comp, 0.01, 5, 512) < power(comp, 0.05, 5, 512)
    assert power(Components(0, 0, 0), 0.01, 3, 64) == 1.0
