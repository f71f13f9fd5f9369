"""Tests of benchmarks/stats.py: paired bootstrap differences and their table format."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.stats import (  # noqa: E402
    PairedDifference,
    excludes_zero,
    format_difference,
    mean_sd,
    paired_difference,
)


def test_constant_shift_gives_a_point_interval() -> None:
    d = paired_difference([0.1] * 20, [0.0] * 20)
    assert d.n == 20
    assert d.mean == 0.1
    assert (d.ci_low, d.ci_high) == (0.1, 0.1)
    assert d.sd == 0.0
    assert (d.wins, d.losses, d.ties) == (20, 0, 0)
    assert excludes_zero(d)


def test_constant_shift_over_varied_scores() -> None:
    b = np.linspace(0.5, 0.85, 20)
    d = paired_difference(b + 0.1, b)
    # a - b is 0.1 up to rounding in the last bits; the interval stays within those bits.
    assert d.mean == pytest.approx(0.1, abs=1e-12)
    assert d.ci_low == pytest.approx(0.1, abs=1e-12)
    assert d.ci_high == pytest.approx(0.1, abs=1e-12)
    assert d.ci_low <= d.mean <= d.ci_high
    # 20 same-sign differences: the signed-rank statistic is 0, the smallest possible.
    assert d.p_wilcoxon is not None and d.p_wilcoxon < 1e-4


def test_symmetric_noise_interval_contains_zero() -> None:
    # Differences +-0.05, +-0.1, +-0.15, ... in opposite-signed pairs: mean exactly 0.
    steps = 0.05 * np.arange(1, 11)
    differences = np.concatenate([steps, -steps])
    b = np.full(differences.size, 0.5)
    d = paired_difference(b + differences, b, seed=3)
    assert d.mean == pytest.approx(0.0, abs=1e-12)
    assert d.ci_low < 0.0 < d.ci_high
    assert not excludes_zero(d)
    assert (d.wins, d.losses) == (10, 10)
    assert d.p_wilcoxon == pytest.approx(1.0)
    assert d.sd == pytest.approx(float(np.std(differences, ddof=1)))


def test_seed_determines_the_interval() -> None:
    rng = np.random.default_rng(11)
    a, b = rng.random(15), rng.random(15)
    first = paired_difference(a, b, seed=5)
    assert paired_difference(a, b, seed=5) == first
    other = paired_difference(a, b, seed=6)
    assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)
    assert other.mean == first.mean


def test_confidence_widens_the_interval() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.random(30), rng.random(30)
    narrow = paired_difference(a, b, confidence=0.5)
    wide = paired_difference(a, b, confidence=0.99)
    assert wide.ci_low <= narrow.ci_low <= narrow.ci_high <= wide.ci_high


def test_consistent_shift_gives_small_wilcoxon_p() -> None:
    rng = np.random.default_rng(0)
    b = rng.uniform(0.6, 0.8, 25)
    a = b + 0.03 + rng.normal(0.0, 0.005, 25)  # every pair improves
    d = paired_difference(a, b)
    assert d.p_wilcoxon is not None and d.p_wilcoxon < 1e-5
    assert excludes_zero(d)
    assert d.wins == 25


def test_degenerate_wilcoxon_cases() -> None:
    assert paired_difference([0.7], [0.5]).p_wilcoxon is None
    same = paired_difference([0.2, 0.4, 0.6], [0.2, 0.4, 0.6])
    assert same.p_wilcoxon is None
    assert (same.mean, same.ci_low, same.ci_high, same.ties) == (0.0, 0.0, 0.0, 3)
    single = paired_difference([0.7], [0.5])
    assert single.sd == 0.0
    assert single.ci_low == single.ci_high == single.mean


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        ([0.1, 0.2], [0.1], "length"),
        ([], [], "empty"),
        ([0.1, math.nan], [0.1, 0.2], "NaN"),
        ([0.1, 0.2], [0.1, math.inf], "NaN or infinite"),
        ([[0.1, 0.2]], [[0.1, 0.2]], "one-dimensional"),
    ],
)
def test_invalid_input_raises(a: list, b: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        paired_difference(a, b)


def test_invalid_options_raise() -> None:
    with pytest.raises(ValueError, match="confidence"):
        paired_difference([0.1, 0.2], [0.0, 0.1], confidence=1.0)
    with pytest.raises(ValueError, match="resamples"):
        paired_difference([0.1, 0.2], [0.0, 0.1], resamples=0)


def test_mean_sd() -> None:
    assert mean_sd([2.0]) == (2.0, 0.0)
    mean, sd = mean_sd([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert sd == pytest.approx(math.sqrt(5.0 / 3.0))
    with pytest.raises(ValueError, match="empty"):
        mean_sd([])


def test_format_difference() -> None:
    d = PairedDifference(
        n=16, mean=0.0341, sd=0.02, ci_low=0.0123, ci_high=0.0567, p_wilcoxon=0.0031,
        wins=14, losses=2,
    )  # fmt: skip
    assert format_difference(d) == "+0.034 [+0.012, +0.057], p=0.003, 14/2"
    worse = PairedDifference(
        n=5, mean=-0.2, sd=0.1, ci_low=-0.31, ci_high=-0.1, p_wilcoxon=0.00002,
        wins=0, losses=5,
    )  # fmt: skip
    assert format_difference(worse) == "-0.200 [-0.310, -0.100], p<0.001, 0/5"
    assert format_difference(worse, digits=2) == "-0.20 [-0.31, -0.10], p<0.01, 0/5"
    none = PairedDifference(
        n=1, mean=0.2, sd=0.0, ci_low=0.2, ci_high=0.2, p_wilcoxon=None, wins=1, losses=0
    )
    assert format_difference(none) == "+0.200 [+0.200, +0.200], p=n/a, 1/0"
