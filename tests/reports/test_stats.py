"""Paired tests against values worked out by hand: McNemar exact, paired bootstrap, Holm."""

from __future__ import annotations

import math

import pytest

from longctx.reports.stats import holm, mcnemar_exact, paired_bootstrap


# ---- McNemar (exact) ----------------------------------------------------------------------------
def test_mcnemar_significant_by_hand():
    # 9 pairs favour A, 1 favours B: p = 2 * P(X <= 1 | n=10, 1/2) = 2 * (1 + 10) / 2^10
    p = mcnemar_exact(9, 1)
    assert p == pytest.approx(22 / 1024, rel=1e-12)
    assert p < 0.05
    assert mcnemar_exact(1, 9) == pytest.approx(p)  # two-sided: symmetric


def test_mcnemar_not_significant_by_hand():
    # 3 vs 5: p = 2 * (C(8,0) + C(8,1) + C(8,2) + C(8,3)) / 2^8 = 2 * 93 / 256
    p = mcnemar_exact(3, 5)
    assert p == pytest.approx(186 / 256, rel=1e-12)
    assert p > 0.05


def test_mcnemar_edge_cases():
    assert mcnemar_exact(0, 0) == 1.0  # no discordant pair: no evidence either way
    assert mcnemar_exact(4, 4) == 1.0
    assert mcnemar_exact(6, 0) == pytest.approx(2 / 64)  # all 6 discordant pairs favour A
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)  # 5 are not enough at 0.05
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


# ---- paired bootstrap ---------------------------------------------------------------------------
def test_bootstrap_constant_difference_is_certain():
    # every difference is 1: each resample mean is 1, none is as far from 1 as 1 is from 0
    r = paired_bootstrap([1.0] * 12, [0.0] * 12, resamples=2000)
    assert (r.mean, r.ci_low, r.ci_high) == (1.0, 1.0, 1.0)
    assert r.p_value == pytest.approx(1 / 2001)  # the smallest p the test can give


def test_bootstrap_symmetric_differences_are_not_significant():
    # differences +1 and -1 in equal numbers: mean 0, every resample is at least as extreme
    r = paired_bootstrap([1.0, 0.0] * 10, [0.0, 1.0] * 10, resamples=2000)
    assert r.mean == 0.0
    assert r.p_value == 1.0
    assert r.ci_low < 0 < r.ci_high


def test_bootstrap_two_pairs_exact_distribution():
    # d = (0, 1): resample means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the 2.5% and
    # 97.5% percentiles are 0 and 1, and P(|m* - 0.5| >= 0.5) = 1/2
    r = paired_bootstrap([0.0, 1.0], [0.0, 0.0], resamples=20_000)
    assert r.mean == 0.5
    assert (r.ci_low, r.ci_high) == (0.0, 1.0)
    assert r.p_value == pytest.approx(0.5, abs=0.015)


def test_bootstrap_interval_matches_normal_approximation():
    # graded scores, 400 pairs: the percentile interval is close to mean +- 1.96 * sd / sqrt(n)
    # (sd with divisor n: the bootstrap resamples the empirical distribution)
    a = [((i * 37) % 101) / 100 for i in range(400)]
    b = [((i * 53) % 89) / 100 for i in range(400)]
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / len(d))
    half = 1.959964 * sd / math.sqrt(len(d))
    r = paired_bootstrap(a, b)
    assert r.mean == pytest.approx(mean)
    assert r.ci_low == pytest.approx(mean - half, abs=0.1 * half)
    assert r.ci_high == pytest.approx(mean + half, abs=0.1 * half)


def test_bootstrap_graded_significant_and_seeded():
    # A's F1 beats B's by 0.2 on 30 of 40 samples and loses by 0.1 on 10: mean 0.125, sd ~0.13
    a = [0.8] * 30 + [0.4] * 10
    b = [0.6] * 30 + [0.5] * 10
    r = paired_bootstrap(a, b)
    assert r.mean == pytest.approx(0.125)
    assert r.p_value < 0.001 and r.ci_low > 0
    assert paired_bootstrap(a, b) == r  # seeded: the same page every time
    assert paired_bootstrap(a, b, seed=1).ci_low != r.ci_low


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 0.0])
    with pytest.raises(ValueError):
        paired_bootstrap([], [])


# ---- Holm ---------------------------------------------------------------------------------------
def test_holm_by_hand():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_keeps_order():
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([0.2]) == [0.2]
    assert holm([]) == []
