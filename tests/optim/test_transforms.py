"""Each gradient transformation against its equation, written out by hand here."""

import numpy as np
import pytest
import torch  # noqa: F401  (the optim test-suite requires torch; a missing torch must fail)

from tricklab.optim import transforms as T


def run(t, gs, w):
    """Feed the gradients ``gs`` through ``t``, and return the updates and the final state."""
    state, us = t.init(w), []
    for g in gs:
        g_before = g.copy()
        u, state = t.update(g, state, w)
        np.testing.assert_array_equal(g, g_before)  # transforms never write into g
        us.append(u.copy())
    return us, state


def test_scale_and_learning_rate(rng):
    g, w = rng.standard_normal(5), rng.standard_normal(5)
    (u,), _ = run(T.scale(-1.0), [g], w)
    np.testing.assert_array_equal(u, -g)
    (u,), state = run(T.scale_by_learning_rate(0.1), [g], w)
    np.testing.assert_array_equal(u, -0.1 * g)
    assert state == {}


def test_add_decayed_weights_is_the_gradient_of_half_lambda_frobenius(rng):
    lam, W, g = 0.3, rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    (u,), _ = run(T.add_decayed_weights(lam), [g], W)
    eps = 1e-6  # central difference of (lam/2) ||W||_F^2 in direction E
    E = rng.standard_normal(W.shape)
    penalty = lambda M: 0.5 * lam * np.sum(M * M)
    numeric = (penalty(W + eps * E) - penalty(W - eps * E)) / (2 * eps)
    assert np.sum((u - g) * E) == pytest.approx(numeric, rel=1e-8)
    (u,), _ = run(T.add_decayed_weights(0.0), [g], W)
    np.testing.assert_array_equal(u, g)


@pytest.mark.parametrize("mu, damp, nesterov", [(0.9, 0.0, False), (0.9, 0.5, False), (0.8, 0.0, True)])
def test_trace(rng, mu, damp, nesterov):
    gs, w = [rng.standard_normal(4) for _ in range(5)], np.zeros(4)
    us, state = run(T.trace(mu, damp, nesterov), gs, w)
    b = gs[0].copy()
    for t, g in enumerate(gs):
        if t > 0:
            b = mu * b + (1 - damp) * g
        np.testing.assert_allclose(us[t], g + mu * b if nesterov else b, rtol=1e-14)
    np.testing.assert_allclose(state["momentum_buffer"], b, rtol=1e-14)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_scale_by_adam(rng, amsgrad):
    b1, b2, eps = 0.8, 0.95, 1e-8
    gs, w = [rng.standard_normal(6) for _ in range(6)], np.zeros(6)
    us, state = run(T.scale_by_adam(b1, b2, eps, amsgrad), gs, w)
    m = v = vmax = np.zeros(6)
    for t, g in enumerate(gs, start=1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        vmax = np.maximum(vmax, v)
        m_hat, v_hat = m / (1 - b1**t), (vmax if amsgrad else v) / (1 - b2**t)
        np.testing.assert_allclose(us[t - 1], m_hat / (np.sqrt(v_hat) + eps), rtol=1e-12)
    assert state["step"] == 6 and type(state["step"]) is int
    assert ("max_exp_avg_sq" in state) == amsgrad


def test_adam_first_step_is_the_sign(rng):
    """Bias correction makes m_hat = g and v_hat = g^2 at t=1, so the first step is g / (|g| + eps)."""
    g = rng.standard_normal(8)
    (u,), _ = run(T.scale_by_adam(eps=0.0), [g], np.zeros(8))
    np.testing.assert_allclose(u, np.sign(g), rtol=1e-12)


@pytest.mark.parametrize("centered", [False, True])
def test_scale_by_rms(rng, centered):
    alpha, eps = 0.9, 1e-8
    gs, w = [rng.standard_normal(5) for _ in range(5)], np.zeros(5)
    us, state = run(T.scale_by_rms(alpha, eps, centered), gs, w)
    s = a = np.zeros(5)
    for t, g in enumerate(gs):
        s, a = alpha * s + (1 - alpha) * g**2, alpha * a + (1 - alpha) * g
        np.testing.assert_allclose(us[t], g / (np.sqrt(s - a**2 if centered else s) + eps), rtol=1e-12)
    assert sorted(state) == (["grad_avg", "square_avg"] if centered else ["square_avg"])


def test_decoupled_vs_coupled_weight_decay(rng):
    """L2 before Adam is rescaled by Adam; placing the decay after Adam shrinks w by (1 - lr*lambda)."""
    lr, lam = 0.1, 0.5
    g, w = rng.standard_normal(4), rng.standard_normal(4)
    adam_u = run(T.scale_by_adam(), [g], w)[0][0]
    decoupled = T.chain(T.scale_by_adam(), T.add_decayed_weights(lam), T.scale_by_learning_rate(lr))
    (u,), _ = run(decoupled, [g], w)
    np.testing.assert_allclose(w + u, (1 - lr * lam) * w - lr * adam_u, rtol=1e-14)
    coupled = T.chain(T.add_decayed_weights(lam), T.scale_by_adam(), T.scale_by_learning_rate(lr))
    (u,), _ = run(coupled, [g], w)
    x = g + lam * w  # at t=1, Adam maps its input x to x / (|x| + eps)
    np.testing.assert_allclose(u, -lr * x / (np.abs(x) + 1e-8), rtol=1e-14)


def test_chain_merges_state_and_keeps_float32(rng):
    t = T.chain(T.scale(-1.0), T.add_decayed_weights(0.1), T.scale_by_rms(centered=True),
                T.trace(0.9, nesterov=True), T.scale_by_adam(amsgrad=True), T.scale_by_learning_rate(1e-2))
    w = rng.standard_normal((3, 3)).astype(np.float32)
    gs = [rng.standard_normal((3, 3)).astype(np.float32) for _ in range(3)]
    us, state = run(t, gs, w)
    assert set(state) == {"square_avg", "grad_avg", "momentum_buffer", "step", "exp_avg",
                          "exp_avg_sq", "max_exp_avg_sq"}
    assert all(u.dtype == np.float32 for u in us)
    assert all(v.dtype == np.float32 for v in state.values() if isinstance(v, np.ndarray))


def test_docstrings_cite_papers():
    for factory in (T.add_decayed_weights, T.trace, T.scale_by_adam, T.scale_by_rms, T.scale_by_learning_rate):
        assert "References:" in factory.__doc__
