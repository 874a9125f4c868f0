"""The layers' passes against the plain equations, and their compiled twins (nn/_compiled.py)
against the plain NumPy passes of the layers' modules.

Every layer must give the numbers of the lecture's equations written plainly (here in float64), to
float32 rounding, under both kernel backends; each compiled twin must give its plain pass's numbers
(bit for bit where both do the same float operations in the same order, else within the rounding
of a differently ordered float64 sum or of a libm exp/log). The fused optimizer updates are checked
in tests/optim/test_fused.py. Speed is not tested here: the benchmark (python -m benchmarks.run)
measures it.
"""

import copy

import numpy as np
import pytest

from tricklab import nn, optim
from tricklab.nn import _kernels as K
from tricklab.nn import activation, dropout, loss, normalization
from tricklab.nn._blas import gemm_accumulate
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
        gemm_accumulate(c, a, b)
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


# ----------------------------------------------------------------------------- compiled twins
def compiled_twins():
    if not K.numba_available():
        pytest.skip("numba is not installed")
    with K.using("numba"):
        return K.compiled()


def same(a, b):
    np.testing.assert_array_equal(a, b)
    assert np.asarray(a).dtype == np.asarray(b).dtype


def within_float32_rounding(fast, plain, scale, ulps=4):
    """|fast - plain| <= ulps * eps32 * scale: the two differ only in how a float64 sum was ordered
    (rounded once to float32, so at most an ulp or so of ``scale``, the size of the terms involved)."""
    assert np.asarray(fast).dtype == np.asarray(plain).dtype
    error = np.abs(np.asarray(fast, np.float64) - plain)
    bound = ulps * float(np.finfo(np.float32).eps) * np.asarray(scale, np.float64)
    assert (error <= bound).all(), f"largest error {error.max()} where the bound is {np.broadcast_to(bound, error.shape)[error.argmax() // error.shape[-1] if error.ndim > 1 else error.argmax()]}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_activations_are_the_plain_passes(rng, dtype):
    fast = compiled_twins()
    x = rng.standard_normal((7, 33)).astype(dtype)
    x[0, :3] = [np.nan, -0.0, 0.0]
    g = rng.standard_normal((7, 33)).astype(dtype)
    same(fast.relu(x), activation.relu(x))
    y = activation.sigmoid(x)
    for name in ("relu_backward", "sigmoid_backward", "tanh_backward"):
        same(getattr(fast, name)(g, y), getattr(activation, name)(g, y))
        same(getattr(fast, name)(g[:1], y), getattr(activation, name)(g[:1], y))  # broadcasting
    out = np.empty_like(x)
    assert fast.relu(x, out) is out
    same(out, activation.relu(x))


@pytest.mark.parametrize("keep", [0.5, 0.8, 0.75])
def test_compiled_masks_are_the_plain_passes(rng, keep):
    fast = compiled_twins()
    x = rng.standard_normal((9, 14)).astype(np.float32)
    threshold, chunks = random_chunks(np.random.default_rng(4), x.size, keep)
    scale = np.float32(1 / keep)
    masks = [np.empty_like(x) for _ in range(4)]
    fast.bernoulli_(chunks, threshold, scale, masks[0])
    dropout.bernoulli_(chunks, threshold, scale, masks[1])
    same(masks[0], masks[1])
    same(fast.dropout(x, chunks, threshold, scale, masks[2]), dropout.dropout(x, chunks, threshold, scale, masks[3]))
    same(masks[2], masks[3])


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("batch", [2, 7, 300])
def test_compiled_batchnorm_is_the_plain_pass(rng, affine, batch):
    fast = compiled_twins()
    n = 23
    z = (rng.standard_normal((batch, n)) * 3 + 5).astype(np.float32)
    gy = rng.standard_normal((batch, n)).astype(np.float32)
    gamma, beta = (rng.uniform(0.5, 2, n).astype(np.float32), rng.standard_normal(n).astype(np.float32)) \
        if affine else (None, None)
    out_f, *stats_f = fast.batchnorm_train(z, gamma, beta, 1e-5)
    out_p, *stats_p = normalization.batchnorm_train(z, gamma, beta, 1e-5)
    mu, var, inv_std = stats_p
    for f, p in zip(stats_f, stats_p):
        within_float32_rounding(f, p, np.abs(p))
    within_float32_rounding(out_f, out_p, (np.abs(z) + np.abs(mu)) * inv_std * (1 if gamma is None else gamma) + 1)
    # the same statistics in: eval and the running update do the same operations in the same order
    same(fast.batchnorm_eval(z, mu, inv_std, gamma, beta), normalization.batchnorm_eval(z, mu, inv_std, gamma, beta))
    running = [rng.uniform(0, 1, n).astype(np.float32) for _ in range(2)]
    running += [r.copy() for r in running]
    fast.batchnorm_running_(running[0], running[1], mu, var, 0.1, batch)
    normalization.batchnorm_running_(running[2], running[3], mu, var, 0.1, batch)
    same(running[0], running[2])
    same(running[1], running[3])
    for batch_stats in (True, False):
        grads = [np.ones(n, np.float32) for _ in range(4)] if affine else [None] * 4
        gz_f = fast.batchnorm_backward(gy, z, mu, inv_std, gamma, batch_stats, grads[0], grads[1])
        gz_p = normalization.batchnorm_backward(gy, z, mu, inv_std, gamma, batch_stats, grads[2], grads[3])
        g_size = np.abs(gy).max() * (1 + np.abs((z - mu) * inv_std).max())
        within_float32_rounding(gz_f, gz_p, g_size * inv_std * (1 if gamma is None else gamma))
        if affine:
            within_float32_rounding(grads[0], grads[2], 1 + batch * g_size)
            within_float32_rounding(grads[1], grads[3], 1 + batch * np.abs(gy).max())


