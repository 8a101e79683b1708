"""Statistics for the report's claims: intervals and tests that hold at the paper's N = 100.

Choices (alpha = 0.05, two-sided unless said otherwise):

* one proportion k/n: the Wilson score interval (`wilson_interval`);
* a paired difference of two proportions on the same items (model B vs model A): Newcombe's score
  interval for paired proportions (method 10, `newcombe_paired_interval`) *and* McNemar's exact test
  (`mcnemar_exact`); the direction counts as significant only when both agree (`paired_binary`);
* a continuous quantity (attention mass, ...): the percentile bootstrap for the mean
  (`bootstrap_ci`, `n_boot` resamples) and, for paired differences, a sign-flip permutation test
  (`sign_flip_p`, `n_boot` random flips). A sample whose values are all equal gives the bootstrap
  nothing to resample; instead of a zero-width interval it returns the rule-of-three-style bound for a
  quantity known to lie in `bounds` (see `bootstrap_ci`);
* several tests of one claim: Holm's step-down adjustment (`holm`);
* a mean over a few independent runs (seeds) of per-item paired differences: `seed_pooled_difference`
  (run-to-run plus item variance, Student t with k - 1 degrees of freedom).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from frankenscope.errors import FrankenscopeError

ALPHA = 0.05
#: Resample means are computed in chunks of at most this many index draws (bounds memory for large n).
_CHUNK = 4_000_000


def _z(alpha: float) -> float:
    """The standard normal quantile z_{1 - alpha/2} (1.959964 for alpha = 0.05)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(1 - alpha / 2)


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise FrankenscopeError(f"alpha must be in (0, 1), got {alpha}")


