"""The percentile shared by the soak and the bench, against known values."""

from __future__ import annotations

import random

import numpy
import pytest

from bot.stats import percentile


def test_p95_of_twenty_samples_is_the_nineteenth_not_the_max():
    values = [float(v) for v in range(1, 21)]
    random.Random(1).shuffle(values)
    assert percentile(values, 0.95) == 19.0
    assert percentile(values, 0.5) == 10.0
    assert percentile(values, 1.0) == 20.0
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.25) == 1.0


@pytest.mark.parametrize("n", [1, 2, 5, 19, 20, 21, 40, 100, 101])
@pytest.mark.parametrize("q", [0.05, 0.5, 0.9, 0.95, 0.99])
def test_matches_numpys_nearest_rank_definition(n, q):
    rng = random.Random(n)
    values = [rng.uniform(0, 100) for _ in range(n)]
    assert percentile(values, q) == numpy.percentile(values, q * 100, method="inverted_cdf")


def test_the_soak_and_the_bench_use_it():
    from bot import bench
    from bot.checks import soak
    assert soak.percentile is percentile and bench.percentile is percentile


def test_no_samples_or_a_bad_fraction_is_refused():
    with pytest.raises(ValueError):
        percentile([], 0.95)
    with pytest.raises(ValueError):
        percentile([1.0], 95)
