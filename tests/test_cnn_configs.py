"""The shipped CNN configurations: they load, build the network their comments describe, and train a
step on a few hundred images of their data set (the full 20-epoch measurement is not a test)."""

from pathlib import Path

import numpy as np
import pytest

from tricklab import config as config_
from tricklab import experiment
from tricklab.nn import BatchNorm2d, Conv2d, Dropout2d, MaxPool2d

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# (file, data set, parameters as the top-of-file comment counts them, output shape of the conv blocks)
CASES = [("mnist_cnn.toml", "mnist", 80_378, (32, 4, 4)), ("fashion_cnn.toml", "fashion", 215_546, (32, 7, 7))]


@pytest.mark.parametrize("name, data, parameters, features", CASES)
def test_a_cnn_config_loads_with_the_tricks_it_names(name, data, parameters, features):
    cfg = config_.load(CONFIGS / name)
    assert cfg["data"]["name"] == data and cfg["train"]["epochs"] == 20
    assert cfg["schedule"]["name"] != "none" and cfg["augmentation"]["translation"] > 0
    types = [spec["type"] for spec in cfg["model"]["layers"]]
    assert types[:4] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] == types[4:8]  # two conv-BN-ReLU blocks
    assert "Dropout2d" in types and "Dropout" in types and types[-1] == "Linear"
    model = experiment.build_model(cfg, (1, 28, 28), 10, np.random.SeedSequence(0))
    assert sum(p.data.size for p in model.parameters()) == parameters
    shape = (1, 28, 28)
    for layer in list(model)[:9]:
        shape = layer.output_shape(shape)
    assert shape == features
    assert experiment.model_summary(cfg).endswith(f"total parameters: {parameters:,} (input (1, 28, 28))")


@pytest.mark.parametrize("name, data, parameters, features", CASES)
def test_a_cnn_config_trains_a_step_on_a_few_images(shared_data, name, data, parameters, features):
    cfg = config_.load(CONFIGS / name, [f"data.root={shared_data}", "data.train_subset=300", "data.test_subset=50"])
    exp = experiment.build(cfg, None, progress=False)
    assert exp.input_shape == (1, 28, 28)
    kinds = {type(m) for m in exp.model.modules()}
    assert {Conv2d, BatchNorm2d, MaxPool2d, Dropout2d} <= kinds
    xb, yb = next(iter(exp.train_loader))
    assert xb.shape == (128, 1, 28, 28) and xb.dtype == np.float32
    conv = next(m for m in exp.model.modules() if isinstance(m, Conv2d))
    before = conv.weight.data.copy()
    loss, _, out = exp.trainer.train_step(xb, yb)
    assert np.isfinite(loss) and 1.0 < loss < 5.0  # about ln 10 at the start
    assert out.shape == (128, 10)
    assert not np.array_equal(conv.weight.data, before) and np.all(np.isfinite(conv.weight.data))
