"""The compiled twins of the layers' elementwise passes (numba), used while the numba kernels are on.

Each public function here has the name, arguments and numbers of a plain NumPy function in the
layer's own module, where its equation is stated: ``relu``, ``relu_backward``,
``sigmoid_backward``, ``tanh_backward`` (activation.py), ``bernoulli_``, ``dropout``
(dropout.py), ``batchnorm_train``, ``batchnorm_eval``, ``batchnorm_backward``,
``batchnorm_running_`` (normalization.py), ``cross_entropy`` (loss.py), ``col2im_add_``
(conv.py). The recurrent steps
``lstm_cell_``, ``lstm_hidden_``, ``lstm_backward_``, ``zone_`` and ``rnn_backward_`` are the
per-step work of recurrent.py's ``_fused`` passes, whose plain twins are its per-step loops.
A layer calls these through ``_kernels.compiled()``; tests/nn/test_fast_path.py and
tests/nn/test_recurrent_fast.py check them against the plain passes.

A function fuses several NumPy passes into one loop (``*_loop``, compiled by numba on first use
and cached on disk) and needs no temporaries. The loops compute in the arrays' dtype: every scalar
is passed typed as the array's dtype, so float32 stays float32; only batch sums accumulate in
float64. Outputs are fresh arrays or buffers the caller passes in, never an array the caller
already holds. Importing this module imports numba.
"""

from __future__ import annotations

import numpy as np

from . import activation, normalization
from ._kernels import njit


def _flat(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1)


# =============================================================================== activations
@njit
def _relu_loop(x, y, zero):
    for i in range(x.shape[0]):
        v = x[i]
        y[i] = zero if v < zero else v  # NaN passes through, as in np.maximum


@njit
def _relu_backward_loop(g, y, gx, zero, one):
    for i in range(g.shape[0]):
        gx[i] = g[i] * (one if y[i] > zero else zero)


@njit
def _sigmoid_backward_loop(g, y, gx, one):
    for i in range(g.shape[0]):
        gx[i] = g[i] * y[i] * (one - y[i])


@njit
def _tanh_backward_loop(g, y, gx, one):
    for i in range(g.shape[0]):
        gx[i] = g[i] * (one - y[i] * y[i])


def relu(x, out=None):
    y = np.empty(x.shape, x.dtype) if out is None else out  # out may be x itself: each entry read, then written
    _relu_loop(_flat(x), y.reshape(-1), x.dtype.type(0))
    return y


def relu_backward(g, y):
    if g.shape != y.shape:  # broadcasting: leave it to NumPy
        return activation.relu_backward(g, y)
    gx = np.empty(g.shape, g.dtype)
    t = g.dtype.type
    _relu_backward_loop(_flat(g), _flat(y), gx.reshape(-1), t(0), t(1))
    return gx


def _output_backward(loop, plain, g, y):
    """Run a compiled f'(y)-from-output loop over flat copies; broadcasting shapes go to NumPy."""
    if g.shape != y.shape:
        return plain(g, y)
    gx = np.empty(g.shape, g.dtype)
    loop(_flat(g), _flat(y), gx.reshape(-1), g.dtype.type(1))
    return gx


def sigmoid_backward(g, y):
    return _output_backward(_sigmoid_backward_loop, activation.sigmoid_backward, g, y)


def tanh_backward(g, y):
    return _output_backward(_tanh_backward_loop, activation.tanh_backward, g, y)


# =============================================================================== dropout
@njit
def _bernoulli_loop(chunks, threshold, scale, zero, mask):
    for i in range(mask.shape[0]):
        mask[i] = scale if chunks[i] < threshold else zero


@njit
def _dropout_loop(x, chunks, threshold, scale, zero, mask, y):
    for i in range(x.shape[0]):
        mask[i] = scale if chunks[i] < threshold else zero
        y[i] = x[i] * mask[i]


def bernoulli_(chunks, threshold, scale, mask):
    t = mask.dtype.type
    _bernoulli_loop(chunks, np.uint64(threshold), t(scale), t(0), mask.reshape(-1))


