"""Paired tests between two runs on the same samples: pure functions, no I/O.

- :func:`mcnemar_exact`: McNemar's test for 0/1 scores, exact (binomial on the discordant pairs);
- :func:`paired_bootstrap`: a percentile interval and a bootstrap p-value for the mean paired
  difference of graded scores (token F1, partial match);
- :func:`holm`: Holm's step-down adjustment of many p-values (family-wise error rate).

scipy, numpy and statsmodels are imported inside the functions (``import longctx`` stays light).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

#: bootstrap resamples used by the comparison page (Efron & Tibshirani 1993 suggest >= 1000 for
#: percentile intervals; 10,000 keeps the Monte Carlo error of a 2.5% quantile small)
BOOTSTRAP_RESAMPLES = 10_000
#: seed of the bootstrap's generator: the same runs give the same page
BOOTSTRAP_SEED = 0


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts.

    McNemar, Q. (1947), "Note on the sampling error of the difference between correlated
    proportions or percentages", Psychometrika 12(2):153-157. Under H0 (both runs equally
    accurate on these samples) each discordant pair is equally likely to favour either run, so
    ``only_a ~ Binomial(only_a + only_b, 1/2)``; the exact test is the two-sided binomial test
    (``scipy.stats.binomtest``), which for p = 1/2 is ``min(1, 2 * P(X <= min(b, c)))``.
    Concordant pairs (both right, both wrong) carry no information about the difference.
    No discordant pair: p = 1.
    """
    if only_a < 0 or only_b < 0:
        raise ValueError("counts must be non-negative")
    n = only_a + only_b
    if n == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(only_a, n, 0.5, alternative="two-sided").pvalue)


class BootstrapResult(msgspec.Struct, frozen=True):
    """Mean paired difference ``a - b`` with its bootstrap interval and p-value."""

    mean: float
    """Observed mean of ``a_i - b_i``."""
    ci_low: float
    """Lower end of the percentile interval."""
    ci_high: float
    """Upper end of the percentile interval."""
    p_value: float
    """Two-sided bootstrap p-value of H0: mean difference = 0."""
    resamples: int
    """Bootstrap resamples drawn."""


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Paired bootstrap of the mean difference of ``a`` and ``b`` (same samples, same order).

    Efron, B. & Tibshirani, R. J. (1993), *An Introduction to the Bootstrap*, Chapman & Hall:
    the samples (pairs) are resampled with replacement, keeping each sample's two scores
    together, so the interval reflects the correlation between the runs.

    - interval: the percentile interval of the resampled mean differences (ch. 13);
    - p-value: the bootstrap test of a mean (ch. 16, sec. 16.4), resampling the differences
      shifted to mean 0 (the null). With the same index draws the shifted resample mean is
      ``m* - m``, so ``p = (1 + #{|m* - m| >= |m|}) / (resamples + 1)`` (the +1 counts the observed sample
      among the resamples, so p is never 0).

    A numpy ``default_rng(seed)`` draws the indices: the same inputs always give the same numbers.
    """
    import numpy as np

    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    if not a:
        raise ValueError("no pairs")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    m = float(d.mean())
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // len(d))  # bound memory: at most ~2M indices at a time
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, len(d), size=(stop - start, len(d)))
        means[start:stop] = d[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    tol = 1e-12  # float noise in means of identical values
    extreme = int(np.count_nonzero(np.abs(means - m) >= abs(m) - tol))
    return BootstrapResult(
        mean=m,
        ci_low=float(low),
        ci_high=float(high),
        p_value=min(1.0, (1 + extreme) / (resamples + 1)),
        resamples=resamples,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given.

    Holm, S. (1979), "A simple sequentially rejective multiple test procedure", Scandinavian
    Journal of Statistics 6(2):65-70. Sorted ascending, the i-th smallest of m p-values becomes
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``; rejecting adjusted p < alpha controls the
    family-wise error rate at alpha under any dependence between the tests. Computed by
    ``statsmodels.stats.multitest.multipletests(method="holm")``.
    """
    if not p_values:
        return []
    from statsmodels.stats.multitest import multipletests

    _, adjusted, _, _ = multipletests(list(p_values), method="holm")
    return [float(p) for p in adjusted]
