"""Which kernels run: the plain NumPy passes of each layer's own module, or their compiled twins.

Every elementwise pass of a layer (batch norm's statistics and closed-form backward, activation
derivatives, dropout masks, cross entropy, the recurrent cells' steps) is written once in plain
NumPy in the layer's module, next to the equation it computes. Some also have a compiled twin of
the same name, a loop compiled by numba (``tricklab/nn/_compiled.py``; the optimizers' fused
updates in ``tricklab/optim/fused.py``), which fuses several NumPy passes into one pass over
memory. A layer asks :func:`compiled` and calls the twin when it gets the module, its own plain
function when it gets None::

    fast = K.compiled()
    gz = (fast.batchnorm_backward if fast else batchnorm_backward)(gy, z, ...)

The backends are ``"numpy"`` (the plain passes, always available) and ``"numba"``.
``TRICKLAB_KERNELS=numpy`` or ``=numba`` chooses at import; by default the first kernel call picks
numba if it imports (numba refuses, for one, a NumPy newer than it knows) and NumPy otherwise.
:func:`use` and :func:`using` switch at run time, :func:`backend` tells. Both give the same
numbers up to float32 rounding (tests/nn/test_fast_path.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from contextlib import contextmanager

BACKENDS = ("numpy", "numba")
BACKEND = "auto"  # until the first kernel call (or backend()) resolves it
_NUMBA_IMPORTS: bool | None = None
LAYERS = "tricklab.nn._compiled"  # the layers' compiled twins
_LOADED: dict[str, object] = {}  # modules of compiled loops, imported on first use (importing numba takes 0.3 s)


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


def use(name: str) -> None:
    """Make ``name`` ("numpy" or "numba") the kernels every layer calls from now on."""
    global BACKEND
    if name not in BACKENDS:
        raise ValueError(f"kernel backend must be one of {BACKENDS}, got {name!r}")
    if name == "numba" and not numba_available():
        raise ImportError("kernel backend 'numba' needs the numba package: pip install numba "
                          "(or pip install tricklab[fast])")
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


def compiled(module: str = LAYERS):
    """The module of compiled loops ``module`` (imported on first use) while the numba kernels are
    in use, None while the NumPy ones are."""
    if BACKEND != "numba" and backend() != "numba":
        return None
    found = _LOADED.get(module)
    if found is None:
        found = _LOADED[module] = importlib.import_module(module)
    return found


def njit(loop):
    """``loop`` compiled by numba on its first call: serial (threads would fight BLAS's for the
    cores), cached on disk, ``error_model="numpy"`` (division by zero gives inf or NaN as in NumPy,
    which also lets the loops vectorize). Only modules of compiled loops call this, and only they
    import numba."""
    import numba

    return numba.njit(cache=True, nogil=True, error_model="numpy")(loop)


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


if _initial_backend() != "auto":
    use(_initial_backend())
