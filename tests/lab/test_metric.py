"""The ranked metric: defaults by loss, which way is better, NaN last, the targets it takes."""

import math

import pytest

from tricklab import config as config_
from tricklab.lab.metric import Metric, choose, names_for


def test_the_default_follows_the_loss_and_every_reported_metric_can_be_chosen():
    assert choose(None, ["cross_entropy"]) == Metric("val_accuracy")
    assert choose(None, ["bce_with_logits"]) == Metric("val_accuracy")
    assert choose(None, ["mse"]) == Metric("val_rmse")
    assert names_for("mse") == ["val_rmse", "val_loss", "val_r2"]
    assert names_for("cross_entropy") == ["val_accuracy", "val_loss", "val_error"]
    assert choose("val_r2", ["mse"]).name == "val_r2"


def test_trials_of_several_losses_are_ranked_by_a_metric_they_all_report():
    assert choose("val_loss", ["cross_entropy", "mse"]) == Metric("val_loss")
    with pytest.raises(config_.ConfigError, match=r"^the trials use loss.name = 'cross_entropy', 'mse': give --metric, "
                                                  r"one of \['val_loss'\]"):
        choose(None, ["cross_entropy", "cross_entropy", "mse"])
    with pytest.raises(config_.ConfigError, match=r"^--metric val_accuracy is not reported with loss.name = 'mse'"):
        choose("val_accuracy", ["cross_entropy", "mse"])


def test_which_way_is_better():
    assert [Metric(n).maximize for n in ("val_accuracy", "val_r2", "val_loss", "val_error", "val_rmse")] == [
        True, True, False, False, False]
    rmse, r2 = Metric("val_rmse"), Metric("val_r2")
    assert sorted([0.3, math.nan, 0.1, None], key=rmse.rank)[:2] == [0.1, 0.3]  # NaN and missing last
    assert sorted([0.3, math.nan, 0.9], key=r2.rank)[:2] == [0.9, 0.3]
    assert rmse.reached(0.5, 0.5) and not rmse.reached(0.51, 0.5) and not rmse.reached(math.nan, 0.5)
    assert r2.reached(0.9, 0.8) and not r2.reached(0.7, 0.8)


def test_the_error_is_one_minus_the_accuracy_of_the_same_split():
    error = Metric("val_error")
    scores = {"val_accuracy": 0.75, "test_accuracy": 0.5}
    assert error.value(scores) == 0.25 and error.value(scores, "test") == 0.5 and error.value({}) is None
    assert error.key("test") == "test_error" and error.header("test") == "test error (%)"


@pytest.mark.parametrize("name, bad, good", [("val_accuracy", [1.5, -0.1, math.nan], [0.0, 0.97, 1.0]),
                                             ("val_rmse", [-0.1, math.inf, math.nan], [0.0, 12.5]),
                                             ("val_r2", [1.01, math.nan, -math.inf], [-3.0, 1.0])])
def test_a_target_is_a_value_the_metric_can_take(name, bad, good):
    for target in good:
        Metric(name).check_target(target)
    for target in bad:
        with pytest.raises(config_.ConfigError, match=f"^--target must be a {Metric(name).title()}"):
            Metric(name).check_target(target)
