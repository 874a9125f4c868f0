"""The metric a sweep ranks its configurations by and an ablation tabulates, and which way is better.

A run reports ``val_<name>`` and ``test_<name>`` for its loss and for each metric of its loss
(train/metrics.py): accuracy for cross_entropy and bce_with_logits, rmse and r2 for mse; the
error is 1 - accuracy. The names a run can be ranked by are its early-stopping monitors on the
validation split (``config.MONITORS``)::

    loss                            metrics (default first)
    cross_entropy, bce_with_logits  val_accuracy, val_error, val_loss
    mse                             val_rmse, val_r2, val_loss

Accuracy and R² are maximized; loss, error and RMSE are minimized. A configuration whose metric
is NaN (a diverged run) ranks last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import config as config_
from ..stats import format_pm

DEFAULTS = {"cross_entropy": "val_accuracy", "bce_with_logits": "val_accuracy", "mse": "val_rmse"}
MAXIMIZED = ("accuracy", "r2")
PERCENT = ("accuracy", "error")  # fractions, shown as percentages
TITLES = {"accuracy": "accuracy", "error": "error", "loss": "loss", "rmse": "RMSE", "r2": "R²"}


@dataclass(frozen=True)
class Metric:
    """A validation metric by name (``val_accuracy``, ``val_rmse``, ...)."""

    name: str = "val_accuracy"

    @property
    def base(self) -> str:
        return self.name.removeprefix("val_")

    @property
    def maximize(self) -> bool:
        return self.base in MAXIMIZED

    @property
    def percent(self) -> bool:
        return self.base in PERCENT

    def key(self, split: str) -> str:
        """The metric's key for ``split`` ("val" or "test"): val_rmse, test_rmse."""
        return f"{split}_{self.base}"

    def value(self, scores: dict, split: str = "val") -> float | None:
        """The metric of ``split`` in ``scores`` (a trial's metrics or a history row); None if absent."""
        if self.base == "error":
            accuracy = scores.get(f"{split}_accuracy")
            return None if accuracy is None else 1.0 - accuracy
        return scores.get(self.key(split))

    def rank(self, value: float | None) -> float:
        """Sort key, smaller is better: -value when maximized; a missing or NaN value is +inf."""
        if value is None or math.isnan(value):
            return math.inf
        return -value if self.maximize else value

    def title(self, split: str = "validation") -> str:
        """'validation accuracy', 'test RMSE'."""
        return f"{split} {TITLES.get(self.base, self.base)}"

    def header(self, split: str = "validation") -> str:
        """A table column: 'validation accuracy (%)', 'test RMSE'."""
        return self.title(split) + (" (%)" if self.percent else "")

    def format(self, mean: float | None, sd: float, n: int, unit: bool = False) -> str:
        """Mean ± sd over n seeds as the tables show it: percentages for accuracy and error (with
        '%' after them if ``unit``), four decimals otherwise."""
        if self.percent:
            return format_pm(mean, sd, n, unit="%" if unit else "")
        return format_pm(mean, sd, n, scale=1.0, digits=4, unit="")

    def target_text(self, target: float | None) -> str:
        """'67.50%' for accuracy (as before), 'RMSE <= 0.1234' otherwise; 'target' when there is none."""
        if target is None:
            return "target"
        if self.base == "accuracy":
            return f"{target:.2%}"
        value = f"{target:.2%}" if self.percent else f"{target:.4g}"
        return f"{TITLES.get(self.base, self.base)} {'>=' if self.maximize else '<='} {value}"

    def reached(self, value: float | None, target: float) -> bool:
        """Whether ``value`` is at least as good as ``target``."""
        if value is None or math.isnan(value):
            return False
        return value >= target if self.maximize else value <= target

    def check_target(self, target: float) -> None:
        """Refuse a target the metric cannot take (NaN included): a fraction for accuracy and
        error, >= 0 for loss and RMSE, <= 1 for R²."""
        if self.percent:
            if not 0.0 <= target <= 1.0:
                raise config_.ConfigError(f"--target must be a {self.title()} in [0, 1] (a fraction: 0.97, not 97), "
                                          f"got {target}")
        elif self.base == "r2":
            if not -math.inf < target <= 1.0:
                raise config_.ConfigError(f"--target must be a {self.title()} of at most 1, got {target}")
        elif not 0.0 <= target < math.inf:
            raise config_.ConfigError(f"--target must be a {self.title()} >= 0, got {target}")


def names_for(loss: str) -> list[str]:
    """The metrics a run with ``loss`` can be ranked by, its default first."""
    names = [m for m in config_.MONITORS[loss] if m.startswith("val_")]
    return [DEFAULTS[loss]] + [m for m in names if m != DEFAULTS[loss]]


def choose(name: str | None, losses: list[str]) -> Metric:
    """The metric ``name`` (``--metric``), or the default of ``losses[0]`` (the base configuration's
    loss); ConfigError unless every loss in ``losses`` (the trials') reports it."""
    common = [m for m in names_for(losses[0]) if all(m in names_for(loss) for loss in losses)]
    if name is None:
        name = DEFAULTS[losses[0]]
        if name not in common:
            used = ", ".join(repr(x) for x in dict.fromkeys(losses))
            raise config_.ConfigError(f"the trials use loss.name = {used}: give --metric, one of {common}, "
                                      "that all of them report")
    if name.startswith("test_"):
        raise config_.ConfigError(f"--metric {name}: configurations are chosen on the validation split only; "
                                  f"use --metric val_{name.removeprefix('test_')}")
    if name not in common:
        loss = next((x for x in losses if name not in names_for(x)), losses[0])
        raise config_.ConfigError(f"--metric {name} is not reported with loss.name = {loss!r}; choose one of "
                                  f"{common}{config_._suggest(name, common)}")
    return Metric(name)
