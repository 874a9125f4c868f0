import numpy as np
import pytest
import torch

from tests.twins import TORCH_DTYPE, tol
from tricklab import export
from tricklab.check import gradcheck
from tricklab.nn.module import Module
from tricklab.nn.recurrent import LSTM, RNN


def t(a, grad=False):
    return torch.from_numpy(np.array(a)).requires_grad_(grad)


def _state_pairs(m, rng, B, dtype):
    shape = (m.num_layers, B, m.hidden_size)
    return [rng.standard_normal(shape).astype(dtype) for _ in range(1 if isinstance(m, RNN) else 2)]


def compare_with_torch(m, x, state0, grad_output, grad_state):
    """Outputs, final states, gradients for x, the initial state and every parameter equal torch's."""
    twin = export.to_torch(m)
    is_rnn = isinstance(m, RNN)
    out, st = m(x, None if state0 is None else (state0[0] if is_rnn else tuple(state0)))
    m.zero_grad()
    gx = m.backward(grad_output, None if grad_state is None else (grad_state[0] if is_rnn else tuple(grad_state)))

    xt = t(x, grad=True)
    s0 = None if state0 is None else [t(s, grad=True) for s in state0]
    out_t, st_t = twin(xt, None if s0 is None else (s0[0] if is_rnn else tuple(s0)))
    finals_t = [st_t] if is_rnn else list(st_t)
    finals = [st] if is_rnn else list(st)
    loss = (out_t * t(grad_output)).sum() if grad_output is not None else 0 * out_t.sum()
    if grad_state is not None:
        loss = loss + sum((f * t(g)).sum() for f, g in zip(finals_t, grad_state))
    loss.backward()

    k = tol(m.dtype)
    np.testing.assert_allclose(out, out_t.detach().numpy(), **k)
    for f, ft in zip(finals, finals_t):
        np.testing.assert_allclose(f, ft.detach().numpy(), **k)
    np.testing.assert_allclose(gx, xt.grad.numpy(), **k)
    if s0 is not None:
        names = ["grad_h0"] if is_rnn else ["grad_h0", "grad_c0"]
        for name, s in zip(names, s0):
            np.testing.assert_allclose(getattr(m, name), s.grad.numpy(), err_msg=name, **k)
    params_t = dict(twin.named_parameters())
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, params_t[name].grad.numpy(), err_msg=name, **k)


CASES = [  # batch, time, input, hidden, layers, bias
    (1, 4, 3, 5, 1, True), (6, 7, 4, 3, 1, True), (3, 5, 2, 4, 2, True), (4, 3, 3, 2, 1, False),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B,T,I,H,L,bias", CASES)
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("cls", [RNN, LSTM])
def test_matches_torch(rng, cls, dtype, B, T, I, H, L, bias, with_state):
    m = cls(I, H, num_layers=L, bias=bias, rng=rng, dtype=dtype)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    state0 = _state_pairs(m, rng, B, dtype) if with_state else None
    gy = rng.standard_normal((B, T, H)).astype(dtype)
    gs = _state_pairs(m, rng, B, dtype) if with_state else None
    compare_with_torch(m, x, state0, gy, gs)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_rnn_matches_torch(rng, dtype):
    m = RNN(3, 6, nonlinearity="relu", num_layers=2, rng=rng, dtype=dtype)
    x = rng.standard_normal((4, 6, 3)).astype(dtype)
    compare_with_torch(m, x, _state_pairs(m, rng, 4, dtype), rng.standard_normal((4, 6, 6)).astype(dtype),
                       _state_pairs(m, rng, 4, dtype))


@pytest.mark.parametrize("cls", [RNN, LSTM])
def test_only_final_state_gradient_matches_torch(rng, cls):
    """grad_output=None: the loss reads only h_n (and c_n), as a sequence classifier does."""
    m = cls(3, 4, rng=rng, dtype=np.float64)
    compare_with_torch(m, rng.standard_normal((5, 6, 3)), None, None, _state_pairs(m, rng, 5, np.float64))


def test_lstm_grad_state_components_may_be_none(rng):
    m = LSTM(3, 4, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, 5, 3))
    gy, gh = rng.standard_normal((2, 5, 4)), rng.standard_normal((1, 2, 4))
    m(x)
    a = m.backward(gy, (gh, None))
    b = m.backward(gy, (gh, np.zeros_like(gh)))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(m.backward(gy), m.backward(gy, (None, None)))


