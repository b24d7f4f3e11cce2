"""Corrections for testing many layers, epochs or seeds at once."""

from __future__ import annotations

import numpy as np
from scipy.stats import false_discovery_control


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini–Hochberg q-values (scipy's `false_discovery_control`) of an array of p-values of any shape; NaN
    p-values stay NaN and do not count as tests. q ≤ α keeps the expected false discovery rate over the whole array
    at or below α (independent or positively dependent tests)."""
    p = np.asarray(p_values, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        q[finite] = false_discovery_control(p[finite])
    return q
