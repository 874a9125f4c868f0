"""The elementwise work of the layers and optimizers, in two interchangeable implementations.

A training step of an MLP is a few matrix products (BLAS, the floor) plus elementwise passes:
batch-norm statistics and normalization, activation derivatives, dropout masks, optimizer
updates. Each function below computes exactly one equation stated in the docstring of the layer
that calls it. It exists twice:

* ``numpy``: NumPy ufuncs, always available; the plain path.
* ``numba``: the same loops compiled by numba (serial, compiled on first use and cached on disk),
  which fuse several NumPy passes into one pass over memory and need no temporaries.

``TRICKLAB_KERNELS=numpy`` or ``=numba`` chooses at import; by default the first kernel call
picks numba if it imports (numba refuses, for one, a NumPy newer than it knows) and NumPy
otherwise. :func:`use` and :func:`using` switch at run time, :func:`backend` tells. Both give the same numbers up to float32
rounding (tests/nn/test_fast_path.py). The numba loops compute in the arrays' dtype: every
scalar is passed typed as the array's dtype, so float32 stays float32; only the batch sums
accumulate in float64.

Kernels never return an array that a caller already holds: outputs are fresh arrays or buffers
the caller passes in (the layers' own caches).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from contextlib import contextmanager

import numpy as np

BACKENDS = ("numpy", "numba")
_IMPLS: dict[str, dict[str, object]] = {"numpy": {}, "numba": {}}
BACKEND = "auto"  # until the first kernel call (or backend()) resolves it
_NUMBA_IMPORTS: bool | None = None


def _register(backend: str):
    def deco(fn):
        _IMPLS[backend][fn.__name__.lstrip("_").removeprefix(backend + "_")] = fn
        return fn
    return deco


def numba_available() -> bool:
    """Whether numba is installed and imports (the import is tried once, on the first question)."""
    global _NUMBA_IMPORTS
    if _NUMBA_IMPORTS is None:
        try:
            found = importlib.util.find_spec("numba") is not None
        except (ImportError, ValueError):  # e.g. sys.modules["numba"] = None
            found = False
        if found:
            try:
                import numba  # noqa: F401
            except Exception as err:  # noqa: BLE001 - any failure means: run without it
                warnings.warn(f"numba is installed but does not import ({err}); tricklab uses its NumPy kernels",
                              stacklevel=2)
                found = False
        _NUMBA_IMPORTS = found
    return _NUMBA_IMPORTS


def backend() -> str:
    """The kernels in use, "numba" or "numpy" (resolving the default choice if still open)."""
    if BACKEND == "auto":
        use("numba" if numba_available() else "numpy")
    return BACKEND


def _choose_on_first_call(name: str):
    def first_call(*args):
        backend()
        return globals()[name](*args)
    return first_call


def use(name: str) -> None:
    """Make ``name`` ("numpy" or "numba") the kernels every layer calls from now on."""
    global BACKEND
    if name not in BACKENDS:
        raise ValueError(f"kernel backend must be one of {BACKENDS}, got {name!r}")
    if name == "numba" and not numba_available():
        raise ImportError("kernel backend 'numba' needs the numba package: pip install numba "
                          "(or pip install tricklab[fast])")
    globals().update(_IMPLS[name])
    BACKEND = name


@contextmanager
def using(name: str):
    """Run a block with the ``name`` kernels, then restore the previous choice."""
    previous = backend()
    use(name)
    try:
        yield
    finally:
        use(previous)


class _Compiled:
    """A plain-Python loop compiled by numba on its first call, then called directly.

    Serial (threads would fight BLAS's for the cores); ``error_model="numpy"``: division by zero
    gives inf or NaN as in NumPy, which also lets the loops vectorize. ``name`` is the module
    global holding this object: the compiled function replaces it there, to skip this wrapper.
    """

    def __init__(self, loop, name: str):
        self.loop, self.name = loop, name

    def __call__(self, *args):
        import numba

        compiled = numba.njit(cache=True, nogil=True, error_model="numpy")(self.loop)
        globals()[self.name] = compiled
        return compiled(*args)


def _flat(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1)


# =============================================================================== matrix products
# Linear's weight gradient dW += g^T x is ONE call of NumPy's own BLAS with beta = 1
# (C <- A B + C): np.matmul can only write a new product, which then needs a work array and a
# second pass over dW to add it. Used where NumPy's wheel names its BLAS symbols predictably
# (scipy-openblas, 64-bit integers); anywhere else, and for odd layouts, matmul + add.
_CBLAS = {}
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _load_cblas():
    import ctypes
    import glob

    blas = np.__config__.CONFIG.get("Build Dependencies", {}).get("blas", {})
    if blas.get("name") != "scipy-openblas" or "USE64BITINT" not in str(blas.get("openblas configuration")):
        return {}
    root = os.path.dirname(np.__file__)
    found = sorted(glob.glob(os.path.join(root, os.pardir, "numpy.libs", "*scipy_openblas64*"))
                   + glob.glob(os.path.join(root, ".dylibs", "*scipy_openblas64*")))
    try:
        lib, out = ctypes.CDLL(found[0]), {}  # already loaded by NumPy: the same library, threads, limits
    except (IndexError, OSError):
        return {}
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    for dtype, letter, scalar in ((np.float32, "s", ctypes.c_float), (np.float64, "d", ctypes.c_double)):
        fn = getattr(lib, f"scipy_cblas_{letter}gemm64_", None)
        if fn is not None:
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, scalar, ptr, i64, ptr, i64,
                           scalar, ptr, i64]
            fn.restype = None
            out[np.dtype(dtype)] = fn
    return out


def _operand(a):
    """(transpose flag, leading dimension) of a 2-D array for row-major BLAS, or None."""
    if a.flags.c_contiguous and a.strides[1] == a.itemsize:
        return _NO_TRANS, max(a.shape[1], 1)
    if a.flags.f_contiguous and a.strides[0] == a.itemsize:
        return _TRANS, max(a.shape[0], 1)
    return None


def _blas_for(c, a, b):
    """(gemm, op_a, op_b) when c += a @ b can be one BLAS call (overlap aside), else None."""
    if not _CBLAS:
        _CBLAS.update(_load_cblas() or {None: None})
    fn = _CBLAS.get(c.dtype)
    op_a, op_b = _operand(a), _operand(b)
    if (fn is None or op_a is None or op_b is None or not c.flags.c_contiguous
            or a.shape[1] != b.shape[0] or c.shape != (a.shape[0], b.shape[1])
            or a.dtype != c.dtype or b.dtype != c.dtype or 0 in a.shape or 0 in b.shape):
        return None
    return fn, op_a, op_b


def gemm_accumulate(c, a, b):
    """c += a @ b in place (c: C-contiguous (M, N); a: (M, K); b: (K, N); one dtype)."""
    blas = _blas_for(c, a, b)
    if blas is None or np.may_share_memory(c, a) or np.may_share_memory(c, b):
        c += a @ b
        return
    fn, op_a, op_b = blas
    M, K = a.shape
    fn(_ROW_MAJOR, op_a[0], op_b[0], M, b.shape[1], K, 1.0, a.ctypes.data, op_a[1], b.ctypes.data, op_b[1],
       1.0, c.ctypes.data, max(c.shape[1], 1))


def gemm_accumulate_steps(c, a, b):
    """A function step(i, j) doing c[i] += a[j] @ b, for a loop over steps of the C-contiguous
    stacks c (n, M, N) and a (m, M, K) with one b (K, N): the recurrent layers' per-step products.

    gemm_accumulate's checks and the three addresses (about 2.5 us each through ``ndarray.ctypes``,
    as long as a small product) are taken once for the loop; a step is then one BLAS call."""
    n, m = len(c), len(a)
    blas = None
    if n and m and c.flags.c_contiguous and a.flags.c_contiguous:
        blas = _blas_for(c[0], a[0], b)
    if blas is None or np.may_share_memory(c, a) or np.may_share_memory(c, b):
        def step(i: int, j: int) -> None:
            _check_steps(i, j, n, m)
            gemm_accumulate(c[i], a[j], b)
        return step
    fn, op_a, op_b = blas
    (M, K), N = a.shape[1:], b.shape[1]
    sc, sa = c.strides[0], a.strides[0]
    pc, pa, pb = c.ctypes.data, a.ctypes.data, b.ctypes.data

    def step(i: int, j: int) -> None:
        _check_steps(i, j, n, m)
        fn(_ROW_MAJOR, op_a[0], op_b[0], M, N, K, 1.0, pa + j * sa, op_a[1], pb, op_b[1], 1.0, pc + i * sc, N)
    return step


def _check_steps(i: int, j: int, n: int, m: int) -> None:
    if not (0 <= i < n and 0 <= j < m):
        raise IndexError(f"gemm_accumulate_steps: step ({i}, {j}) outside the stacks of {n} and {m}")


# =============================================================================== activations
# ReLU  y = max(0, z), dLoss/dz = dLoss/dy * 1[y > 0]
@_register("numpy")
def _numpy_relu(x, out=None):
    return np.maximum(x, x.dtype.type(0), out=out)


@_register("numpy")
def _numpy_relu_backward(g, y):
    return g * (y > 0)


def _relu_loop(x, y, zero):
    for i in range(x.shape[0]):
        v = x[i]
        y[i] = zero if v < zero else v  # NaN passes through, as in np.maximum


def _relu_backward_loop(g, y, gx, zero, one):
    for i in range(g.shape[0]):
        gx[i] = g[i] * (one if y[i] > zero else zero)


_relu_k, _relu_backward_k = _Compiled(_relu_loop, "_relu_k"), _Compiled(_relu_backward_loop, "_relu_backward_k")


@_register("numba")
def _numba_relu(x, out=None):
    y = np.empty(x.shape, x.dtype) if out is None else out  # out may be x itself: each entry read, then written
    t = x.dtype.type
    _relu_k(_flat(x), y.reshape(-1), t(0))
    return y


@_register("numba")
def _numba_relu_backward(g, y):
    if g.shape != y.shape:  # broadcasting: leave it to NumPy
        return _numpy_relu_backward(g, y)
    gx = np.empty(g.shape, g.dtype)
    t = g.dtype.type
    _relu_backward_k(_flat(g), _flat(y), gx.reshape(-1), t(0), t(1))
    return gx


# sigmoid  dLoss/dz = dLoss/dy * y (1 - y);  tanh  dLoss/dz = dLoss/dy * (1 - y^2)
@_register("numpy")
def _numpy_sigmoid_backward(g, y):
    return g * y * (1 - y)


@_register("numpy")
def _numpy_tanh_backward(g, y):
    return g * (1 - y * y)


def _sigmoid_backward_loop(g, y, gx, one):
    for i in range(g.shape[0]):
        gx[i] = g[i] * y[i] * (one - y[i])


def _tanh_backward_loop(g, y, gx, one):
    for i in range(g.shape[0]):
        gx[i] = g[i] * (one - y[i] * y[i])


_sigmoid_backward_k = _Compiled(_sigmoid_backward_loop, "_sigmoid_backward_k")
_tanh_backward_k = _Compiled(_tanh_backward_loop, "_tanh_backward_k")


def _output_backward(kernel, fallback, g, y):
    """Run a compiled f'(y)-from-output kernel over flat copies; broadcasting shapes go to NumPy."""
    if g.shape != y.shape:
        return fallback(g, y)
    gx = np.empty(g.shape, g.dtype)
    kernel(_flat(g), _flat(y), gx.reshape(-1), g.dtype.type(1))
    return gx


