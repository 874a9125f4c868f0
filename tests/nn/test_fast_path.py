"""The fast path (tricklab.nn._kernels) against the plain equations, and its two backends against each other.

Every layer's fast path must give the numbers of the lecture's equations written plainly (here in
float64), to float32 rounding; the numba kernels must give the NumPy kernels' numbers; the fused
optimizer step must give the chain of gradient transforms' numbers. Speed is not tested here: the
benchmark (python -m benchmarks.run) measures it.
"""

import copy

import numpy as np
import pytest

from tricklab import nn, optim
from tricklab.nn import _kernels as K
from tricklab.nn.dropout import bernoulli_mask, keep_rule, random_chunks

BACKENDS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(not K.numba_available(),
                                                                      reason="numba is not installed"))]
F32 = dict(rtol=2e-5, atol=2e-6)


@pytest.fixture(params=BACKENDS)
def backend(request):
    with K.using(request.param):
        yield request.param


def both(fn):
    """fn() under the numpy kernels and under the numba kernels (skipped without numba)."""
    if not K.numba_available():
        pytest.skip("numba is not installed")
    with K.using("numpy"):
        a = fn()
    with K.using("numba"):
        b = fn()
    return a, b


# ----------------------------------------------------------------------------- plain equations
def plain_batchnorm(z, gamma, beta, eps, gy):
    z, gy = z.astype(np.float64), gy.astype(np.float64)
    mu, var = z.mean(0), z.var(0)
    u = (z - mu) / np.sqrt(var + eps)
    g = gy * gamma
    dz = (g - g.mean(0) - u * (g * u).mean(0)) / np.sqrt(var + eps)
    return gamma * u + beta, dz, (gy * u).sum(0), gy.sum(0), mu, var


# ----------------------------------------------------------------------------- layers vs equations
def test_relu_sigmoid_tanh_match_their_equations(backend, rng):
    x = rng.standard_normal((7, 33)).astype(np.float32)
    gy = rng.standard_normal((7, 33)).astype(np.float32)
    x64, g64 = x.astype(np.float64), gy.astype(np.float64)
    s64 = 1 / (1 + np.exp(-x64))
    for layer, y_ref, gx_ref in [
        (nn.ReLU(), np.maximum(x64, 0), g64 * (x64 > 0)),
        (nn.Sigmoid(), s64, g64 * s64 * (1 - s64)),
        (nn.Tanh(), np.tanh(x64), g64 * (1 - np.tanh(x64) ** 2)),
    ]:
        y = layer(x)
        gx = layer.backward(gy)
        assert y.dtype == gx.dtype == np.float32
        np.testing.assert_allclose(y, y_ref, **F32, err_msg=type(layer).__name__)
        np.testing.assert_allclose(gx, gx_ref, **F32, err_msg=type(layer).__name__)


def test_relu_keeps_nan_as_numpy_maximum_does(backend):
    x = np.array([[-1.0, np.nan, 2.0]], dtype=np.float32)
    np.testing.assert_array_equal(nn.ReLU()(x), np.maximum(x, 0))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("batch", [2, 5, 128])
