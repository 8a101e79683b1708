"""Known answers for the statistics behind the report's claims (values checked against scipy and
published reference tables)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from frankenscope.errors import FrankenscopeError
from frankenscope.evaluate.finegrained import compare_models
from frankenscope.evaluate.metrics import (
    bootstrap_ci,
    holm,
    mcnemar_exact,
    newcombe_paired_interval,
    paired_binary,
    paired_continuous,
    seed_pooled_difference,
    sign_flip_p,
    t_cdf,
    t_ppf,
    wilson_interval,
)

scipy_stats = pytest.importorskip("scipy.stats")


def _discordant(only_a: int, only_b: int, n: int = 100) -> tuple[list[bool], list[bool]]:
    """n items: `only_a` right only for A, `only_b` right only for B, half of the rest right for both."""
    rest = n - only_a - only_b
    a = [True] * only_a + [False] * only_b + [True] * (rest // 2) + [False] * (rest - rest // 2)
    b = [False] * only_a + [True] * only_b + [True] * (rest // 2) + [False] * (rest - rest // 2)
    return a, b


@pytest.mark.parametrize("only_a, only_b, significant", [(4, 0, False), (0, 4, False), (5, 0, False),
                                                         (0, 5, False), (10, 0, True), (0, 10, True)])
def test_paired_binary_small_counts(only_a: int, only_b: int, significant: bool) -> None:
    """4-vs-0 (McNemar p = 0.125) and 5-vs-0 (p = 0.0625) discordant items out of 100 are noise;
    10-vs-0 (p = 0.002) is not. The old paired bootstrap called 4-vs-0 significant (CI [0.01, 0.08])."""
    a, b = _discordant(only_a, only_b)
    d = paired_binary(a, b)
    assert d["significant"] is significant
    assert d["p"] == pytest.approx(scipy_stats.binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue)
    assert d["diff"] == pytest.approx((only_b - only_a) / 100)
    assert d["ci_low"] < d["diff"] < d["ci_high"]
    if not significant:
        assert d["ci_low"] <= 0 <= d["ci_high"] or d["p"] >= 0.05


def test_all_equal_inputs_give_positive_width() -> None:
    for a, b in (([False] * 5, [True] * 5), ([True] * 5, [True] * 5), ([False] * 100, [False] * 100)):
        d = paired_binary(a, b)
        assert d["ci_high"] - d["ci_low"] > 0.05
    lo, hi = wilson_interval(5, 5)
    assert hi == 1.0 and lo < 0.6
    lo, hi = bootstrap_ci([0.3] * 100, bounds=(0.0, 1.0))
    assert lo < 0.3 < hi
    # the bound is exact: q = 1 - 0.025^(1/n) is where P(no other value in n draws) = 0.025
    q = 1 - 0.025 ** (1 / 100)
    assert (lo, hi) == pytest.approx((0.3 - q * 0.3, 0.3 + q * 0.7))
    from frankenscope.evaluate.metrics import paired_difference

    same = paired_difference([0.3] * 40, [0.3] * 40)  # one value everywhere: no range known
    assert same["ci_low"] == -math.inf and same["ci_high"] == math.inf
    d = paired_continuous([0.3] * 40, [0.3] * 40, bounds=(-1.0, 1.0))
    assert d["ci_low"] < 0 < d["ci_high"] and d["p"] == 1.0 and not d["significant"]


def test_wilson_matches_scipy() -> None:
    for k, n in ((0, 10), (3, 10), (10, 10), (37, 100), (1, 400)):
        ref = scipy_stats.binomtest(k, n).proportion_ci(method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(FrankenscopeError):
        wilson_interval(3, 2)


def test_mcnemar_matches_scipy_binomtest() -> None:
    for b, c in ((1, 9), (0, 5), (4, 0), (7, 7), (30, 12)):
        assert mcnemar_exact(b, c) == pytest.approx(scipy_stats.binomtest(b, b + c, 0.5).pvalue)


def test_newcombe_reference_values() -> None:
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" ch. 8 (Cavo et al. 2012
    # table [[59, 6], [16, 80]]): Newcombe square-and-add p_1+ - p_+1 = -0.0621, 95% CI -0.1186 to -0.0046.
    # Here the difference is p_B - p_A with A the rows: the mirror image.
    lo, hi = newcombe_paired_interval(59, 6, 16, 80)
    assert (lo, hi) == pytest.approx((0.0046, 0.1186), abs=5e-5)
    lo, hi = newcombe_paired_interval(59, 16, 6, 80)
    assert (lo, hi) == pytest.approx((-0.1186, -0.0046), abs=5e-5)


def test_holm_reference() -> None:
    p = [0.01, 0.04, 0.03, 0.2]
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.01]) == pytest.approx([0.5, 0.02])
    adj = holm([0.01, math.nan])
    assert adj[0] == pytest.approx(0.01) and math.isnan(adj[1])
    # six independent null tests: "any raw p < 0.05" fires ~26% of the time, Holm keeps it <= 5%
    rng = np.random.default_rng(0)
    ps = rng.random((4000, 6))
    assert (ps < 0.05).any(axis=1).mean() > 0.2
    assert np.mean([min(holm(list(row))) < 0.05 for row in ps]) <= 0.06


def test_t_distribution_matches_scipy() -> None:
    for df in (1, 2, 3.5, 9, 40):
        assert t_ppf(0.975, df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-9)
        for x in (-3.0, -0.4, 0.0, 1.1, 6.0):
            assert t_cdf(x, df) == pytest.approx(scipy_stats.t.cdf(x, df), abs=1e-12)


def _run(shift: int) -> tuple[list[bool], list[bool]]:
    """400 items, A right on the first 200; B = A with `shift` items changed (gained if > 0, lost if < 0)."""
    a = [True] * 200 + [False] * 200
    b = list(a)
    for i in range(abs(shift)):
        b[200 + i if shift > 0 else i] = shift > 0
    return a, b


def test_seed_pooled_difference_includes_run_variance() -> None:
    # every seed alone is significant (+-20 of 400 discordant one way, McNemar p ~ 2e-6) but the seeds
    # disagree about the sign: pooled over seeds, nothing is significant
    assert all(paired_binary(*_run(s))["significant"] for s in (20, -20))
    pooled = seed_pooled_difference([_run(20), _run(-20), _run(16)])
    assert pooled["k"] == 3 and not pooled["significant"]
    assert pooled["diff"] == pytest.approx(16 / 1200)
    assert pooled["ci_high"] - pooled["ci_low"] == pytest.approx(2 * t_ppf(0.975, 2) * pooled["se"])
    assert pooled["se"] ** 2 >= np.var(pooled["per_seed"], ddof=1) / 3  # the run-to-run part is in it
    # seeds that agree: significant
    assert seed_pooled_difference([_run(20), _run(24), _run(22)])["significant"]
    with pytest.raises(FrankenscopeError):
        seed_pooled_difference([_run(20)])


def test_sign_flip_and_bootstrap_honour_n_boot() -> None:
    rng = np.random.default_rng(2)
    d = rng.normal(0.2, 1.0, 60)
    assert sign_flip_p(d, n_perm=99, seed=0) * 100 == pytest.approx(round(sign_flip_p(d, n_perm=99, seed=0) * 100))
    assert bootstrap_ci(d, n_boot=50, seed=0) != bootstrap_ci(d, n_boot=5000, seed=0)
    assert sign_flip_p(np.ones(10)) == pytest.approx(2 / 1024, abs=0.01)  # exact value 2/2^10, Monte Carlo
    with pytest.raises(FrankenscopeError):
        bootstrap_ci(d, n_boot=0)


def test_compare_models_honours_n_boot() -> None:
    rng = np.random.default_rng(3)
    ind_a = {f"bench:{k}": {f"{k}{i}": bool(rng.random() < 0.5) for i in range(40)} for k in "xy"}
    ind_b = {f"bench:{k}": {f"{k}{i}": bool(rng.random() < 0.6) for i in range(40)} for k in "xy"}
    c1 = compare_models(ind_a, ind_b, n_boot=30)["benchmark"]
    c2 = compare_models(ind_a, ind_b, n_boot=3000)["benchmark"]
    assert (c1["n_boot"], c2["n_boot"]) == (30, 3000)
    assert (c1["ci_low"], c1["ci_high"]) != (c2["ci_low"], c2["ci_high"])
    with pytest.raises(FrankenscopeError):
        compare_models(ind_a, ind_b, n_boot=0)


# -- spectra ---------------------------------------------------------------------------------------
def test_effective_rank_keeps_small_real_singular_values() -> None:
    """s_i = 1/i, i = 1..3584 (a 3584 x 18944 update): every value is real. The old tolerance
    max(m, n) * eps32 * s_1 = 2.3e-3 s_1 kept 442 of them and gave 107 instead of 397."""
    import torch

    from frankenscope.weights.diff import RANK_RTOL, _positive, effective_rank

    s = 1 / torch.arange(1, 3585, dtype=torch.float64)
    kept = _positive(s, (3584, 18944))
    assert kept.numel() == 3584
    p = (1 / np.arange(1, 3585)) / np.sum(1 / np.arange(1, 3585))
    assert effective_rank(kept) == pytest.approx(math.exp(-np.sum(p * np.log(p))), rel=1e-12)
    assert effective_rank(kept) == pytest.approx(397.29, abs=0.01)
    # exact small cases: p = (1/2, 1/4, 1/4) -> exp(1.5 ln 2) = 2^1.5; values at the tolerance are dropped
    s3 = torch.tensor([2.0, 1.0, 1.0, 2.0 * RANK_RTOL, 0.0], dtype=torch.float64)
    assert effective_rank(_positive(s3)) == pytest.approx(2 ** 1.5, rel=1e-12)


def test_effective_rank_of_a_constructed_matrix() -> None:
    import torch

    from frankenscope.weights.diff import spectral_metrics

    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(300, 120, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(200, 120, generator=g, dtype=torch.float64))
    s = 1 / torch.arange(1, 121, dtype=torch.float64)
    got = spectral_metrics(u @ torch.diag(s) @ v.T)
    p = s / s.sum()
    assert got["numerical_rank"] == 120
    assert got["effective_rank"] == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-9)


def test_mean_spectrum_pads_short_spectra() -> None:
    from frankenscope.weights.diff import SPECTRUM_FLOOR, _mean_spectrum

    long, short = [0.0, -1.0, -2.0, -3.0], [0.0, -0.5]
    got = _mean_spectrum([long, short, []])  # the all-zero delta (empty) has no direction: left out
    assert got == pytest.approx([0.0, -0.75, (-2.0 + SPECTRUM_FLOOR) / 2, (-3.0 + SPECTRUM_FLOOR) / 2])
    assert pytest.approx(math.log(1e-6)) == SPECTRUM_FLOOR
    assert _mean_spectrum([[], []]) == []


def test_one_proportion_summary_for_every_share():
    """Accuracies, fine-grained metrics and the probes' rates are all `proportion_summary` (k/n with its
    Wilson interval); only the name of the share differs ("value" or "rate")."""
    from frankenscope.evaluate.finegrained import m_rea
    from frankenscope.evaluate.metrics import proportion_summary, wilson_interval

    s = proportion_summary([True, False, True, True])
    lo, hi = wilson_interval(3, 4)
    assert s == {"n": 4, "count": 3, "value": 0.75, "ci_low": lo, "ci_high": hi}
    assert proportion_summary([True, False, True, True], value_key="rate") == {
        "n": 4, "count": 3, "rate": 0.75, "ci_low": lo, "ci_high": hi}
    assert m_rea([True, None, False, True, True]) == {**s, "n_ungraded": 1}
