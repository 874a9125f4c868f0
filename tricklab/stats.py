"""Mean and spread over seeds, and how the tables and logs show them.

Over n seeds with values x_1..x_n::

    mean = (1/n) Σ x_i
    std  = sqrt( Σ (x_i - mean)² / (n - 1) )     (sample standard deviation, ddof = 1)

One seed has no spread: its std is 0 and the text shows the value with 'n=1' instead of '± sd'.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mean_std", "pm", "format_pm"]


def mean_std(values) -> tuple[float, float]:
    """(mean, sample standard deviation with ddof=1) of ``values``; the std of one value is 0.0."""
    a = np.asarray(values, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError("mean_std: values is empty; expected at least one value")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def format_pm(mean: float | None, std: float, n: int, scale: float = 100.0, digits: int = 2,
              unit: str = "%") -> str:
    """'97.12 ± 0.08%' from a mean and std over n seeds (both times ``scale``, ``digits`` decimals,
    ``unit`` after the numbers); one seed: '97.12% (n=1)'; no value (mean None or n < 1): '—'."""
    if mean is None or n < 1:
        return "—"
    text = f"{scale * mean:.{digits}f}"
    return f"{text} ± {scale * std:.{digits}f}{unit}" if n > 1 else f"{text}{unit} (n=1)"


def pm(values, scale: float = 100.0, digits: int = 2, unit: str = "%") -> str:
    """'97.12 ± 0.08%': mean ± sample std (ddof=1) of ``values`` as :func:`format_pm` shows it."""
    mean, std = mean_std(values)
    return format_pm(mean, std, len(values), scale, digits, unit)