def test_batchnorm_training_matches_its_equations(backend, rng, affine, batch):
    bn = nn.BatchNorm1d(40, affine=affine)
    gamma, beta = np.ones(40), np.zeros(40)
    if affine:
        bn.weight.data[...] = gamma = rng.uniform(0.5, 2, 40).astype(np.float32)
        bn.bias.data[...] = beta = rng.standard_normal(40).astype(np.float32)
    z = (rng.standard_normal((batch, 40)) * 3 + 5).astype(np.float32)
    gy = rng.standard_normal((batch, 40)).astype(np.float32)
    out_ref, dz_ref, dgamma_ref, dbeta_ref, mu, var = plain_batchnorm(z, gamma, beta, bn.eps, gy)
    out = bn(z)
    dz = bn.backward(gy)
    np.testing.assert_allclose(out, out_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dz, dz_ref, rtol=1e-3, atol=1e-4)
    if affine:
        np.testing.assert_allclose(bn.weight.grad, dgamma_ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(bn.bias.grad, dbeta_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.running_mean, 0.1 * mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * var * batch / (batch - 1), rtol=1e-5)


def test_batchnorm_eval_and_units_match_their_equations(backend, rng):
    bn = nn.BatchNorm1d(6, units=[1, 4])
    bn.running_mean[...] = [0.5, -1.0]
    bn.running_var[...] = [2.0, 0.25]
    bn.weight.data[...] = [1.5, -0.5]
    bn.eval()
    x = rng.standard_normal((4, 6)).astype(np.float32)
    gy = rng.standard_normal((4, 6)).astype(np.float32)
    y, gx = bn(x), bn.backward(gy)
    scale = np.array([1.5, -0.5]) / np.sqrt(np.array([2.0, 0.25]) + bn.eps)
    expected = x.astype(np.float64)
    expected[:, [1, 4]] = (x[:, [1, 4]] - [0.5, -1.0]) * scale
    expected_gx = gy.astype(np.float64)
    expected_gx[:, [1, 4]] = gy[:, [1, 4]] * scale
    np.testing.assert_allclose(y, expected, **F32)
    np.testing.assert_allclose(gx, expected_gx, **F32)


def test_cross_entropy_matches_its_equation(backend, rng):
    z = (rng.standard_normal((9, 10)) * 4).astype(np.float32)
    d = rng.integers(0, 10, 9)
    z64 = z.astype(np.float64)
    logp = z64 - z64.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    crit = nn.CrossEntropyLoss()
    assert crit(z, d) == pytest.approx(-logp[np.arange(9), d].mean(), rel=1e-6)
    expected = np.exp(logp)
    expected[np.arange(9), d] -= 1
    np.testing.assert_allclose(crit.backward(), expected / 9, **F32)


# ----------------------------------------------------------------------------- dropout masks
@pytest.mark.parametrize("keep, bits, threshold", [(0.5, 1, 1), (1.0, 1, 2), (0.75, 8, 192), (0.8, 32, 3435973837),
                                                   (0.1, 32, 429496730), (1 - 2**-12, 16, 65520)])
def test_keep_rule_is_exact_or_within_2_to_the_minus_33(keep, bits, threshold):
    assert keep_rule(keep) == (bits, threshold)
    assert abs(threshold / 2**bits - keep) <= 2**-33


@pytest.mark.parametrize("keep", [0.5, 0.8, 0.75])
def test_mask_follows_the_chunks_and_the_rule(keep):
    threshold, chunks = random_chunks(np.random.default_rng(3), 1000, keep)
    mask = bernoulli_mask(np.random.default_rng(3), (10, 100), keep, np.float32)
    np.testing.assert_array_equal(mask.ravel(), (chunks < threshold).astype(np.float32))
    assert abs(mask.mean() - keep) < 5 * np.sqrt(keep * (1 - keep) / 1000)


def test_chunks_cover_every_bit_of_the_words_once():
    bits_seen = np.unpackbits(np.random.default_rng(5).integers(0, 2**64 - 1, size=2, dtype=np.uint64,
                                                               endpoint=True).view(np.uint8), bitorder="little")
    _, chunks = random_chunks(np.random.default_rng(5), 128, 0.5)
    np.testing.assert_array_equal(chunks, bits_seen)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.25])
@pytest.mark.parametrize("scaling", ["inverted", "test"])
def test_dropout_backends_draw_the_same_masks(rng, p, scaling):
    x = rng.standard_normal((33, 65)).astype(np.float32)
    gy = rng.standard_normal((33, 65)).astype(np.float32)

    def run():
        drop = nn.Dropout(p, scaling=scaling, rng=11)
        y = drop(x)
        return y, drop.backward(gy)

    (y_np, g_np), (y_nb, g_nb) = both(run)
    np.testing.assert_array_equal(y_np, y_nb)
    np.testing.assert_array_equal(g_np, g_nb)
    scale = 1 / np.float32(1 - p) if scaling == "inverted" else 1
    np.testing.assert_array_equal(y_np, x * ((y_np != 0) * np.float32(scale)).astype(np.float32))


def test_dropout_mask_is_bernoulli_mask_of_the_same_draws(backend, rng):
    x = np.ones((20, 30), dtype=np.float32)
    y = nn.Dropout(0.3, scaling="test", rng=8)(x)
    np.testing.assert_array_equal(y, bernoulli_mask(np.random.default_rng(8), x.shape, 0.7, np.float32))


