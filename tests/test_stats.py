"""tricklab/stats.py: mean ± sample standard deviation over seeds."""

import math

import numpy as np
import pytest

from tricklab.stats import format_pm, mean_std, pm


def test_mean_std_uses_the_sample_standard_deviation():
    mean, std = mean_std([0.70, 0.72, 0.74])
    assert mean == pytest.approx(0.72, abs=1e-15)
    assert std == pytest.approx(math.sqrt((0.02**2 + 0.02**2) / 2), rel=1e-12)  # ddof = 1, not 1/3
    assert std == pytest.approx(np.std([0.70, 0.72, 0.74], ddof=1), rel=1e-15)


def test_one_value_has_no_spread():
    assert mean_std([0.9712]) == (0.9712, 0.0)
    assert mean_std(np.array([3.0])) == (3.0, 0.0)


def test_empty_values_are_refused_naming_the_argument():
    with pytest.raises(ValueError, match="values"):
        mean_std([])


def test_pm_shows_percent_by_default():
    assert pm([0.9704, 0.9712, 0.9720]) == "97.12 ± 0.08%"
    assert pm([0.9712]) == "97.12% (n=1)"


def test_pm_with_another_scale_digits_and_unit():
    assert pm([1.0, 2.0, 3.0], scale=1, digits=3, unit="") == "2.000 ± 1.000"
    assert pm([0.70, 0.72, 0.74], scale=100, unit="") == "72.00 ± 2.00"
    assert pm([0.7165], unit="") == "71.65 (n=1)"
    assert pm([12.0, 14.0], scale=1, digits=1, unit=" s") == "13.0 ± 1.4 s"


def test_format_pm_from_summaries():
    assert format_pm(0.9, 0.01, 3) == "90.00 ± 1.00%"
    assert format_pm(0.9, 0.0, 1, unit="") == "90.00 (n=1)"
    assert format_pm(12.5, 0.5, 2, scale=1, digits=1, unit="") == "12.5 ± 0.5"
    assert format_pm(None, 0.0, 0) == "—"
    assert format_pm(0.9, 0.0, 0) == "—"