def dropout(x, chunks, threshold, scale, mask):
    y = np.empty(x.shape, x.dtype)
    t = x.dtype.type
    _dropout_loop(_flat(x), chunks, np.uint64(threshold), t(scale), t(0), mask.reshape(-1), y.reshape(-1))
    return y


# =============================================================================== batch norm
@njit
def _batchnorm_statistics_loop(z, eps, mu, var, inv_std, one):
    B, n = z.shape
    acc = np.zeros(n)  # float64 sums
    for i in range(B):
        for j in range(n):
            acc[j] += z[i, j]
    for j in range(n):
        mu[j] = acc[j] / B
        acc[j] = 0.0
    for i in range(B):
        for j in range(n):
            d = z[i, j] - mu[j]
            acc[j] += d * d
    for j in range(n):
        var[j] = acc[j] / B
        inv_std[j] = one / np.sqrt(var[j] + eps)


@njit
def _batchnorm_eval_loop(z, mu, inv_std, gamma, beta, out):
    B, n = z.shape
    for i in range(B):
        for j in range(n):
            out[i, j] = (z[i, j] - mu[j]) * inv_std[j] * gamma[j] + beta[j]


@njit
def _batchnorm_backward_loop(gy, z, mu, inv_std, gamma, batch_stats, dgamma, dbeta, gz):
    B, n = gy.shape
    sum_g = np.zeros(n)  # float64 sums
    sum_gu = np.zeros(n)
    for i in range(B):
        for j in range(n):
            sum_g[j] += gy[i, j]
            sum_gu[j] += gy[i, j] * ((z[i, j] - mu[j]) * inv_std[j])
    scale = np.empty(n, gy.dtype)
    mean_g = np.empty(n, gy.dtype)
    mean_gu = np.empty(n, gy.dtype)
    for j in range(n):
        dgamma[j] += sum_gu[j]
        dbeta[j] += sum_g[j]
        scale[j] = gamma[j] * inv_std[j]
        mean_g[j] = sum_g[j] / B
        mean_gu[j] = sum_gu[j] / B
    if batch_stats:
        for i in range(B):
            for j in range(n):
                u = (z[i, j] - mu[j]) * inv_std[j]
                gz[i, j] = scale[j] * (gy[i, j] - mean_g[j] - u * mean_gu[j])
    else:
        for i in range(B):
            for j in range(n):
                gz[i, j] = scale[j] * gy[i, j]


@njit
def _batchnorm_running_loop(running_mean, running_var, mu, var, keep, factor, unbias):
    for j in range(running_mean.shape[0]):
        running_mean[j] = running_mean[j] * keep + factor * mu[j]
        running_var[j] = running_var[j] * keep + factor * (var[j] * unbias)


def _affine(gamma, beta, n, dtype):
    if gamma is None:
        return np.ones(n, dtype), np.zeros(n, dtype)
    return gamma, beta


def batchnorm_train(z, gamma, beta, eps):
    B, n = z.shape
    gamma, beta = _affine(gamma, beta, n, z.dtype)
    out = np.empty((B, n), z.dtype)
    mu, var, inv_std = (np.empty(n, z.dtype) for _ in range(3))
    t = z.dtype.type
    z = np.ascontiguousarray(z)
    _batchnorm_statistics_loop(z, t(eps), mu, var, inv_std, t(1))
    _batchnorm_eval_loop(z, mu, inv_std, gamma, beta, out)
    return out, mu, var, inv_std


def batchnorm_eval(z, mu, inv_std, gamma, beta, out=None):
    gamma, beta = _affine(gamma, beta, z.shape[1], z.dtype)
    out = np.empty(z.shape, z.dtype) if out is None else out
    _batchnorm_eval_loop(np.ascontiguousarray(z), mu, inv_std, gamma, beta, out)
    return out


