"""The hidden = [...] shorthand expands into a layer list that builds the template's model bit for bit."""

import itertools

import numpy as np
import pytest

from tests.legacy_template import build_model as legacy_build_model
from tricklab import config as config_
from tricklab.nn.spec import build_layers
from tricklab.shorthand import SEQUENCE_STEPS, expand

MLP_VARIANTS = [
    {}, {"hidden": [7, 5, 3], "batchnorm": True, "dropout": 0.3},
    {"input_dropout": 0.2, "dropout_scaling": "test", "activation": "tanh", "init": "xavier_normal"},
    {"init": "kaiming_uniform", "noise_std": 0.1, "noise_mode": "multiplicative", "activity_l1": 1e-3},
    {"layer": "dropconnect", "layer_p": 0.3, "dropconnect_mask": "batch", "activation": "sigmoid"},
    {"layer": "shakeout", "shakeout_tau": 0.3, "shakeout_c": 0.2, "init": "orthogonal"},
    {"layer": "whiteout", "whiteout_sigma": 0.3, "whiteout_mode": "multiplicative", "activation": "leaky_relu"},
    {"hidden": []},
]
RECURRENT_VARIANTS = [
    {"kind": "lstm", "hidden": [6], "zoneout_h": 0.1, "zoneout_c": 0.2, "dropout": 0.2},
    {"kind": "rnn", "hidden": [5, 5], "zoneout_h": 0.3},
    {"kind": "lstm", "hidden": [4, 4, 4]},
]
FEATURES = {"mnist1d": 40, "mnist": 784}


def _resolved(model: dict, data: str, dtype: str = "float32") -> dict:
    return config_.resolve({"model": model, "data": {"name": data}, "train": {"dtype": dtype}})


def _assert_same_model(a, b):
    assert repr(a) == repr(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


@pytest.mark.parametrize("variant, data, dtype", [
    *[(v, "mnist1d", d) for v, d in itertools.product(MLP_VARIANTS, ("float32", "float64"))],
    *[(v, d, "float32") for v, d in itertools.product(RECURRENT_VARIANTS, ("mnist1d", "mnist"))],
])
def test_shorthand_builds_the_legacy_template_bit_for_bit(variant, data, dtype):
    cfg = _resolved(variant, data, dtype)
    n_in = FEATURES[data]
    old = legacy_build_model(cfg, n_in, 10, np.random.SeedSequence(3))
    new = build_layers(expand(cfg["model"], data), (n_in,), 10, np.random.SeedSequence(3), dtype=dtype)
    _assert_same_model(old, new)
    x = np.random.default_rng(1).standard_normal((6, n_in)).astype(dtype)
    for train in (True, False):  # the same random generators: the same dropout masks and noise
        old.train(train), new.train(train)
        np.testing.assert_array_equal(old(x), new(x))
        g = np.ones((6, 10), dtype=dtype)
        np.testing.assert_array_equal(old.backward(g), new.backward(g))


def test_recurrent_shorthand_needs_a_known_sequence_length():
    cfg = _resolved({"kind": "lstm", "hidden": [4]}, "mnist1d")
    assert expand(cfg["model"], "mnist1d")[0]["time_steps"] == SEQUENCE_STEPS["mnist1d"] == 40
    with pytest.raises(ValueError, match="list the layers"):
        expand(cfg["model"], "npz")