@pytest.mark.parametrize("cls", [RNN, LSTM])
def test_state_dict_names_and_shapes_equal_torch_and_load_both_ways(rng, cls):
    m = cls(3, 5, num_layers=2, rng=rng, dtype=np.float64)
    twin = (torch.nn.RNN if cls is RNN else torch.nn.LSTM)(3, 5, num_layers=2, batch_first=True).double()
    ours, theirs = m.state_dict(), twin.state_dict()
    assert list(ours) == list(theirs)
    assert [v.shape for v in ours.values()] == [tuple(v.shape) for v in theirs.values()]
    m.load_state_dict(theirs)  # torch -> tricklab
    x = rng.standard_normal((2, 4, 3))
    np.testing.assert_allclose(m(x)[0], twin(t(x))[0].detach().numpy(), rtol=1e-12, atol=1e-12)
    m2 = cls(3, 5, num_layers=2, rng=7, dtype=np.float64)
    twin.load_state_dict({k: t(v) for k, v in m2.state_dict().items()})  # tricklab -> torch
    np.testing.assert_allclose(m2(x)[0], twin(t(x))[0].detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [RNN, LSTM])
def test_init_is_uniform_in_torch_bound(cls):
    m = cls(10, 25, rng=0)
    for name, p in m.named_parameters():
        assert p.dtype == np.float32 and p.grad.dtype == np.float32
        assert np.abs(p.data).max() <= 1 / 5, name
        if name.startswith("weight"):
            assert np.abs(p.data).max() > 0.19 and abs(p.data.mean()) < 0.02, name
    assert m.weight_ih_l0.shape == (25 * (1 if cls is RNN else 4), 10)


@pytest.mark.parametrize("cls", [RNN, LSTM])
def test_backward_accumulates(rng, cls):
    m = cls(3, 4, rng=rng, dtype=np.float64)
    x, gy = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 4))
    m(x)
    m.backward(gy)
    once = [p.grad.copy() for p in m.parameters()]
    m.backward(gy)
    for p, g in zip(m.parameters(), once):
        np.testing.assert_allclose(p.grad, 2 * g)


def test_float32_outputs_stay_float32(rng):
    m = LSTM(3, 4, zoneout_h=0.2, zoneout_c=0.3, rng=rng)
    out, (h, c) = m(rng.standard_normal((2, 5, 3)))
    assert out.dtype == h.dtype == c.dtype == np.float32
    assert m.backward(np.ones_like(out), (h, c)).dtype == np.float32


# ----------------------------------------------------------------------------- gradcheck through time


@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("zone", [0.0, 0.3])
def test_rnn_gradcheck_through_time(rng, L, zone):
    m = RNN(3, 4, num_layers=L, zoneout=zone, rng=rng)
    assert gradcheck(m, rng.standard_normal((2, 5, 3))).ok


@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("zh,zc", [(0.0, 0.0), (0.3, 0.5), (0.0, 0.5), (0.4, 0.0)])
def test_lstm_gradcheck_through_time(rng, L, zh, zc):
    m = LSTM(3, 4, num_layers=L, zoneout_h=zh, zoneout_c=zc, rng=rng)
    assert gradcheck(m, rng.standard_normal((2, 5, 3))).ok


@pytest.mark.parametrize("train", [True, False])
def test_lstm_gradcheck_initial_state(rng, train):
    m = LSTM(3, 4, zoneout_h=0.3, zoneout_c=0.5, rng=rng, dtype=np.float64).train(train)
    state = m.rng.bit_generator.state

    def f(x, h0, c0):
        m.rng.bit_generator.state = state  # the same masks for every evaluation
        out = m(x, (h0, c0))
        return out, lambda gy, gs: (m.backward(gy, gs), m.grad_h0, m.grad_c0)

    assert gradcheck(f, rng.standard_normal((2, 5, 3)), *(rng.standard_normal((1, 2, 4)) for _ in range(2))).ok


def test_rnn_gradcheck_initial_state(rng):
    m = RNN(3, 4, zoneout=0.3, rng=rng, dtype=np.float64)
    state = m.rng.bit_generator.state

    def f(x, h0):
        m.rng.bit_generator.state = state
        out = m(x, h0)
        return out, lambda gy, gs: (m.backward(gy, gs), m.grad_h0)

    assert gradcheck(f, rng.standard_normal((2, 5, 3)), rng.standard_normal((1, 2, 4))).ok


# ----------------------------------------------------------------------------- zoneout behaviour


def _mix(d, old, new):
    d = t(d) if isinstance(d, np.ndarray) else d
    return d * old + (1 - d) * new


