"""Paired statistics for benchmark tables: per-volume differences between two methods.

Torch-free (numpy and scipy only), so result files can be summarised anywhere:

    from benchmarks.stats import format_difference, paired_difference

    d = paired_difference(dice_method_a, dice_method_b)
    print(format_difference(d))  # +0.034 [+0.012, +0.057], p=0.003, 14/2

The confidence interval is a percentile bootstrap of the mean paired difference; the
p-value is the two-sided Wilcoxon signed-rank test on the same differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

_BOOTSTRAP_CELLS = 1_000_000
"""Largest resamples x n block drawn at once, to bound the bootstrap's memory."""


@dataclass(frozen=True)
class PairedDifference:
    """Summary of the paired differences ``a - b`` over ``n`` volumes."""

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    p_wilcoxon: float | None
    """Two-sided Wilcoxon signed-rank p; None when n < 2 or every difference is zero."""
    wins: int
    """Pairs with a > b."""
    losses: int
    """Pairs with a < b."""

    @property
    def ties(self) -> int:
        """Pairs with a == b."""
        return self.n - self.wins - self.losses


def _as_values(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value).

    Identical values give exactly that value and 0.0: the mean is clipped to [min, max],
    which removes rounding past those bounds.
    """
    array = _as_values(values, "values")
    low, high = float(array.min()), float(array.max())
    mean = min(max(float(np.mean(array)), low), high)
    sd = float(np.std(array, ddof=1)) if low < high else 0.0
    return mean, sd


def _bootstrap_means(
    differences: np.ndarray, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Means of ``resamples`` resamples with replacement, drawn in memory-bounded blocks."""
    n = differences.size
    block = max(1, _BOOTSTRAP_CELLS // n)
    means = np.empty(resamples)
    for start in range(0, resamples, block):
        stop = min(start + block, resamples)
        index = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = differences[index].mean(axis=1)
    return means


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> PairedDifference:
    """Mean of the paired differences ``a - b`` with a bootstrap CI and a Wilcoxon p-value.

    ``a[i]`` and ``b[i]`` are the two methods' scores on volume ``i``. The interval is the
    percentile bootstrap of the mean difference (``resamples`` draws from a numpy Generator
    seeded with ``seed``, so it is reproducible). Raises ValueError on empty input, unequal
    lengths, NaN or infinite values, or a confidence outside (0, 1).
    """
    x, y = _as_values(a, "a"), _as_values(b, "b")
    if x.size != y.size:
        raise ValueError(f"a and b differ in length: {x.size} != {y.size}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    differences = x - y
    n = differences.size
    low_bound, high_bound = float(differences.min()), float(differences.max())
    mean, sd = mean_sd(differences)
    # As in mean_sd, clipping bootstrap means to [min, max] only removes rounding, so that
    # identical differences give a zero-width interval at exactly that value.
    means = _bootstrap_means(differences, resamples, np.random.default_rng(seed))
    tail = 100.0 * (1.0 - confidence) / 2.0
    ci_low, ci_high = np.clip(np.percentile(means, [tail, 100.0 - tail]), low_bound, high_bound)
    p_value: float | None = None
    if n >= 2 and np.any(differences != 0):
        p = float(stats.wilcoxon(differences, alternative="two-sided").pvalue)
        p_value = p if math.isfinite(p) else None
    return PairedDifference(
        n=n,
        mean=mean,
        sd=sd,
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        p_wilcoxon=p_value,
        wins=int(np.count_nonzero(differences > 0)),
        losses=int(np.count_nonzero(differences < 0)),
    )


def excludes_zero(d: PairedDifference) -> bool:
    """Whether the confidence interval lies strictly on one side of zero."""
    return d.ci_low > 0.0 or d.ci_high < 0.0


def format_difference(d: PairedDifference, digits: int = 3) -> str:
    """One markdown-table cell: ``+0.034 [+0.012, +0.057], p=0.003, 14/2`` (wins/losses).

    The p-value reads ``p<0.001`` (at ``digits=3``) below the printed precision and
    ``p=n/a`` when there is none.
    """
    if d.p_wilcoxon is None:
        p_text = "p=n/a"
    elif d.p_wilcoxon < 10.0**-digits:
        p_text = f"p<{10.0**-digits:.{digits}f}"
    else:
        p_text = f"p={d.p_wilcoxon:.{digits}f}"
    return (
        f"{d.mean:+.{digits}f} [{d.ci_low:+.{digits}f}, {d.ci_high:+.{digits}f}], "
        f"{p_text}, {d.wins}/{d.losses}"
    )