def test_compiled_cross_entropy_is_the_plain_pass(rng):
    fast = compiled_twins()
    z = (rng.standard_normal((31, 10)) * 4).astype(np.float32)
    d = rng.integers(0, 10, 31)
    loss_f, logp_f = fast.cross_entropy(z, d)
    loss_p, logp_p = loss.cross_entropy(z, d)
    # exp and log are libm's in the loop and NumPy's SIMD ones in the plain pass: an ulp or two apart
    within_float32_rounding(logp_f, logp_p, np.abs(logp_p) + 1)
    assert abs(loss_f - loss_p) <= 4 * np.finfo(np.float32).eps * (np.abs(logp_p).max() + 1)


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
    y = nn.ReLU()(np.array([-1.0, 2.0], dtype=np.float32))
    np.testing.assert_array_equal(y, [0.0, 2.0])
    assert K.BACKEND == ("numba" if K.numba_available() else "numpy")
    assert (K.compiled() is None) == (K.BACKEND == "numpy")


def test_a_numba_that_does_not_import_means_numpy(monkeypatch):
    monkeypatch.setattr(K, "_NUMBA_IMPORTS", None)
    monkeypatch.setitem(__import__("sys").modules, "numba", None)
    assert not K.numba_available()
    with pytest.raises(ImportError, match="needs the numba package"):
        K.use("numba")


def test_using_restores_the_previous_backend():
    before = K.backend()
    with K.using("numpy"):
        assert K.backend() == "numpy" and K.compiled() is None
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
        gemm_accumulate(np.zeros((3, 4), np.float32), np.ones((3, 5), np.float32), np.ones((6, 4), np.float32))
    bn = nn.BatchNorm1d(4)
    bn(rng.standard_normal((5, 4)).astype(np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm1d.backward got a gradient of shape \(6, 4\)"):
        bn.backward(np.ones((6, 4), np.float32))
    relu = nn.ReLU()
    y = relu(rng.standard_normal((5, 4)).astype(np.float32))
    np.testing.assert_array_equal(relu.backward(np.ones((1, 4), np.float32)), (y > 0).astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride, dilation", [((1, 1), (1, 1)), ((2, 1), (1, 3)), ((3, 2), (2, 2))])
def test_compiled_col2im_is_the_plain_pass(rng, dtype, stride, dilation):
    from tricklab.nn.conv import col2im_add_

    fast = compiled_twins()
    c, kh, kw, n, ho, wo = 3, 3, 2, 4, 5, 6
    height = dilation[0] * (kh - 1) + stride[0] * (ho - 1) + 1
    width = dilation[1] * (kw - 1) + stride[1] * (wo - 1) + 1
    d_cols = rng.standard_normal((c, kh, kw, n, ho, wo)).astype(dtype)
    start = rng.standard_normal((n, c, height + 1, width + 2)).astype(dtype)  # a border no offset reaches
    plain, compiled = start.copy(), start.copy()
    col2im_add_(plain, d_cols, stride, dilation)
    fast.col2im_add_(compiled, d_cols, stride, dilation)
    same(compiled, plain)  # each pixel's terms added in the same (u, v) order
    assert not np.array_equal(plain, start) and np.array_equal(plain[:, :, height:], start[:, :, height:])