# ----------------------------------------------------------------------------- outputs stay put
def test_outputs_are_never_overwritten_by_later_calls(backend, rng):
    x1, x2 = (rng.standard_normal((16, 12)).astype(np.float32) for _ in range(2))
    g1, g2 = (rng.standard_normal((16, 12)).astype(np.float32) for _ in range(2))
    for layer in [nn.Linear(12, 12, rng=0), nn.BatchNorm1d(12), nn.BatchNorm1d(12, affine=False), nn.ReLU(),
                  nn.Sigmoid(), nn.Tanh(), nn.Dropout(0.5, rng=1), nn.Dropout(0.2, rng=1)]:
        y1 = layer(x1)
        gx1 = layer.backward(g1)
        kept = y1.copy(), gx1.copy()
        layer(x2)
        layer.backward(g2)
        layer(x1)
        np.testing.assert_array_equal(y1, kept[0], err_msg=repr(layer))
        np.testing.assert_array_equal(gx1, kept[1], err_msg=repr(layer))
        assert not np.shares_memory(y1, x1)


def test_float32_end_to_end_even_with_float64_gradients(backend, rng):
    net = nn.Sequential(nn.Dropout(0.2, rng=0), nn.Linear(8, 16, rng=0), nn.BatchNorm1d(16), nn.ReLU(),
                        nn.Dropout(0.5, rng=1), nn.Linear(16, 4, rng=0), nn.Sigmoid())
    y = net(rng.standard_normal((5, 8)).astype(np.float32))
    assert y.dtype == np.float32
    assert net.backward(rng.standard_normal((5, 4))).dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in net.parameters())


# ----------------------------------------------------------------------------- weight gradient
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_accumulate_adds_the_product(rng, dtype):
    for a, b in [(rng.standard_normal((7, 5)).T, rng.standard_normal((7, 3))),   # g^T x as in Linear
                 (rng.standard_normal((5, 7)), rng.standard_normal((3, 7)).T),
                 (rng.standard_normal((5, 7))[:, ::2], rng.standard_normal((4, 3)))]:  # strided: fallback
        a, b = a.astype(dtype), b.astype(dtype)
        c = rng.standard_normal((a.shape[0], b.shape[1])).astype(dtype)
        expected = c + a @ b
        K.gemm_accumulate(c, a, b)
        np.testing.assert_allclose(c, expected, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-6)


def test_linear_weight_gradient_accumulates(backend, rng):
    lin = nn.Linear(6, 4, rng=0)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    g = rng.standard_normal((5, 4)).astype(np.float32)
    lin(x)
    lin.backward(g)
    lin.backward(g)
    np.testing.assert_allclose(lin.weight.grad, 2 * g.T.astype(np.float64) @ x, **F32)
    np.testing.assert_allclose(lin.bias.grad, 2 * g.sum(0, dtype=np.float64), **F32)


# ----------------------------------------------------------------------------- optimizers
OPTIMIZERS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.5, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, maximize=True)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, kwargs", OPTIMIZERS)
def test_fused_optimizer_step_equals_the_chain(rng, name, kwargs, dtype):
    start = [nn.Parameter(rng.standard_normal(shape).astype(dtype)) for shape in [(5, 4), (4,), (2, 3, 2)]]
    grads = [[rng.standard_normal(p.shape).astype(dtype) for p in start] for _ in range(4)]

    def run():
        params = copy.deepcopy(start)
        opt = getattr(optim, name)(params, **kwargs)
        for step in grads:
            for p, g in zip(params, step):
                p.grad[...] = g
            opt.step()
        return params, opt.state_dict()

    (p_chain, s_chain), (p_fused, s_fused) = both(run)
    for a, b in zip(p_chain, p_fused):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-7)
    for i, entry in s_chain["state"].items():
        assert set(entry) == set(s_fused["state"][i])
        for key, value in entry.items():
            np.testing.assert_allclose(s_fused["state"][i][key], value, rtol=1e-6, atol=1e-7, err_msg=key)


# ----------------------------------------------------------------------------- a whole step
@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_training_steps_agree_between_backends(rng, opt_name):
    data = [(rng.standard_normal((32, 20)).astype(np.float32), rng.integers(0, 5, 32)) for _ in range(3)]

    def run():
        # no bias before batch norm: its true gradient is 0, so Adam would scale rounding noise up to lr
        net = nn.Sequential(nn.Dropout(0.2, rng=1), nn.Linear(20, 64, bias=False, rng=2), nn.BatchNorm1d(64),
                            nn.ReLU(), nn.Dropout(0.5, rng=3), nn.Linear(64, 64, bias=False, rng=4),
                            nn.BatchNorm1d(64), nn.Sigmoid(), nn.Linear(64, 5, rng=5))
        crit = nn.CrossEntropyLoss()
        opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9) if opt_name == "SGD" else \
            optim.Adam(net.parameters(), lr=1e-3)
        losses = []
        for x, d in data:
            opt.zero_grad()
            losses.append(crit(net(x), d))
            net.backward(crit.backward())
            opt.step()
        return losses, net.state_dict()

    (l_np, s_np), (l_nb, s_nb) = both(run)
    np.testing.assert_allclose(l_nb, l_np, rtol=1e-5)
    for key in s_np:
        np.testing.assert_allclose(s_nb[key], s_np[key], rtol=1e-4, atol=1e-5, err_msg=key)