@_register("numba")
def _numba_sigmoid_backward(g, y):
    return _output_backward(_sigmoid_backward_k, _numpy_sigmoid_backward, g, y)


@_register("numba")
def _numba_tanh_backward(g, y):
    return _output_backward(_tanh_backward_k, _numpy_tanh_backward, g, y)


# =============================================================================== dropout
# ``chunks`` holds one random integer r_i per unit (see dropout.keep_rule): unit i is kept when
# r_i < threshold, and then mask_i = scale, else mask_i = 0.  Dropout: y = x * mask.
@_register("numpy")
def _numpy_bernoulli_(chunks, threshold, scale, mask):
    flat = mask.reshape(-1)
    np.less(chunks, threshold, out=flat, casting="unsafe")
    if scale != 1:
        flat *= scale


@_register("numpy")
def _numpy_dropout(x, chunks, threshold, scale, mask):
    _numpy_bernoulli_(chunks, threshold, scale, mask)
    return x * mask


def _bernoulli_loop(chunks, threshold, scale, zero, mask):
    for i in range(mask.shape[0]):
        mask[i] = scale if chunks[i] < threshold else zero


def _dropout_loop(x, chunks, threshold, scale, zero, mask, y):
    for i in range(x.shape[0]):
        mask[i] = scale if chunks[i] < threshold else zero
        y[i] = x[i] * mask[i]