def batchnorm_backward(gy, z, mu, inv_std, gamma, batch_stats, dgamma, dbeta):
    n = gy.shape[1]
    if dgamma is None:
        dgamma, dbeta = np.zeros(n, gy.dtype), np.zeros(n, gy.dtype)
    if gamma is None:
        gamma = np.ones(n, gy.dtype)
    gz = np.empty(gy.shape, gy.dtype)
    _batchnorm_backward_loop(np.ascontiguousarray(gy), np.ascontiguousarray(z), mu, inv_std, gamma, batch_stats,
                             dgamma, dbeta, gz)
    return gz


def batchnorm_running_(running_mean, running_var, mu, var, factor, batch):
    if not (running_mean.flags.c_contiguous and running_var.flags.c_contiguous):
        return normalization.batchnorm_running_(running_mean, running_var, mu, var, factor, batch)
    t = running_mean.dtype.type
    _batchnorm_running_loop(running_mean, running_var, mu, var, t(1 - factor), t(factor), t(batch / (batch - 1)))


# =============================================================================== cross entropy
@njit
def _cross_entropy_loop(z, d, logp):
    B, C = z.shape
    total = 0.0
    for t in range(B):
        m = z[t, 0]
        for k in range(1, C):
            m = max(m, z[t, k])
        s = 0.0
        for k in range(C):
            logp[t, k] = z[t, k] - m
            s += np.exp(logp[t, k])
        lse = np.log(s)
        for k in range(C):
            logp[t, k] -= lse
        total += logp[t, d[t]]
    return -total / B


def cross_entropy(z, d):
    logp = np.empty(z.shape, z.dtype)
    return float(_cross_entropy_loop(np.ascontiguousarray(z), np.ascontiguousarray(d), logp)), logp


# =============================================================================== recurrent cells
# One time step of recurrent.LSTM / recurrent.RNN around their matrix products, whose equations
# the layers' docstrings state; d is a step's zoneout (the 0/1 mask in training, z everywhere at
# eval) or None. The tanh of the LSTM stays NumPy's (SIMD; a compiled scalar tanh is about 80x
# slower): the layer passes t = tanh([a_i/2, a_f/2, a_g, a_o/2]) and tanh(c~) in, and these loops
# do the rest of a step in one pass each. The loops run row by row, one short loop per quantity
# with the zoneout branch outside it: few arrays per loop, which LLVM vectorizes (one loop over all
# of a row's work does not vectorize). The row helpers hold what several steps share.
@njit
def _zone_row(new, prev, d, out, one):
    # s = d s_{t-1} + (1 - d) s~  (out may be new itself: each entry read, then written)
    for j in range(out.shape[0]):
        out[j] = d[j] * prev[j] + (one - d[j]) * new[j]


@njit
def _unzoned_grad_row(g, d, zoned, out, one):
    # dLoss/ds~ = (1 - d) dLoss/ds: the gradient reaching the state the cell computed
    if zoned:
        for j in range(out.shape[0]):
            out[j] = (one - d[j]) * g[j]
    else:
        for j in range(out.shape[0]):
            out[j] = g[j]


@njit
def _skip_grad_row(g, d, zoned, g_next, has_next, out, zero):
    # d dLoss/ds + g_next: what reaches s_{t-1} past the cell (the caller adds da W_hh)
    if zoned and has_next:
        for j in range(out.shape[0]):
            out[j] = d[j] * g[j] + g_next[j]
    elif zoned:
        for j in range(out.shape[0]):
            out[j] = d[j] * g[j]
    elif has_next:
        for j in range(out.shape[0]):
            out[j] = g_next[j]
    else:
        for j in range(out.shape[0]):
            out[j] = zero


