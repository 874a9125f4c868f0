"""inference_mode: the same outputs as eval mode, nothing kept for backward, outputs written into
arrays each layer reuses; outside it every output stays fresh."""

import numpy as np
import pytest

from tricklab import nn
from tricklab.nn import _kernels as K

BACKENDS = ["numpy"] + (["numba"] if K.numba_available() else [])


def _trained_statistics(model: nn.Module, x: np.ndarray) -> nn.Module:
    """A few training passes, so batch norm's running statistics are not 0 and 1."""
    model.train()
    for i in range(3):
        model(x * (1 + i))
    return model.eval()


LAYERS = {
    "linear": lambda r: nn.Linear(6, 5, rng=r),
    "linear-no-bias": lambda r: nn.Linear(6, 5, bias=False, rng=r),
    "relu": lambda r: nn.ReLU(),
    "leaky-relu": lambda r: nn.LeakyReLU(0.1),
    "sigmoid": lambda r: nn.Sigmoid(),
    "tanh": lambda r: nn.Tanh(),
    "dropout": lambda r: nn.Dropout(0.3, rng=1),
    "dropout-classic": lambda r: nn.Dropout(0.3, scaling="test", rng=1),
    "batchnorm": lambda r: nn.BatchNorm1d(6),
    "batchnorm-no-affine": lambda r: nn.BatchNorm1d(6, affine=False),
    "batchnorm-units": lambda r: nn.BatchNorm1d(6, units=[1, 4]),
}
IMAGE_LAYERS = {
    "conv": lambda r: nn.Conv2d(3, 4, 3, padding=1, rng=r),
    "conv-grouped-strided": lambda r: nn.Conv2d(3, 6, 2, stride=2, groups=3, bias=False, rng=r),
    "maxpool": lambda r: nn.MaxPool2d(2),
    "maxpool-padded-overlapping": lambda r: nn.MaxPool2d(3, stride=2, padding=1),
    "batchnorm2d": lambda r: nn.BatchNorm2d(3),
    "batchnorm2d-no-affine": lambda r: nn.BatchNorm2d(3, affine=False),
    "batchnorm2d-channels": lambda r: nn.BatchNorm2d(3, channels=[0, 2]),
}


def _layer_and_input(name: str, rng, dtype):
    if name in IMAGE_LAYERS:
        layer, x = IMAGE_LAYERS[name](rng), rng.standard_normal((4, 3, 5, 6)) * 2 + 1
    else:
        layer, x = LAYERS[name](rng), rng.standard_normal((8, 6)) * 2 + 1
    layer = _trained_statistics(layer.to(dtype), x.astype(dtype))
    if hasattr(layer, "bias") and getattr(layer, "affine", False):
        layer.weight.data[...] = rng.normal(1, 0.5, layer.weight.data.shape)
        layer.bias.data[...] = rng.normal(0, 1, layer.bias.data.shape)
    return layer, x.astype(dtype)


ALL = sorted(LAYERS) + sorted(IMAGE_LAYERS)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ALL)
def test_inference_mode_gives_exactly_the_eval_output(name, dtype, backend, rng):
    layer, x = _layer_and_input(name, rng, dtype)
    with K.using(backend):
        expected = layer(x)
        with nn.inference_mode():
            got = layer(x)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", ALL)
def test_backward_after_an_inference_mode_forward_is_refused_not_served_stale_caches(name, rng):
    layer, x = _layer_and_input(name, rng, np.float64)
    y = layer(x)  # an eval forward keeps what backward needs (gradients of eval-mode networks are allowed)
    layer.backward(np.ones_like(y))
    with nn.inference_mode():
        layer(x)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.ones_like(y))


@pytest.mark.parametrize("name", ["linear", "relu", "sigmoid", "tanh", "dropout-classic", "batchnorm", "batchnorm2d",
                                  "maxpool", "conv"])