_bernoulli_k, _dropout_k = _Compiled(_bernoulli_loop, "_bernoulli_k"), _Compiled(_dropout_loop, "_dropout_k")


@_register("numba")
def _numba_bernoulli_(chunks, threshold, scale, mask):
    t = mask.dtype.type
    _bernoulli_k(chunks, np.uint64(threshold), t(scale), t(0), mask.reshape(-1))


@_register("numba")
def _numba_dropout(x, chunks, threshold, scale, mask):
    y = np.empty(x.shape, x.dtype)
    t = x.dtype.type
    _dropout_k(_flat(x), chunks, np.uint64(threshold), t(scale), t(0), mask.reshape(-1), y.reshape(-1))
    return y


# =============================================================================== batch norm
# train:  mu = mean_i z_i,  var = mean_i (z_i - mu)^2,  inv_std = 1 / sqrt(var + eps),
#         u = (z - mu) inv_std,  out = gamma u + beta
# eval:   the same with the population mu and inv_std = 1 / sqrt(running_var + eps)
# backward, g = dLoss/dout, u recomputed from z (cheaper than storing it):
#         dgamma += sum_i g_i u_i,  dbeta += sum_i g_i,
#         dz = gamma inv_std (g - mean_i g_i - u mean_i g_i u_i)   (batch statistics)
#         dz = gamma inv_std g                                      (population statistics)
def _affine(gamma, beta, n, dtype):
    if gamma is None:
        return np.ones(n, dtype), np.zeros(n, dtype)
    return gamma, beta