# ----------------------------------------------------------------------------- selection
def test_use_refuses_an_unknown_backend():
    with pytest.raises(ValueError, match="kernel backend must be one of"):
        K.use("cuda")


def test_environment_variable_chooses_the_backend(monkeypatch):
    monkeypatch.setenv("TRICKLAB_KERNELS", "numpy")
    assert K._initial_backend() == "numpy"
    monkeypatch.setenv("TRICKLAB_KERNELS", "fortran")
    with pytest.warns(UserWarning, match="not one of"):
        assert K._initial_backend() == "numpy"
    monkeypatch.delenv("TRICKLAB_KERNELS")
    assert K._initial_backend() == "auto"


def test_the_default_is_decided_at_the_first_kernel_call(monkeypatch):
    monkeypatch.setattr(K, "BACKEND", "auto")
    monkeypatch.setattr(K, "relu", K._choose_on_first_call("relu"))
    y = K.relu(np.array([-1.0, 2.0], dtype=np.float32))
    np.testing.assert_array_equal(y, [0.0, 2.0])
    assert K.BACKEND == ("numba" if K.numba_available() else "numpy")
    assert K.relu is K._IMPLS[K.BACKEND]["relu"]


def test_a_numba_that_does_not_import_means_numpy(monkeypatch):
    monkeypatch.setattr(K, "_NUMBA_IMPORTS", None)
    monkeypatch.setitem(__import__("sys").modules, "numba", None)
    assert not K.numba_available()
    with pytest.raises(ImportError, match="needs the numba package"):
        K.use("numba")


def test_using_restores_the_previous_backend():
    before = K.backend()
    with K.using("numpy"):
        assert K.backend() == "numpy" and K.relu is K._IMPLS["numpy"]["relu"]
    assert K.backend() == before


# ----------------------------------------------------------------------------- input is data
def test_input_grad_false_gives_the_same_parameter_gradients_and_no_input_gradient(backend, rng):
    def net(input_grad):
        return nn.Sequential(nn.Dropout(0.2, rng=1), nn.Linear(10, 8, rng=2), nn.BatchNorm1d(8), nn.ReLU(),
                             nn.Sequential(nn.Linear(8, 3, rng=3)), input_grad=input_grad)

    x = rng.standard_normal((6, 10)).astype(np.float32)
    gy = rng.standard_normal((6, 3)).astype(np.float32)
    full, data_only = net(True), net(False)
    full(x)
    data_only(x)
    assert full.backward(gy).shape == x.shape
    assert data_only.backward(gy) is None
    for (name, p), q in zip(full.named_parameters(), data_only.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)


def test_backward_parameters_of_a_lone_linear_skips_only_the_input_gradient(rng):
    lin = nn.Linear(5, 3, rng=0)
    x, g = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    lin(x)
    assert lin.backward_parameters(g) is None
    np.testing.assert_allclose(lin.weight.grad, g.T @ x, rtol=1e-5)
    assert nn.Sequential(nn.ReLU(), input_grad=False).backward(g) is None


def test_mismatched_shapes_raise_instead_of_reading_past_the_arrays(backend, rng):
    with pytest.raises(ValueError):
        K.gemm_accumulate(np.zeros((3, 4), np.float32), np.ones((3, 5), np.float32), np.ones((6, 4), np.float32))
    bn = nn.BatchNorm1d(4)
    bn(rng.standard_normal((5, 4)).astype(np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm1d.backward got a gradient of shape \(6, 4\)"):
        bn.backward(np.ones((6, 4), np.float32))
    relu = nn.ReLU()
    y = relu(rng.standard_normal((5, 4)).astype(np.float32))
    np.testing.assert_array_equal(relu.backward(np.ones((1, 4), np.float32)), (y > 0).astype(np.float32))
