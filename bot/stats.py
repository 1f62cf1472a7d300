"""The one percentile definition gwbot uses, for the soak's figures and `gwbot bench` alike."""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``q`` of the samples at or
    below it (numpy's ``method='inverted_cdf'``). For 20 samples p95 is the 19th, not the max.
    ``q`` is a fraction, 0 < q <= 1; ``values`` need not be sorted and must not be empty."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no samples")
    if not 0 < q <= 1:
        raise ValueError(f"percentile fraction must be in (0, 1], got {q}")
    # The epsilon keeps 0.95 * 20 = 19.000000000000004-style float noise from adding a rank.
    rank = math.ceil(q * len(ordered) - 1e-9)
    return ordered[max(rank, 1) - 1]