@_register("numpy")
def _numpy_batchnorm_train(z, gamma, beta, eps):
    mu = z.mean(axis=0, dtype=np.float64).astype(z.dtype)  # batch sums in float64, as torch
    d = z - mu
    d *= d
    var = d.mean(axis=0, dtype=np.float64).astype(z.dtype)
    inv_std = 1.0 / np.sqrt(var + z.dtype.type(eps))
    return _numpy_batchnorm_eval(z, mu, inv_std, gamma, beta), mu, var, inv_std


@_register("numpy")
def _numpy_batchnorm_eval(z, mu, inv_std, gamma, beta, out=None):
    u = np.subtract(z, mu, out=out)
    u *= inv_std
    if gamma is not None:
        u *= gamma
        u += beta
    return u


@_register("numpy")
def _numpy_batchnorm_backward(gy, z, mu, inv_std, gamma, batch_stats, dgamma, dbeta):
    u = (z - mu) * inv_std
    sum_g, sum_gu = gy.sum(axis=0, dtype=np.float64), (gy * u).sum(axis=0, dtype=np.float64)
    if dgamma is not None:
        dgamma += sum_gu
        dbeta += sum_g
    scale = gamma * inv_std if gamma is not None else inv_std
    if batch_stats:
        B = gy.shape[0]
        return scale * (gy - (sum_g / B).astype(gy.dtype) - u * (sum_gu / B).astype(gy.dtype))
    return scale * gy


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


def _batchnorm_eval_loop(z, mu, inv_std, gamma, beta, out):
    B, n = z.shape
    for i in range(B):
        for j in range(n):
            out[i, j] = (z[i, j] - mu[j]) * inv_std[j] * gamma[j] + beta[j]


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


# running statistics, r <- (1 - f) r + f s, with the unbiased variance B/(B-1) var_B for r_var
@_register("numpy")
def _numpy_batchnorm_running_(running_mean, running_var, mu, var, factor, batch):
    unbiased = var * (batch / (batch - 1))
    running_mean *= 1 - factor
    running_mean += factor * mu
    running_var *= 1 - factor
    running_var += factor * unbiased


