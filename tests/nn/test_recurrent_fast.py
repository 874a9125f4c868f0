"""The fused recurrent path (numba kernels) against the plain per-step NumPy loops of nn/recurrent.py.

With the ``numpy`` kernels RNN and LSTM run ``_layer_forward`` / ``_layer_backward``, the readable
reference; with ``numba`` the ``_fused`` twins. Both must give the same outputs, final states,
input gradients, initial-state gradients and parameter gradients: in float64 to 1e-12, in float32
as accurately as the plain path (checked against the float64 plain path). Speed is measured by
python -m benchmarks.run, not here.
"""

import copy

import numpy as np
import pytest

from tricklab.nn import _kernels as K
from tricklab.nn._blas import gemm_accumulate_steps
from tricklab.nn.recurrent import LSTM, RNN, SequenceEncoder

pytestmark = pytest.mark.skipif(not K.numba_available(), reason="the fused path needs numba")

F64 = dict(rtol=1e-12, atol=1e-12)
ZONES = {RNN: [dict(zoneout=0.0), dict(zoneout=0.4)],
         LSTM: [dict(zoneout_h=0.0, zoneout_c=0.0), dict(zoneout_h=0.3, zoneout_c=0.6),
                dict(zoneout_h=0.0, zoneout_c=0.5), dict(zoneout_h=0.4, zoneout_c=0.0)]}
CASES = [(cls, zone) for cls, zones in ZONES.items() for zone in zones]
ZONED = [(RNN, ZONES[RNN][1]), (LSTM, ZONES[LSTM][1])]


def run(m, backend, x, state0, gy, gs):
    """Everything a forward and backward pass produce, under ``backend``'s kernels."""
    is_rnn = isinstance(m, RNN)
    with K.using(backend):
        out, st = m(x, state0[0] if is_rnn else tuple(state0))
        m.zero_grad()
        gx = m.backward(gy, gs[0] if is_rnn else tuple(gs))
    finals = [st] if is_rnn else list(st)
    grads0 = [m.grad_h0] if is_rnn else [m.grad_h0, m.grad_c0]
    result = {"output": out, "grad_x": gx}
    result.update({f"final{k}": f for k, f in enumerate(finals)})
    result.update({f"grad_state0_{k}": g for k, g in enumerate(grads0)})
    result.update({f"grad {name}": p.grad.copy() for name, p in m.named_parameters()})
    masks = [m.mask_h] + ([] if is_rnn else [m.mask_c])
    return result, masks


def problem(cls, zone, dtype, rng, L=2, bias=True, B=5, T=6, I=3, H=4, **kw):
    m = cls(I, H, num_layers=L, bias=bias, rng=rng, dtype=dtype, **zone, **kw)
    n_states = 1 if cls is RNN else 2
    x = rng.standard_normal((B, T, I))
    state0 = [rng.standard_normal((L, B, H)) for _ in range(n_states)]
    gy = rng.standard_normal((B, T, H))
    gs = [rng.standard_normal((L, B, H)) for _ in range(n_states)]
    return m, x, state0, gy, gs


def cast(arrays, dtype):
    return [a.astype(dtype) for a in arrays]


def both_paths(m, x, state0, gy, gs):
    """(plain, fused) results of two copies of m (same generator state: the same zoneout masks)."""
    twin = copy.deepcopy(m)
    plain, masks_plain = run(m, "numpy", x, state0, gy, gs)
    fused, masks_fused = run(twin, "numba", x, state0, gy, gs)
    for a, b in zip(masks_plain, masks_fused):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)
    return plain, fused


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("L,bias", [(1, True), (2, True), (3, False)])
@pytest.mark.parametrize("cls,zone", CASES)
def test_fused_equals_plain_in_float64(rng, cls, zone, L, bias, train):
    m, x, state0, gy, gs = problem(cls, zone, np.float64, rng, L=L, bias=bias)
    m.train(train)
    plain, fused = both_paths(m, x, state0, gy, gs)
    assert plain.keys() == fused.keys()
    for name in plain:
        np.testing.assert_allclose(fused[name], plain[name], err_msg=name, **F64)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("cls,zone", CASES)
def test_fused_float32_is_as_accurate_as_plain_float32(rng, cls, zone, train):
    """Both float32 paths against the float64 plain path: the fused error is at most twice the plain
    error plus 4 units of float32 rounding of the value's magnitude (the two differ only in the order
    of a few additions per step, so neither should be more than a rounding or so off the other)."""
    m, x, state0, gy, gs = problem(cls, zone, np.float32, rng, L=2, B=7, T=9, I=5, H=6)
    m.train(train)
    reference = copy.deepcopy(m).to(np.float64)
    ref, _ = run(reference, "numpy", x, state0, gy, gs)
    args32 = (x.astype(np.float32), cast(state0, np.float32), gy.astype(np.float32), cast(gs, np.float32))
    plain, fused = both_paths(m, *args32)
    eps = np.finfo(np.float32).eps
    for name in ref:
        assert fused[name].dtype == np.float32, name
        err_plain = np.abs(plain[name] - ref[name]).max()
        err_fused = np.abs(fused[name] - ref[name]).max()
        assert err_fused <= 2 * err_plain + 4 * eps * np.abs(ref[name]).max(), (name, err_fused, err_plain)