@njit
def _lstm_cell_loop(a, c_prev, d, zoned, c, c_tilde, half, one):
    # a holds t = tanh([a_i/2, a_f/2, a_g, a_o/2]); becomes [i, f, g, o], sigmoid(a) = (1 + tanh(a/2)) / 2
    B, H = c.shape
    for b in range(B):
        ai, af, ag, ao = a[b, :H], a[b, H:2 * H], a[b, 2 * H:3 * H], a[b, 3 * H:]
        cp, ct, cb = c_prev[b], c_tilde[b], c[b]
        for j in range(H):
            i = half * (one + ai[j])
            f = half * (one + af[j])
            ai[j] = i
            af[j] = f
            ao[j] = half * (one + ao[j])
            ct[j] = f * cp[j] + i * ag[j]  # c~ = f c_{t-1} + i g
        if zoned:
            _zone_row(ct, cp, d[b], cb, one)
        else:
            for j in range(H):
                cb[j] = ct[j]


@njit
def _lstm_hidden_loop(a, tanh_c, h_prev, d, zoned, h, one):
    B, H = h.shape
    for b in range(B):
        ao, tc, hb = a[b, 3 * H:], tanh_c[b], h[b]
        for j in range(H):
            hb[j] = ao[j] * tc[j]  # h~ = o tanh(c~)
        if zoned:
            _zone_row(hb, h_prev[b], d[b], hb, one)


@njit
def _lstm_backward_loop(gh, gc, a, tanh_c, c_prev, dh, zoned_h, dc, zoned_c, g_next, has_next, ga, gh_prev,
                        zero, one):
    # g^h~ = (1 - d^h) g^h,  g^c~ = (1 - d^c) g^c + g^h~ o (1 - tanh(c~)^2),  the four da's,
    # g^c <- g^c~ f + d^c g^c (dLoss/dc_{t-1}),  gh_prev <- d^h g^h + g_next (the caller adds da W_hh)
    B, H = gh.shape
    g_h, g_c = np.empty(H, gh.dtype), np.empty(H, gh.dtype)
    for b in range(B):
        i, f, g, o = a[b, :H], a[b, H:2 * H], a[b, 2 * H:3 * H], a[b, 3 * H:]
        tc, ghb, gcb, dcb = tanh_c[b], gh[b], gc[b], dc[b]
        _unzoned_grad_row(ghb, dh[b], zoned_h, g_h, one)
        _unzoned_grad_row(gcb, dcb, zoned_c, g_c, one)
        for j in range(H):
            g_c[j] = g_c[j] + g_h[j] * o[j] * (one - tc[j] * tc[j])
        da_i, da_f, da_g, da_o, cp = ga[b, :H], ga[b, H:2 * H], ga[b, 2 * H:3 * H], ga[b, 3 * H:], c_prev[b]
        for j in range(H):
            da_i[j] = g_c[j] * g[j] * i[j] * (one - i[j])
            da_g[j] = g_c[j] * i[j] * (one - g[j] * g[j])
        for j in range(H):
            da_f[j] = g_c[j] * cp[j] * f[j] * (one - f[j])
            da_o[j] = g_h[j] * tc[j] * o[j] * (one - o[j])
        if zoned_c:
            for j in range(H):
                gcb[j] = g_c[j] * f[j] + dcb[j] * gcb[j]
        else:
            for j in range(H):
                gcb[j] = g_c[j] * f[j]
        _skip_grad_row(ghb, dh[b], zoned_h, g_next[b], has_next, gh_prev[b], zero)


@njit
def _zone_loop(new, prev, d, out, one):
    for b in range(out.shape[0]):
        _zone_row(new[b], prev[b], d[b], out[b], one)


@njit
def _rnn_backward_loop(gh, h_tilde, d, zoned, relu, g_next, has_next, ga, gh_prev, zero, one):
    # g~ = (1 - d) g^h,  da = g~ (1 - h~^2) (tanh) or g~ 1[h~ > 0] (relu),  gh_prev <- d g^h + g_next
    B, H = gh.shape
    g_t = np.empty(H, gh.dtype)
    for b in range(B):
        y, gab = h_tilde[b], ga[b]
        _unzoned_grad_row(gh[b], d[b], zoned, g_t, one)
        if relu:
            for j in range(H):
                gab[j] = g_t[j] * (one if y[j] > zero else zero)
        else:
            for j in range(H):
                gab[j] = g_t[j] * (one - y[j] * y[j])
        _skip_grad_row(gh[b], d[b], zoned, g_next[b], has_next, gh_prev[b], zero)