def _batchnorm_running_loop(running_mean, running_var, mu, var, keep, factor, unbias):
    for j in range(running_mean.shape[0]):
        running_mean[j] = running_mean[j] * keep + factor * mu[j]
        running_var[j] = running_var[j] * keep + factor * (var[j] * unbias)


@_register("numba")
def _numba_batchnorm_running_(running_mean, running_var, mu, var, factor, batch):
    if not (running_mean.flags.c_contiguous and running_var.flags.c_contiguous):
        return _numpy_batchnorm_running_(running_mean, running_var, mu, var, factor, batch)
    t = running_mean.dtype.type
    _bn_running_k(running_mean, running_var, mu, var, t(1 - factor), t(factor), t(batch / (batch - 1)))


_bn_running_k = _Compiled(_batchnorm_running_loop, "_bn_running_k")
_bn_eval_k = _Compiled(_batchnorm_eval_loop, "_bn_eval_k")
_bn_statistics_k = _Compiled(_batchnorm_statistics_loop, "_bn_statistics_k")
_bn_backward_k = _Compiled(_batchnorm_backward_loop, "_bn_backward_k")


@_register("numba")
def _numba_batchnorm_train(z, gamma, beta, eps):
    B, n = z.shape
    gamma, beta = _affine(gamma, beta, n, z.dtype)
    out = np.empty((B, n), z.dtype)
    mu, var, inv_std = (np.empty(n, z.dtype) for _ in range(3))
    t = z.dtype.type
    z = np.ascontiguousarray(z)
    _bn_statistics_k(z, t(eps), mu, var, inv_std, t(1))
    _bn_eval_k(z, mu, inv_std, gamma, beta, out)
    return out, mu, var, inv_std


@_register("numba")
def _numba_batchnorm_eval(z, mu, inv_std, gamma, beta, out=None):
    gamma, beta = _affine(gamma, beta, z.shape[1], z.dtype)
    out = np.empty(z.shape, z.dtype) if out is None else out
    _bn_eval_k(np.ascontiguousarray(z), mu, inv_std, gamma, beta, out)
    return out


@_register("numba")
def _numba_batchnorm_backward(gy, z, mu, inv_std, gamma, batch_stats, dgamma, dbeta):
    n = gy.shape[1]
    if dgamma is None:
        dgamma, dbeta = np.zeros(n, gy.dtype), np.zeros(n, gy.dtype)
    if gamma is None:
        gamma = np.ones(n, gy.dtype)
    gz = np.empty(gy.shape, gy.dtype)
    _bn_backward_k(np.ascontiguousarray(gy), np.ascontiguousarray(z), mu, inv_std, gamma, batch_stats,
                   dgamma, dbeta, gz)
    return gz


