"""Matrix products that add into an existing array: c += a @ b as one BLAS call.

Linear's weight gradient dW += g^T x is ONE call of NumPy's own BLAS with beta = 1
(C <- A B + C): np.matmul can only write a new product, which then needs a work array and a
second pass over dW to add it. Used where NumPy's wheel names its BLAS symbols predictably
(scipy-openblas, 64-bit integers); anywhere else, and for odd layouts, matmul + add.
"""

from __future__ import annotations

import os

import numpy as np

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

