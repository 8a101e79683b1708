"""Accuracy with percentile-bootstrap confidence intervals, and paired differences between two models."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from frankenscope.errors import FrankenscopeError

#: Resample means are computed in chunks of at most this many index draws (bounds memory for large n).
_CHUNK = 4_000_000


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_boot: int = 2000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) confidence interval of the mean.

    Draws `n_boot` resamples of size n with replacement (`np.random.default_rng(seed)`), takes each
    resample's mean and returns the alpha/2 and 1 - alpha/2 quantiles of those means (numpy's default
    linear interpolation). Empty input gives (nan, nan); input whose values are all equal gives (v, v).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    n = x.size
    if n == 0:
        return (math.nan, math.nan)
    if np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    if n_boot < 1 or not 0 < alpha < 1:
        raise FrankenscopeError(f"bootstrap needs n_boot >= 1 and 0 < alpha < 1 (got {n_boot}, {alpha})")
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK // n)
    means = np.concatenate([x[rng.integers(0, n, size=(min(rows, n_boot - start), n))].mean(axis=1)
                            for start in range(0, n_boot, rows)])
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def accuracy_summary(correct: Sequence[bool], seed: int = 0) -> dict[str, Any]:
    """{n, correct, accuracy, ci_low, ci_high}: accuracy = correct / n with its 95% bootstrap CI (nan if n = 0)."""
    x = np.asarray(correct, dtype=np.float64)
    n = int(x.size)
    lo, hi = bootstrap_ci(x, seed=seed)
    return {"n": n, "correct": int(x.sum()), "accuracy": float(x.mean()) if n else math.nan,
            "ci_low": lo, "ci_high": hi}


def paired_difference(a: Sequence[bool], b: Sequence[bool], seed: int = 0) -> dict[str, Any]:
    """Mean paired difference mean(b - a) over the same items, with a 95% bootstrap CI.

    Items are resampled jointly (the same indices for a and b), i.e. the bootstrap runs on the per-item
    differences d_i = b_i - a_i. Returns {n, mean_a, mean_b, diff, ci_low, ci_high}.
    """
    xa = np.asarray(a, dtype=np.float64)
    xb = np.asarray(b, dtype=np.float64)
    if xa.shape != xb.shape:
        raise FrankenscopeError(f"paired_difference needs the same items on both sides ({xa.size} vs {xb.size})")
    d = xb - xa
    n = int(d.size)
    lo, hi = bootstrap_ci(d, seed=seed)
    nan = math.nan
    return {"n": n, "mean_a": float(xa.mean()) if n else nan, "mean_b": float(xb.mean()) if n else nan,
            "diff": float(d.mean()) if n else nan, "ci_low": lo, "ci_high": hi}