# =============================================================================== cross entropy
# logp_t = z_t - max(z_t) - log sum_k exp(z_tk - max(z_t));  Loss = -(1/B) sum_t logp_t[d_t]
@_register("numpy")
def _numpy_cross_entropy(z, d):
    shifted = z - z.max(axis=-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return float(-logp[np.arange(z.shape[0]), d].mean()), logp


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


_cross_entropy_k = _Compiled(_cross_entropy_loop, "_cross_entropy_k")


@_register("numba")
def _numba_cross_entropy(z, d):
    logp = np.empty(z.shape, z.dtype)
    return float(_cross_entropy_k(np.ascontiguousarray(z), np.ascontiguousarray(d), logp)), logp


# =============================================================================== recurrent cells
# One time step of recurrent.LSTM / recurrent.RNN around their matrix products, whose equations
# the layers' docstrings state; d is a step's zoneout (the 0/1 mask in training, z everywhere at
# eval) or None. The tanh of the LSTM stays NumPy's (SIMD; a compiled scalar tanh is about 80x
# slower): the layer passes t = tanh([a_i/2, a_f/2, a_g, a_o/2]) and tanh(c~) in, and these loops
# do the rest of a step in one pass each. The numpy backend has none of them (None): the layers
# then run their plain per-step NumPy loops, the reference these kernels are tested against.
_IMPLS["numpy"]["lstm_cell_"] = None
_IMPLS["numpy"]["lstm_hidden_"] = None
_IMPLS["numpy"]["lstm_backward_"] = None
_IMPLS["numpy"]["zone_"] = None
_IMPLS["numpy"]["rnn_backward_"] = None


# The loops run row by row, one short loop per quantity with the zoneout branch outside it: few
# arrays per loop, which LLVM vectorizes (one loop over all of a row's work does not vectorize).
def _lstm_cell_loop(a, c_prev, d, zoned, c, c_tilde, half, one):
    # a holds t = tanh([a_i/2, a_f/2, a_g, a_o/2]); becomes [i, f, g, o], sigmoid(a) = (1 + tanh(a/2)) / 2
    B, H = c.shape
    for b in range(B):
        ai, af, ag, ao = a[b, :H], a[b, H:2 * H], a[b, 2 * H:3 * H], a[b, 3 * H:]
        cp, ct, cb, db = c_prev[b], c_tilde[b], c[b], d[b]
        for j in range(H):
            i = half * (one + ai[j])
            f = half * (one + af[j])
            ai[j] = i
            af[j] = f
            ao[j] = half * (one + ao[j])
            ct[j] = f * cp[j] + i * ag[j]  # c~ = f c_{t-1} + i g
        if zoned:
            for j in range(H):
                cb[j] = db[j] * cp[j] + (one - db[j]) * ct[j]
        else:
            for j in range(H):
                cb[j] = ct[j]


def _lstm_hidden_loop(a, tanh_c, h_prev, d, zoned, h, one):
    B, H = h.shape
    for b in range(B):
        ao, tc, hp, db, hb = a[b, 3 * H:], tanh_c[b], h_prev[b], d[b], h[b]
        if zoned:
            for j in range(H):
                hb[j] = db[j] * hp[j] + (one - db[j]) * (ao[j] * tc[j])
        else:
            for j in range(H):
                hb[j] = ao[j] * tc[j]  # h~ = o tanh(c~)


def _lstm_backward_loop(gh, gc, a, tanh_c, c_prev, dh, zoned_h, dc, zoned_c, g_next, has_next, ga, gh_prev,
                        zero, one):
    # g^h~ = (1 - d^h) g^h,  g^c~ = (1 - d^c) g^c + g^h~ o (1 - tanh(c~)^2),  the four da's,
    # g^c <- g^c~ f + d^c g^c (dLoss/dc_{t-1}),  gh_prev <- d^h g^h + g_next (the caller adds da W_hh)
    B, H = gh.shape
    g_h, g_c = np.empty(H, gh.dtype), np.empty(H, gh.dtype)
    for b in range(B):
        i, f, g, o = a[b, :H], a[b, H:2 * H], a[b, 2 * H:3 * H], a[b, 3 * H:]
        tc, ghb, gcb, dhb, dcb = tanh_c[b], gh[b], gc[b], dh[b], dc[b]
        if zoned_h:
            for j in range(H):
                g_h[j] = (one - dhb[j]) * ghb[j]
        else:
            for j in range(H):
                g_h[j] = ghb[j]
        if zoned_c:
            for j in range(H):
                g_c[j] = (one - dcb[j]) * gcb[j]
        else:
            for j in range(H):
                g_c[j] = gcb[j]
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
        ghp, gn = gh_prev[b], g_next[b]
        if zoned_h and has_next:
            for j in range(H):
                ghp[j] = dhb[j] * ghb[j] + gn[j]
        elif zoned_h:
            for j in range(H):
                ghp[j] = dhb[j] * ghb[j]
        elif has_next:
            for j in range(H):
                ghp[j] = gn[j]
        else:
            for j in range(H):
                ghp[j] = zero


def _zone_loop(new, prev, d, out, one):
    B, H = out.shape
    for b in range(B):
        nb, pb, db, ob = new[b], prev[b], d[b], out[b]
        for j in range(H):
            ob[j] = db[j] * pb[j] + (one - db[j]) * nb[j]


def _rnn_backward_loop(gh, h_tilde, d, zoned, relu, g_next, has_next, ga, gh_prev, zero, one):
    # g~ = (1 - d) g^h,  da = g~ (1 - h~^2) (tanh) or g~ 1[h~ > 0] (relu),  gh_prev <- d g^h + g_next
    B, H = gh.shape
    g_t = np.empty(H, gh.dtype)
    for b in range(B):
        ghb, db, y, gab = gh[b], d[b], h_tilde[b], ga[b]
        if zoned:
            for j in range(H):
                g_t[j] = (one - db[j]) * ghb[j]
        else:
            for j in range(H):
                g_t[j] = ghb[j]
        if relu:
            for j in range(H):
                gab[j] = g_t[j] * (one if y[j] > zero else zero)
        else:
            for j in range(H):
                gab[j] = g_t[j] * (one - y[j] * y[j])
        ghp, gn = gh_prev[b], g_next[b]
        if zoned and has_next:
            for j in range(H):
                ghp[j] = db[j] * ghb[j] + gn[j]
        elif zoned:
            for j in range(H):
                ghp[j] = db[j] * ghb[j]
        elif has_next:
            for j in range(H):
                ghp[j] = gn[j]
        else:
            for j in range(H):
                ghp[j] = zero


_lstm_cell_k = _Compiled(_lstm_cell_loop, "_lstm_cell_k")
_lstm_hidden_k = _Compiled(_lstm_hidden_loop, "_lstm_hidden_k")
_lstm_backward_k = _Compiled(_lstm_backward_loop, "_lstm_backward_k")
_zone_k, _rnn_backward_k = _Compiled(_zone_loop, "_zone_k"), _Compiled(_rnn_backward_loop, "_rnn_backward_k")


def _check_step(gates, states, *arrays):
    """The loops index by the states' (B, H): refuse other shapes instead of reading past an array."""
    B, H = states.shape
    if gates is not None and gates.shape != (B, 4 * H) or any(x is not None and x.shape != (B, H) for x in arrays):
        shapes = [x.shape for x in (gates, *arrays) if x is not None]
        raise ValueError(f"recurrent step kernel: shapes {shapes} do not fit states of shape {(B, H)}")


@_register("numba")
def _numba_lstm_cell_(a, c_prev, d, c, c_tilde):
    """a: t = tanh([a_i/2, a_f/2, a_g, a_o/2]) in, [i, f, g, o] out; c <- zoned c~; c_tilde <- c~."""
    _check_step(a, c, c_prev, d, c_tilde)
    t = a.dtype.type
    _lstm_cell_k(a, c_prev, c_prev if d is None else d, d is not None, c, c_tilde, t(0.5), t(1))


@_register("numba")
def _numba_lstm_hidden_(a, tanh_c, h_prev, d, h):
    """h <- zoned h~ = o tanh(c~), with a = [i, f, g, o]."""
    _check_step(a, h, tanh_c, h_prev, d)
    _lstm_hidden_k(a, tanh_c, h_prev, h_prev if d is None else d, d is not None, h, a.dtype.type(1))


@_register("numba")
def _numba_lstm_backward_(gh, gc, a, tanh_c, c_prev, dh, dc, g_next, ga, gh_prev):
    """ga <- dLoss/da_t; gc <- dLoss/dc_{t-1} in place; gh_prev <- d^h gh + g_next (g_next may be None)."""
    _check_step(a, gh, gc, tanh_c, c_prev, dh, dc, g_next, gh_prev)
    _check_step(ga, gh)
    _lstm_backward_k(gh, gc, a, tanh_c, c_prev, gh if dh is None else dh, dh is not None, gc if dc is None else dc,
                     dc is not None, gh if g_next is None else g_next, g_next is not None, ga, gh_prev,
                     gh.dtype.type(0), gh.dtype.type(1))


@_register("numba")
def _numba_zone_(new, prev, d, out):
    """out <- d prev + (1 - d) new."""
    _check_step(None, out, new, prev, d)
    _zone_k(new, prev, d, out, out.dtype.type(1))


@_register("numba")
def _numba_rnn_backward_(gh, h_tilde, d, relu, g_next, ga, gh_prev):
    """ga <- dLoss/da_t; gh_prev <- d gh + g_next (g_next may be None)."""
    _check_step(None, gh, h_tilde, d, g_next, ga, gh_prev)
    t = gh.dtype.type
    _rnn_backward_k(gh, h_tilde, gh if d is None else d, d is not None, bool(relu), gh if g_next is None else g_next,
                    g_next is not None, ga, gh_prev, t(0), t(1))


# =============================================================================== optimizers
# One pass over a parameter for the whole chain of optim/transforms.py and w += u. NumPy runs
# the chain itself (these are None), so only the numba backend registers them.
_IMPLS["numpy"]["sgd_"] = None
_IMPLS["numpy"]["adam_"] = None


def _sgd_loop(w, g, buf, lr, momentum, one_minus_dampening, weight_decay, nesterov, maximize, first):
    for i in range(w.shape[0]):
        gi = -g[i] if maximize else g[i]  # maximize: ascend
        gi = gi + weight_decay * w[i]  # add_decayed_weights (weight_decay may be 0)
        if momentum != 0:  # trace: b = g (first step) else mu b + (1 - dampening) g
            b = gi if first else momentum * buf[i] + one_minus_dampening * gi
            buf[i] = b
            gi = gi + momentum * b if nesterov else b
        w[i] = w[i] - lr * gi  # scale_by_learning_rate, then w += u


def _adam_loop(w, g, m, v, vmax, lr, b1c, b2, b2c, eps, weight_decay, decoupled, amsgrad, maximize,
               bias1, bias2_sqrt):
    for i in range(w.shape[0]):
        gi = -g[i] if maximize else g[i]
        if not decoupled:
            gi = gi + weight_decay * w[i]  # L2: decay before the moments
        m[i] = m[i] + b1c * (gi - m[i])  # m = b1 m + (1 - b1) g
        v[i] = b2 * v[i] + b2c * gi * gi  # v = b2 v + (1 - b2) g^2
        vi = v[i]
        if amsgrad:
            vmax[i] = max(vmax[i], vi)
            vi = vmax[i]
        u = (m[i] / bias1) / (np.sqrt(vi) / bias2_sqrt + eps)
        if decoupled:
            u = u + weight_decay * w[i]  # AdamW: decay bypasses the moments
        w[i] = w[i] - lr * u


_sgd_k, _adam_k = _Compiled(_sgd_loop, "_sgd_k"), _Compiled(_adam_loop, "_adam_k")


@_register("numba")
def _numba_sgd_(w, g, buf, lr, momentum, dampening, weight_decay, nesterov, maximize, first):
    t = w.dtype.type
    _sgd_k(w.reshape(-1), g.reshape(-1), (w if buf is None else buf).reshape(-1), t(lr), t(momentum),
           t(1.0 - dampening), t(weight_decay), bool(nesterov), bool(maximize), bool(first))


@_register("numba")
def _numba_adam_(w, g, m, v, vmax, lr, b1, b2, eps, weight_decay, decoupled, amsgrad, maximize, step):
    t = w.dtype.type
    _adam_k(w.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), (v if vmax is None else vmax).reshape(-1),
            t(lr), t(1.0 - b1), t(b2), t(1.0 - b2), t(eps), t(weight_decay), bool(decoupled), bool(amsgrad),
            bool(maximize), t(1.0 - b1**step), t((1.0 - b2**step) ** 0.5))


# =============================================================================== selection
def _initial_backend() -> str:
    """TRICKLAB_KERNELS: "numpy", "numba" or unset/"auto" (decided at the first kernel call)."""
    wanted = os.environ.get("TRICKLAB_KERNELS", "").strip().lower()
    if wanted in ("", "auto"):
        return "auto"
    if wanted not in BACKENDS:
        warnings.warn(f"TRICKLAB_KERNELS={wanted!r} is not one of {BACKENDS}; using numpy", stacklevel=2)
        return "numpy"
    if wanted == "numba" and not numba_available():
        warnings.warn("TRICKLAB_KERNELS=numba but numba is not available; using numpy", stacklevel=2)
        return "numpy"
    return wanted


if _initial_backend() == "auto":  # importing numba costs a third of a second: only when used
    globals().update({name: _choose_on_first_call(name) for name in _IMPLS["numpy"]})
else:
    use(_initial_backend())