def zoneout_reference(m, x, state0, d_h, d_c):
    """The zoneout recurrence on torch.nn.RNNCell / LSTMCell with autograd; d_* are the module's
    batch-first masks (num_layers, batch, time, hidden) or the eval probability."""
    is_rnn = isinstance(m, RNN)
    sd = m.state_dict()
    layer_in, finals, cells = x, [], []
    for l in range(m.num_layers):
        if is_rnn:
            cell = torch.nn.RNNCell(layer_in.shape[-1], m.hidden_size, nonlinearity=m.nonlinearity)
        else:
            cell = torch.nn.LSTMCell(layer_in.shape[-1], m.hidden_size)
        cell = cell.to(TORCH_DTYPE[m.dtype])
        cell.load_state_dict({k: t(sd[f"{k}_l{l}"]) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
        cells.append(cell)
        h = state0[0][l]
        c = None if is_rnn else state0[1][l]
        outs = []
        for step in range(x.shape[1]):
            mh = d_h[l][:, step] if isinstance(d_h, np.ndarray) else d_h
            if is_rnn:
                h_new = cell(layer_in[:, step], h)
            else:
                h_new, c_new = cell(layer_in[:, step], (h, c))
                mc = d_c[l][:, step] if isinstance(d_c, np.ndarray) else d_c
                c = _mix(mc, c, c_new)
            h = _mix(mh, h, h_new)
            outs.append(h)
        layer_in = torch.stack(outs, dim=1)
        finals.append((h,) if is_rnn else (h, c))
    return layer_in, [torch.stack(s) for s in zip(*finals)], cells


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("cls,zone", [(RNN, dict(zoneout=0.4)), (LSTM, dict(zoneout_h=0.3, zoneout_c=0.6))])
def test_zoneout_matches_the_paper_recurrence_on_torch_cells(rng, cls, zone, train, dtype):
    """Train: the stored masks give torch's outputs and gradients (masks reused in backward);
    eval: the expectation s_t = z s_{t-1} + (1 - z) s~_t."""
    m = cls(3, 4, num_layers=2, rng=rng, dtype=dtype, **zone).train(train)
    B, T = 3, 6
    x = rng.standard_normal((B, T, 3)).astype(dtype)
    s0 = _state_pairs(m, rng, B, dtype)
    out, st = m(x, s0[0] if cls is RNN else tuple(s0))
    finals = [st] if cls is RNN else list(st)
    gy = rng.standard_normal(out.shape).astype(dtype)
    gs = _state_pairs(m, rng, B, dtype)
    m.zero_grad()
    gx = m.backward(gy, gs[0] if cls is RNN else tuple(gs))

    if train:
        d_h, d_c = m.mask_h, getattr(m, "mask_c", None)
        assert d_h.shape == (2, B, T, 4)
    else:
        assert m.mask_h is None
        d_h, d_c = (m.zoneout, None) if cls is RNN else (m.zoneout_h, m.zoneout_c)
    xt, s0t = t(x, grad=True), [t(s, grad=True) for s in s0]
    out_t, finals_t, cells = zoneout_reference(m, xt, s0t, d_h, d_c)
    ((out_t * t(gy)).sum() + sum((f * t(g)).sum() for f, g in zip(finals_t, gs))).backward()

    k = tol(dtype)
    np.testing.assert_allclose(out, out_t.detach().numpy(), **k)
    for f, ft in zip(finals, finals_t):
        np.testing.assert_allclose(f, ft.detach().numpy(), **k)
    np.testing.assert_allclose(gx, xt.grad.numpy(), **k)
    for name, s in zip(["grad_h0", "grad_c0"], s0t):
        np.testing.assert_allclose(getattr(m, name), s.grad.numpy(), **k)
    for l, cell in enumerate(cells):
        for name, p in cell.named_parameters():
            np.testing.assert_allclose(getattr(m, f"{name}_l{l}").grad, p.grad.numpy(), err_msg=name, **k)


def test_kept_units_copy_the_previous_state_exactly(rng):
    m = LSTM(3, 16, zoneout_h=0.5, zoneout_c=0.5, rng=rng)
    x = rng.standard_normal((8, 10, 3))
    h0, c0 = (rng.standard_normal((1, 8, 16)).astype(np.float32) for _ in range(2))
    out, _ = m(x, (h0, c0))
    prev = np.concatenate([h0[0][:, None], out[:, :-1]], axis=1)
    kept = m.mask_h[0].astype(bool)
    assert 0.4 < kept.mean() < 0.6
    np.testing.assert_array_equal(out[kept], prev[kept])
    assert np.all(out[~kept] != prev[~kept])


@pytest.mark.parametrize("mask_attr,kw", [("mask_h", dict(zoneout_h=0.3)), ("mask_c", dict(zoneout_c=0.7))])
def test_mask_fraction_is_the_zoneout_probability(mask_attr, kw):
    m = LSTM(2, 50, rng=3, **kw)
    m(np.zeros((40, 25, 2)))
    d = getattr(m, mask_attr)
    z = next(iter(kw.values()))
    assert abs(d.mean() - z) < 5 * np.sqrt(z * (1 - z) / d.size)
    assert set(np.unique(d)) == {0.0, 1.0}


def test_masks_are_fresh_every_forward_and_reused_by_backward(rng):
    m = LSTM(3, 8, zoneout_h=0.3, zoneout_c=0.3, rng=rng, dtype=np.float64)
    x, gy = rng.standard_normal((4, 6, 3)), rng.standard_normal((4, 6, 8))
    m(x)
    first = m.mask_h.copy()
    g1 = m.backward(gy)
    g2 = m.backward(gy)
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_array_equal(m.mask_h, first)
    m(x)
    assert not np.array_equal(m.mask_h, first)


def test_zoneout_close_to_one_barely_changes_the_state(rng):
    m = LSTM(3, 8, zoneout_h=0.999, zoneout_c=0.999, rng=rng, dtype=np.float64)
    x = rng.standard_normal((4, 6, 3))
    h0, c0 = rng.standard_normal((1, 4, 8)), rng.standard_normal((1, 4, 8))
    for mode in (True, False):
        out, (h, c) = m.train(mode)(x, (h0, c0))
        assert np.abs(h - h0).max() < 0.1 and np.abs(c - c0).max() < 0.1
        assert np.abs(out - h0[0][:, None]).mean() < 0.01


def test_eval_is_the_expectation_of_training_for_one_step(rng):
    """For one step the output is linear in the mask, so E[train output] = eval output."""
    m = LSTM(3, 5, zoneout_h=0.4, zoneout_c=0.6, rng=rng, dtype=np.float64)
    x = np.repeat(rng.standard_normal((1, 1, 3)), 20000, axis=0)
    h0 = np.repeat(rng.standard_normal((1, 1, 5)), 20000, axis=1)
    c0 = np.repeat(rng.standard_normal((1, 1, 5)), 20000, axis=1)
    out_train, (_, c_train) = m.train()(x, (h0, c0))
    out_eval, (_, c_eval) = m.eval()(x, (h0, c0))
    se = out_train.std(axis=0) / np.sqrt(len(x)) + 1e-12
    assert np.all(np.abs(out_train.mean(axis=0) - out_eval[0]) < 5 * se)
    plain = LSTM(3, 5, rng=0, dtype=np.float64)
    plain.load_state_dict(m.state_dict())
    h_new, (_, c_new) = plain(x[:1], (h0[:, :1], c0[:, :1]))
    np.testing.assert_allclose(out_eval[:1], 0.4 * h0[:, :1].transpose(1, 0, 2) + 0.6 * h_new, rtol=1e-13)
    np.testing.assert_allclose(c_eval[:, :1], 0.6 * c0[:, :1] + 0.4 * c_new, rtol=1e-13)


@pytest.mark.parametrize("cls,zone", [(RNN, dict(zoneout=0.3)), (LSTM, dict(zoneout_h=0.1, zoneout_c=0.5))])
def test_train_and_eval_differ(rng, cls, zone):
    m = cls(3, 6, rng=rng, **zone)
    x = rng.standard_normal((4, 7, 3))
    train_out = m.train()(x)[0]
    eval_out = m.eval()(x)[0]
    assert not np.allclose(train_out, eval_out)
    np.testing.assert_array_equal(eval_out, m(x)[0])  # eval is deterministic


@pytest.mark.parametrize("cls,zone", [(RNN, dict(zoneout=0.0)), (LSTM, dict(zoneout_h=0.0, zoneout_c=0.0))])
def test_zero_zoneout_is_the_plain_layer_exactly(rng, cls, zone):
    plain, zoned = cls(3, 6, rng=1), cls(3, 6, rng=1, **zone)
    x, gy = rng.standard_normal((4, 7, 3)), rng.standard_normal((4, 7, 6))
    state = zoned.rng.bit_generator.state
    for mode in (True, False):
        a, b = plain.train(mode)(x), zoned.train(mode)(x)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(plain.backward(gy), zoned.backward(gy))
    assert zoned.rng.bit_generator.state == state  # no masks drawn
    assert zoned.mask_h is None


def test_zoneout_h_only_leaves_the_cell_unmasked(rng):
    m = LSTM(3, 6, zoneout_h=0.5, rng=rng)
    m(rng.standard_normal((2, 4, 3)))
    assert m.mask_h is not None and m.mask_c is None


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("kw,name", [
    (dict(zoneout_h=1.0), "zoneout_h"), (dict(zoneout_h=-0.1), "zoneout_h"),
    (dict(zoneout_c=1.5), "zoneout_c"), (dict(zoneout_c=float("nan")), "zoneout_c"),
    (dict(zoneout_c=True), "zoneout_c"), (dict(zoneout_h="0.1"), "zoneout_h"),
])
def test_lstm_rejects_bad_zoneout(kw, name):
    with pytest.raises(ValueError, match=rf"LSTM: {name} must be in \[0, 1\)"):
        LSTM(3, 4, **kw)


def test_rnn_rejects_bad_zoneout_and_nonlinearity():
    with pytest.raises(ValueError, match=r"RNN: zoneout must be in \[0, 1\), got 1"):
        RNN(3, 4, zoneout=1)
    with pytest.raises(ValueError, match="nonlinearity must be one of"):
        RNN(3, 4, nonlinearity="sigmoid")


@pytest.mark.parametrize("cls", [RNN, LSTM])
@pytest.mark.parametrize("kw,name", [(dict(hidden_size=0), "hidden_size"), (dict(num_layers=0), "num_layers"),
                                     (dict(input_size=2.5), "input_size")])
def test_rejects_bad_sizes(cls, kw, name):
    args = dict(input_size=3, hidden_size=4) | kw
    with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
        cls(**args)


@pytest.mark.parametrize("cls", [RNN, LSTM])
def test_rejects_batch_first_false(cls):
    with pytest.raises(ValueError, match="only batch_first=True is supported"):
        cls(3, 4, batch_first=False)


@pytest.mark.parametrize("cls", [RNN, LSTM])
@pytest.mark.parametrize("shape", [(5, 3), (2, 5, 3, 1), (2, 5, 4)])
def test_rejects_input_of_wrong_rank_or_size(cls, shape):
    expected = r"got input of shape .*; expected \(batch, time, input_size\) = \(batch, time, 3\)"
    with pytest.raises(ValueError, match=expected):
        cls(3, 4, rng=0)(np.zeros(shape))


def test_rejects_integer_input():
    with pytest.raises(TypeError, match="floating-point input, got dtype int64"):
        RNN(3, 4, rng=0)(np.zeros((2, 5, 3), dtype=np.int64))


def test_rejects_initial_state_of_wrong_shape():
    x = np.zeros((2, 5, 3))
    with pytest.raises(ValueError, match=r"RNN: h_0 has shape \(2, 4\); expected .* = \(1, 2, 4\)"):
        RNN(3, 4, rng=0)(x, np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"LSTM: c_0 has shape \(1, 3, 4\); expected .* = \(1, 2, 4\)"):
        LSTM(3, 4, rng=0)(x, (np.zeros((1, 2, 4)), np.zeros((1, 3, 4))))
    with pytest.raises(TypeError, match=r"state must be a pair \(h_0, c_0\)"):
        LSTM(3, 4, rng=0)(x, np.zeros((1, 2, 4)))


def test_rejects_gradients_of_wrong_shape():
    m = LSTM(3, 4, rng=0)
    m(np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match=r"grad_output has shape \(2, 4, 4\); expected .* = \(2, 5, 4\)"):
        m.backward(np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match=r"gradient for c_n has shape \(2, 4\)"):
        m.backward(np.zeros((2, 5, 4)), (None, np.zeros((2, 4))))
    with pytest.raises(TypeError, match="grad_state must be a pair"):
        m.backward(np.zeros((2, 5, 4)), np.zeros((1, 2, 4)))


@pytest.mark.parametrize("cls", [RNN, LSTM])
def test_backward_before_forward_is_an_error(cls):
    with pytest.raises(RuntimeError, match="backward called before forward"):
        cls(3, 4, rng=0).backward(np.zeros((1, 2, 4)))


def test_is_a_module_with_a_readable_repr():
    m = LSTM(3, 4, num_layers=2, zoneout_h=0.05, zoneout_c=0.5, rng=0)
    assert isinstance(m, Module)
    assert repr(m) == "LSTM(3, 4, batch_first=True, num_layers=2, zoneout_h=0.05, zoneout_c=0.5)"


def test_options_after_num_layers_are_keyword_only():
    """torch.nn.LSTM's sixth positional argument is dropout: refuse positional use, never guess."""
    with pytest.raises(TypeError):
        LSTM(3, 5, 1, True, True, 0.5)
    with pytest.raises(TypeError):
        RNN(3, 5, 1, "relu")