def test_inference_outputs_are_reused_arrays_and_eval_outputs_fresh(name, rng):
    layer, x = _layer_and_input(name, rng, np.float32)
    first, second = layer(x), layer(x)
    assert not np.shares_memory(first, second)  # a plain call's result stays valid after the next call
    with nn.inference_mode():
        first = layer(x)
        kept = first.copy()
        second = layer(x[::-1].copy())
    assert second is first  # the next call overwrote it: copy what you keep
    np.testing.assert_array_equal(second, layer(x[::-1].copy()))
    assert not np.array_equal(kept, second)


def test_a_layer_applied_to_its_own_output_is_correct(rng):
    """The input may be the very array the output goes into (a square layer or an activation used twice)."""
    linear, relu = nn.Linear(5, 5, rng=rng, dtype=np.float64), nn.ReLU()
    x = rng.standard_normal((4, 5))
    expected = relu(linear(relu(linear(x))))
    with nn.inference_mode():
        got = relu(linear(relu(linear(x))))
    np.testing.assert_array_equal(got, expected)


def test_a_training_mode_layer_runs_its_training_forward_in_inference_mode(rng):
    """Inference mode is orthogonal to train/eval, as torch.inference_mode."""
    x = rng.standard_normal((200, 6)) + 3
    drop = nn.Dropout(0.5, rng=0, dtype=np.float64)
    with nn.inference_mode():
        assert (drop(x) == 0).any()
    bn = nn.BatchNorm1d(6, dtype=np.float64)
    with nn.inference_mode():
        y = bn(x)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean, 0.1 * x.mean(axis=0), rtol=1e-12)


def test_recomputed_statistics_are_collected_in_inference_mode(rng):
    model = nn.Sequential(nn.Linear(6, 4, rng=rng, dtype=np.float64), nn.BatchNorm1d(4, dtype=np.float64))
    batches = [rng.standard_normal((10, 6)) for _ in range(3)]
    nn.recompute_batchnorm_statistics(model, batches)
    expected = model[1].running_mean.copy()
    model[1].reset_running_stats()
    with nn.inference_mode():
        nn.recompute_batchnorm_statistics(model, batches)
    np.testing.assert_array_equal(model[1].running_mean, expected)


def test_inference_mode_is_left_on_exit_and_on_error(rng):
    linear = nn.Linear(3, 2, rng=rng)
    x = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(KeyError):
        with nn.inference_mode():
            raise KeyError("boom")
    assert not np.shares_memory(linear(x), linear(x))
    with nn.inference_mode(), nn.inference_mode(False):
        assert not np.shares_memory(linear(x), linear(x))


def test_predict_runs_in_inference_mode_and_returns_independent_batches(rng):
    model = _trained_statistics(
        nn.Sequential(nn.Linear(6, 8, rng=rng), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5, rng=3),
                      nn.Linear(8, 3, rng=rng)),
        rng.standard_normal((16, 6)).astype(np.float32))
    x = rng.standard_normal((10, 6)).astype(np.float32)
    expected = np.concatenate([model(x[:4]), model(x[4:8]), model(x[8:])])
    model.train()
    out = model.predict(x, batch_size=4)  # three batches through the same output arrays
    np.testing.assert_array_equal(out, expected)
    assert model.training
    with pytest.raises(RuntimeError, match="backward called before forward"):
        model.backward(np.ones((2, 3), dtype=np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["linear", "relu", "batchnorm", "batchnorm-units", "batchnorm2d", "batchnorm2d-channels"])
def test_a_strided_input_gives_the_eval_output(name, backend, rng):
    layer, x = _layer_and_input(name, rng, np.float32)
    strided = np.repeat(x, 2, axis=0)[::2]  # equal to x, not contiguous
    with K.using(backend):
        expected = layer(x)
        with nn.inference_mode():
            got = layer(strided)
    np.testing.assert_array_equal(got, expected)


def test_max_pooling_in_inference_mode_propagates_nan_and_keeps_minus_infinity_as_eval(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    x[0, 0, 1, 1], x[1, 2, :3, :3] = np.nan, -np.inf
    pool = nn.MaxPool2d(3, stride=2, padding=1).eval()
    expected = pool(x)
    with nn.inference_mode():
        got = pool(x)
    assert np.isnan(got[0, 0, 0, 0]) and got[1, 2, 0, 0] == -np.inf
    np.testing.assert_array_equal(got, expected)