def _check_step(gates, states, *arrays):
    """The loops index by the states' (B, H): refuse other shapes instead of reading past an array."""
    B, H = states.shape
    if gates is not None and gates.shape != (B, 4 * H) or any(x is not None and x.shape != (B, H) for x in arrays):
        shapes = [x.shape for x in (gates, *arrays) if x is not None]
        raise ValueError(f"recurrent step kernel: shapes {shapes} do not fit states of shape {(B, H)}")


def lstm_cell_(a, c_prev, d, c, c_tilde):
    """a: t = tanh([a_i/2, a_f/2, a_g, a_o/2]) in, [i, f, g, o] out; c <- zoned c~; c_tilde <- c~."""
    _check_step(a, c, c_prev, d, c_tilde)
    t = a.dtype.type
    _lstm_cell_loop(a, c_prev, c_prev if d is None else d, d is not None, c, c_tilde, t(0.5), t(1))


def lstm_hidden_(a, tanh_c, h_prev, d, h):
    """h <- zoned h~ = o tanh(c~), with a = [i, f, g, o]."""
    _check_step(a, h, tanh_c, h_prev, d)
    _lstm_hidden_loop(a, tanh_c, h_prev, h_prev if d is None else d, d is not None, h, a.dtype.type(1))


def lstm_backward_(gh, gc, a, tanh_c, c_prev, dh, dc, g_next, ga, gh_prev):
    """ga <- dLoss/da_t; gc <- dLoss/dc_{t-1} in place; gh_prev <- d^h gh + g_next (g_next may be None)."""
    _check_step(a, gh, gc, tanh_c, c_prev, dh, dc, g_next, gh_prev)
    _check_step(ga, gh)
    _lstm_backward_loop(gh, gc, a, tanh_c, c_prev, gh if dh is None else dh, dh is not None,
                        gc if dc is None else dc, dc is not None, gh if g_next is None else g_next,
                        g_next is not None, ga, gh_prev, gh.dtype.type(0), gh.dtype.type(1))


def zone_(new, prev, d, out):
    """out <- d prev + (1 - d) new."""
    _check_step(None, out, new, prev, d)
    _zone_loop(new, prev, d, out, out.dtype.type(1))


def rnn_backward_(gh, h_tilde, d, relu, g_next, ga, gh_prev):
    """ga <- dLoss/da_t; gh_prev <- d gh + g_next (g_next may be None)."""
    _check_step(None, gh, h_tilde, d, g_next, ga, gh_prev)
    t = gh.dtype.type
    _rnn_backward_loop(gh, h_tilde, gh if d is None else d, d is not None, bool(relu),
                       gh if g_next is None else g_next, g_next is not None, ga, gh_prev, t(0), t(1))


# =============================================================================== convolution
@njit
def _col2im_loop(gxp, d_cols, sh, sw, dh, dw):
    c_in, kh, kw, n_batch, ho, wo = d_cols.shape
    for n in range(n_batch):
        for c in range(c_in):
            for u in range(kh):
                for v in range(kw):
                    col = dw * v
                    for i in range(ho):
                        target = gxp[n, c, dh * u + sh * i]
                        source = d_cols[c, u, v, n, i]
                        if sw == 1:  # contiguous: the loop vectorizes
                            for j in range(wo):
                                target[col + j] += source[j]
                        else:
                            for j in range(wo):
                                target[col + sw * j] += source[j]


def col2im_add_(gxp, d_cols, stride, dilation):
    """conv.col2im_add_ as one pass over d_cols: each (n, c) plane of gxp stays in cache while every
    kernel offset adds into it."""
    _col2im_loop(gxp, d_cols, stride[0], stride[1], dilation[0], dilation[1])