def test_relu_rnn_fused_equals_plain(rng):
    m, x, state0, gy, gs = problem(RNN, dict(zoneout=0.3), np.float64, rng, L=2, nonlinearity="relu")
    plain, fused = both_paths(m, x, state0, gy, gs)
    for name in plain:
        np.testing.assert_allclose(fused[name], plain[name], err_msg=name, **F64)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_each_backend_runs_its_own_path(rng, monkeypatch, backend):
    """numpy runs the plain loops only, numba the fused ones only."""
    other = "_fused" if backend == "numpy" else ""
    for cls in (RNN, LSTM):
        for method in ("_layer_forward", "_layer_backward"):
            def refuse(*args, name=method + other, **kwargs):
                raise AssertionError(f"{name} ran under the {backend} kernels")
            monkeypatch.setattr(cls, method + other, refuse)
    for cls, zone in CASES[::2]:
        m, x, state0, gy, gs = problem(cls, zone, np.float64, rng)
        run(m, backend, x, state0, gy, gs)


@pytest.mark.parametrize("cls,zone", ZONED)
def test_reused_buffers_never_reach_the_caller(rng, cls, zone):
    """A second forward and backward (other inputs, same shapes) leaves the first call's results as they
    were, and gives the same results as a fresh model would."""
    m, x, state0, gy, gs = problem(cls, zone, np.float32, rng)
    fresh = copy.deepcopy(m)
    first, _ = run(m, "numba", x, state0, gy, gs)
    kept = {k: v.copy() for k, v in first.items()}
    _, x2, state2, gy2, gs2 = problem(cls, zone, np.float32, np.random.default_rng(7))
    run(fresh, "numba", x, state0, gy, gs)  # the fresh copy's generator must be where m's is now
    second, _ = run(m, "numba", x2, state2, gy2, gs2)
    again, _ = run(fresh, "numba", x2, state2, gy2, gs2)
    for name in first:
        np.testing.assert_array_equal(first[name], kept[name], err_msg=name)
        np.testing.assert_array_equal(second[name], again[name], err_msg=name)
        assert not np.array_equal(first[name], second[name]), name


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("cls,zone", ZONED)
def test_backward_parameters_skips_only_the_input_gradient(rng, backend, cls, zone):
    m, x, state0, gy, gs = problem(cls, zone, np.float64, rng, L=2)
    twin = copy.deepcopy(m)
    full, _ = run(m, backend, x, state0, gy, gs)
    is_rnn = cls is RNN
    with K.using(backend):
        twin(x, state0[0] if is_rnn else tuple(state0))
        twin.zero_grad()
        assert twin.backward_parameters(gy, gs[0] if is_rnn else tuple(gs)) is None
    for name, p in twin.named_parameters():
        np.testing.assert_array_equal(p.grad, full[f"grad {name}"], err_msg=name)
    np.testing.assert_array_equal(twin.grad_h0, full["grad_state0_0"])


def test_sequence_encoder_backward_parameters_gives_backwards_parameter_gradients(rng):
    enc = SequenceEncoder(LSTM(3, 4, rng=rng), time_steps=5)
    twin = copy.deepcopy(enc)
    x = rng.standard_normal((6, 15))
    g = rng.standard_normal((6, 4))
    enc(x)
    assert enc.backward(g).shape == (6, 15)
    twin(x)
    assert twin.backward_parameters(g) is None
    for (name, p), q in zip(enc.named_parameters(), twin.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)


def test_step_kernels_refuse_shapes_that_do_not_fit():
    with K.using("numba"):
        fast = K.compiled()
    a, c = np.zeros((3, 8)), np.zeros((3, 2))
    with pytest.raises(ValueError, match="do not fit states of shape"):
        fast.lstm_cell_(a, c, None, c, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="do not fit states of shape"):
        fast.lstm_backward_(c, c, np.zeros((3, 6)), c, c, None, None, None, a, c)
    with pytest.raises(ValueError, match="do not fit states of shape"):
        fast.rnn_backward_(c, c, None, False, np.zeros((2, 2)), c, c)
    with pytest.raises(ValueError, match="do not fit states of shape"):
        fast.zone_(c, c, np.zeros((3, 3)), c)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_accumulate_steps_adds_each_steps_product(rng, dtype):
    c = rng.standard_normal((3, 4, 5)).astype(dtype)
    a = rng.standard_normal((6, 4, 2)).astype(dtype)
    w = rng.standard_normal((5, 2)).astype(dtype)  # used transposed, as the layers use W_hh
    expected = c.copy()
    step = gemm_accumulate_steps(c, a, w.T)
    for i, j in [(0, 5), (2, 0), (0, 1)]:
        step(i, j)
        expected[i] += a[j] @ w.T
    np.testing.assert_allclose(c, expected, rtol=10 * np.finfo(dtype).eps, atol=10 * np.finfo(dtype).eps)
    with pytest.raises(IndexError, match=r"step \(3, 0\) outside the stacks of 3 and 6"):
        step(3, 0)
    with pytest.raises(IndexError, match="outside the stacks"):
        step(0, -1)


def test_gemm_accumulate_steps_without_one_blas_call_still_adds_and_checks(rng):
    c = rng.standard_normal((2, 3, 4))
    a = rng.standard_normal((2, 3, 5))[:, :, ::2]  # strided rows: not one BLAS call
    w = rng.standard_normal((3, 4))
    expected = c[1] + a[0] @ w
    step = gemm_accumulate_steps(c, a, w)
    step(1, 0)
    np.testing.assert_allclose(c[1], expected, rtol=1e-14, atol=1e-14)
    with pytest.raises(IndexError, match="outside the stacks"):
        step(0, -1)