# --------------------------------------------------------------------------- proportions
def wilson_interval(k: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n: the p with |k/n - p| <= z sqrt(p(1-p)/n), i.e.
    (p_hat + z^2/2n -/+ z sqrt(p_hat(1-p_hat)/n + z^2/4n^2)) / (1 + z^2/n). (nan, nan) when n = 0."""
    _check_alpha(alpha)
    if not 0 <= k <= n:
        raise FrankenscopeError(f"a proportion needs 0 <= k <= n (got k={k}, n={n})")
    if n == 0:
        return (math.nan, math.nan)
    z = _z(alpha)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def proportion_summary(flags: Sequence[bool], alpha: float = ALPHA, value_key: str = "value") -> dict[str, Any]:
    """{n, count, <value_key>, ci_low, ci_high}: the share k/n of True with its Wilson interval (nan when
    n = 0). The one summary of a 0/1 indicator: accuracies and fine-grained metrics call the share "value",
    the probes' change, flip and error rates "rate" (`value_key`), as their result files always have."""
    n, k = len(flags), int(sum(bool(f) for f in flags))
    lo, hi = wilson_interval(k, n, alpha)
    return {"n": n, "count": k, value_key: k / n if n else math.nan, "ci_low": lo, "ci_high": hi}


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b (only the first right) and c (only the
    second right): p = min(1, 2 * P[X <= min(b, c)]) with X ~ Binomial(b + c, 1/2); 1.0 when b + c = 0."""
    if b < 0 or c < 0:
        raise FrankenscopeError(f"McNemar counts must be >= 0 (got {b}, {c})")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def newcombe_paired_interval(n11: int, n10: int, n01: int, n00: int,
                             alpha: float = ALPHA) -> tuple[float, float]:
    """Newcombe (1998) method 10: score interval for p_B - p_A on paired binary data.

    Cells: n11 both right, n10 only A right, n01 only B right, n00 both wrong; n = their sum,
    p_A = (n11 + n10)/n, p_B = (n11 + n01)/n, theta = p_B - p_A. With (l_A, u_A), (l_B, u_B) the Wilson
    intervals of p_A, p_B, c = n11 n00 - n10 n01 and phi = c' / sqrt((n11+n10)(n01+n00)(n11+n01)(n10+n00))
    with c' = c - n/2 if c > n/2, 0 if 0 <= c <= n/2, c if c < 0 (phi = 0 when the product is 0):
        L = theta - sqrt((p_B - l_B)^2 - 2 phi (p_B - l_B)(u_A - p_A) + (u_A - p_A)^2)
        U = theta + sqrt((u_B - p_B)^2 - 2 phi (u_B - p_B)(p_A - l_A) + (p_A - l_A)^2)
    Its width is positive for every table (also when all items agree).
    """
    n = n11 + n10 + n01 + n00
    if min(n11, n10, n01, n00) < 0:
        raise FrankenscopeError(f"paired counts must be >= 0 (got {n11}, {n10}, {n01}, {n00})")
    if n == 0:
        return (math.nan, math.nan)
    pa, pb = (n11 + n10) / n, (n11 + n01) / n
    la, ua = wilson_interval(n11 + n10, n, alpha)
    lb, ub = wilson_interval(n11 + n01, n, alpha)
    den = (n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00)
    cross = n11 * n00 - n10 * n01
    shrunk = cross - n / 2 if cross > n / 2 else 0.0 if cross >= 0 else cross
    phi = shrunk / math.sqrt(den) if den > 0 else 0.0
    theta = pb - pa
    lo = theta - math.sqrt(max(0.0, (pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2))
    hi = theta + math.sqrt(max(0.0, (ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2))
    return (max(-1.0, lo), min(1.0, hi))


def paired_binary(a: Sequence[bool], b: Sequence[bool], alpha: float = ALPHA) -> dict[str, Any]:
    """Model B vs model A on the same items: diff = mean(b) - mean(a) with Newcombe's interval and
    McNemar's exact p. significant: p < alpha and the interval excludes 0 (both must agree).

    Returns {n, mean_a, mean_b, diff, ci_low, ci_high, n_a_only, n_b_only, p, significant, method}.
    """
    if len(a) != len(b):
        raise FrankenscopeError(f"a paired comparison needs the same items on both sides ({len(a)} vs {len(b)})")
    xa, xb = [bool(x) for x in a], [bool(x) for x in b]
    n11 = sum(1 for x, y in zip(xa, xb, strict=True) if x and y)
    n10 = sum(1 for x, y in zip(xa, xb, strict=True) if x and not y)
    n01 = sum(1 for x, y in zip(xa, xb, strict=True) if y and not x)
    n = len(xa)
    lo, hi = newcombe_paired_interval(n11, n10, n01, n - n11 - n10 - n01, alpha)
    p = mcnemar_exact(n10, n01)
    nan = math.nan
    return {"n": n, "mean_a": (n11 + n10) / n if n else nan, "mean_b": (n11 + n01) / n if n else nan,
            "diff": (n01 - n10) / n if n else nan, "ci_low": lo, "ci_high": hi, "n_a_only": n10, "n_b_only": n01,
            "p": p, "significant": bool(n and p < alpha and (lo > 0 or hi < 0)),
            "method": "Newcombe score interval (method 10) + exact McNemar"}


# --------------------------------------------------------------------------- continuous quantities
def degenerate_interval(value: float, n: int, bounds: tuple[float, float] | None,
                        alpha: float = ALPHA) -> tuple[float, float]:
    """The interval reported when all n values equal `value` (no spread for the bootstrap to see).

    With no value other than v in n draws, the share q of the population that differs from v is below
    q_max = 1 - (alpha/2)^(1/n) with confidence 1 - alpha/2 (the exact one-sided binomial bound; about
    3.7/n). For a quantity known to lie in [L, U] the mean then lies in
    [v - q_max (v - L), v + q_max (U - v)]; without bounds nothing is known: (-inf, inf).
    """
    if bounds is None:
        return (-math.inf, math.inf)
    low, high = bounds
    q = 1 - (alpha / 2) ** (1 / n)
    return (value - q * (value - low), value + q * (high - value))


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_boot: int = 2000, seed: int = 0,
                 alpha: float = ALPHA, bounds: tuple[float, float] | None = None) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) confidence interval of the mean.

    Draws `n_boot` resamples of size n with replacement (`np.random.default_rng(seed)`), takes each
    resample's mean and returns the alpha/2 and 1 - alpha/2 quantiles of those means (numpy's default
    linear interpolation). Empty input gives (nan, nan). Input whose values are all equal (or any input
    whose resampled means do not vary) never gives a zero-width interval: see `degenerate_interval`
    (`bounds` = the range the quantity can take, e.g. (0, 1) for an attention mass).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    n = x.size
    if n_boot < 1:
        raise FrankenscopeError(f"bootstrap needs n_boot >= 1 (got {n_boot})")
    _check_alpha(alpha)
    if n == 0:
        return (math.nan, math.nan)
    if np.all(x == x[0]):
        return degenerate_interval(float(x[0]), n, bounds, alpha)
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK // n)
    means = np.concatenate([x[rng.integers(0, n, size=(min(rows, n_boot - start), n))].mean(axis=1)
                            for start in range(0, n_boot, rows)])
    lo, hi = (float(v) for v in np.quantile(means, [alpha / 2, 1 - alpha / 2]))
    if hi <= lo:
        return degenerate_interval(float(x.mean()), n, bounds, alpha)
    return (lo, hi)


def sign_flip_p(d: Sequence[float] | np.ndarray, n_perm: int = 2000, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of H0 "the paired differences d_i are symmetric about 0":
    p = (1 + #{flips s: |mean(s * d)| >= |mean(d)|}) / (1 + n_perm), s_i = +-1 at random. 1.0 if all d_i = 0."""
    x = np.asarray(d, dtype=np.float64).ravel()
    if x.size == 0 or not np.any(x):
        return 1.0
    if n_perm < 1:
        raise FrankenscopeError(f"a permutation test needs n_perm >= 1 (got {n_perm})")
    rng = np.random.default_rng(seed)
    obs = abs(x.mean())
    hits = 0
    rows = max(1, _CHUNK // x.size)
    for start in range(0, n_perm, rows):
        s = rng.integers(0, 2, size=(min(rows, n_perm - start), x.size)) * 2 - 1
        hits += int((np.abs((s * x).mean(axis=1)) >= obs * (1 - 1e-12)).sum())
    return (1 + hits) / (1 + n_perm)


def paired_continuous(a: Sequence[float], b: Sequence[float], n_boot: int = 2000, seed: int = 0,
                      alpha: float = ALPHA, bounds: tuple[float, float] | None = None) -> dict[str, Any]:
    """B vs A on the same items, continuous values: diff = mean(b - a) with a paired bootstrap interval
    (`bounds`: the range of one difference, for `degenerate_interval`) and the sign-flip p-value;
    significant: p < alpha and the interval excludes 0."""
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if xa.shape != xb.shape:
        raise FrankenscopeError(f"a paired comparison needs the same items on both sides ({xa.size} vs {xb.size})")
    d = xb - xa
    n = int(d.size)
    lo, hi = bootstrap_ci(d, n_boot=n_boot, seed=seed, alpha=alpha, bounds=bounds)
    p = sign_flip_p(d, n_perm=n_boot, seed=seed)
    nan = math.nan
    return {"n": n, "mean_a": float(xa.mean()) if n else nan, "mean_b": float(xb.mean()) if n else nan,
            "diff": float(d.mean()) if n else nan, "ci_low": lo, "ci_high": hi, "p": p,
            "significant": bool(n and p < alpha and (lo > 0 or hi < 0)),
            "method": f"paired percentile bootstrap ({n_boot}) + sign-flip permutation test ({n_boot})"}


def _is_binary(x: np.ndarray) -> bool:
    return x.dtype == bool or bool(np.all((x == 0) | (x == 1)))


def paired_difference(a: Sequence[bool] | Sequence[float], b: Sequence[bool] | Sequence[float], seed: int = 0,
                      n_boot: int = 2000, alpha: float = ALPHA) -> dict[str, Any]:
    """mean(b - a) over the same items with its interval and test: `paired_binary` when every value is
    0/1 (True/False), `paired_continuous` otherwise (differences bounded by the observed range, unbounded
    when every value is the same number)."""
    xa, xb = np.asarray(a), np.asarray(b)
    if xa.shape != xb.shape:
        raise FrankenscopeError(f"paired_difference needs the same items on both sides ({xa.size} vs {xb.size})")
    if _is_binary(xa) and _is_binary(xb):
        return paired_binary(xa.astype(bool).tolist(), xb.astype(bool).tolist(), alpha)
    both = np.concatenate([xa.ravel(), xb.ravel()]).astype(np.float64)
    span = float(both.max() - both.min()) if both.size else 0.0
    # a single value everywhere tells nothing about the range: no bounds (an unbounded interval)
    return paired_continuous(xa, xb, n_boot=n_boot, seed=seed, alpha=alpha, bounds=(-span, span) if span else None)


def accuracy_summary(correct: Sequence[bool], seed: int = 0, alpha: float = ALPHA) -> dict[str, Any]:
    """{n, correct, accuracy, ci_low, ci_high}: accuracy = correct / n with its Wilson interval (nan if n = 0).
    `seed` is accepted for compatibility; the interval is analytic."""
    s = proportion_summary(correct, alpha)
    return {"n": s["n"], "correct": s["count"], "accuracy": s["value"], "ci_low": s["ci_low"], "ci_high": s["ci_high"]}


# --------------------------------------------------------------------------- multiplicity and seeds
def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: sort p_(1) <= ... <= p_(m); adj_(i) = max_{j<=i} min(1, (m-j+1) p_(j)).
    A test is significant at family-wise level alpha when its adjusted p < alpha. NaN stays NaN."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    m = len(order)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student t CDF: 1 - I_{df/(df+t^2)}(df/2, 1/2)/2 for t >= 0 (symmetric for t < 0)."""
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t >= 0 else tail


def t_ppf(q: float, df: float) -> float:
    """Student t quantile by bisection on `t_cdf` (q in (0, 1))."""
    lo, hi = -1e6, 1e6
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
    return (lo + hi) / 2


def seed_pooled_difference(per_seed: Sequence[tuple[Sequence[bool], Sequence[bool]]],
                           alpha: float = ALPHA) -> dict[str, Any]:
    """B - A over k >= 2 independent runs (seeds), each run paired over the same n items.

    D_s = mean_i(b_s(i) - a_s(i)) per seed; estimate D = mean_s D_s. Its standard error adds the
    run-to-run variance and the item variance: SE^2 = var_s(D_s)/k + var_i(dbar_i)/n, with dbar_i the
    per-item difference averaged over seeds (this counts some run noise twice: conservative). Interval
    D -/+ t_{1-alpha/2, k-1} SE and p = 2 (1 - T_{k-1}(|D|/SE)) (k - 1 degrees of freedom: conservative).
    significant: p < alpha (the interval then excludes 0).
    """
    k = len(per_seed)
    if k < 2:
        raise FrankenscopeError(f"pooling over seeds needs at least 2 runs (got {k})")
    n = len(per_seed[0][0])
    if n == 0 or any(len(a) != n or len(b) != n for a, b in per_seed):
        raise FrankenscopeError("every seed must be paired over the same (non-empty) items")
    d = np.array([[float(y) - float(x) for x, y in zip(a, b, strict=True)] for a, b in per_seed])
    ds = d.mean(axis=1)
    est = float(ds.mean())
    item_var = float(d.mean(axis=0).var(ddof=1)) / n if n > 1 else 0.0
    se = math.sqrt(float(ds.var(ddof=1)) / k + item_var)
    if se == 0:  # every run and item agree: no spread to see; decide on the pooled (seed, item) pairs
        pooled = paired_binary([x for a, _ in per_seed for x in a], [y for _, b in per_seed for y in b], alpha)
        return {**pooled, "n": n, "k": k, "per_seed": ds.tolist(), "se": 0.0,
                "method": f"{k} seeds without any spread: {pooled['method']} on the pooled pairs"}
    t = t_ppf(1 - alpha / 2, k - 1)
    p = 2 * (1 - t_cdf(abs(est) / se, k - 1))
    return {"n": n, "k": k, "diff": est, "per_seed": ds.tolist(), "se": se, "ci_low": est - t * se,
            "ci_high": est + t * se, "p": p, "significant": bool(p < alpha),
            "method": f"mean over {k} seeds; SE from run-to-run and item variance; t with {k - 1} df"}
