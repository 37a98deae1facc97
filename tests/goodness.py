"""Goodness of fit for tests that compare sampled counts with exact probabilities."""

from __future__ import annotations

import numpy as np
from scipy import stats


def chi_square_p(counts: np.ndarray, probs: np.ndarray, min_expected: float = 5.0) -> float:
    """Pearson goodness of fit, pooling the cells with expected count < 5 into one. A count in a
    cell of probability exactly 0 (a path truncation removes) is impossible: p = 0."""
    if (counts[probs == 0] > 0).any():
        return 0.0
    exp = probs * counts.sum()
    small = exp < min_expected
    obs_c = np.append(counts[~small], counts[small].sum())
    exp_c = np.append(exp[~small], exp[small].sum())
    keep = exp_c > 0
    return float(stats.chisquare(obs_c[keep], exp_c[keep] * obs_c[keep].sum() / exp_c[keep].sum()).pvalue)
