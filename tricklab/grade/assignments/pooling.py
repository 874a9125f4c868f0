"""``maxpool2d``: MaxPool2d's forward (the largest entry of each window) and its backward (each
output's gradient to its window's arg-max), as torch.

On x (N, C, H, W) padded by p entries of -inf on each side (xp), windows k x k with stride s
(default k)::

    H' = floor((H + 2p - k) / s) + 1
    y[n, c, a, b] = max_{u, v < k} xp[n, c, s a + u, s b + v]
    dLoss/dx[n, c, i, j] = sum_{(a, b): the arg-max of window (a, b) is (i, j)} gy[n, c, a, b]

where windows overlap (s < k) the gradients of every window whose arg-max is (i, j) add up, and of
tied maxima the first in row-major window order takes the gradient (torch's rule). The known
mistakes' outputs are computed here from the same windows, so a hint appears only when the
student's numbers, or the output's shape, equal one of them.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ... import nn
from ..core import Assignment, Check, CheckFailure, expect_close

# (N, C, H, W, kernel, stride or None, padding)
DISJOINT = [(2, 3, 4, 6, 2, None, 0), (1, 2, 6, 6, 3, None, 0), (3, 1, 5, 7, 2, None, 0)]
OVERLAPPING = [(2, 2, 7, 6, 3, 2, 1), (1, 3, 5, 5, 3, 1, 1), (2, 1, 6, 8, 2, 1, 0)]
TIED = [(2, 2, 6, 6, 2, None, 0), (1, 3, 7, 5, 3, 2, 1)]

HINT_AVERAGE = "max pooling takes each window's largest entry; yours averages the window (average pooling)"
HINT_ZERO_PAD = ("padding adds -inf (never the maximum), as torch; yours pads with zeros, which win over "
                 "negative windows")


# --------------------------------------------------------------------------- windows, for the mistakes
def _stride(case) -> int:
    return case[4] if case[5] is None else case[5]


def windows(x: np.ndarray, case, fill: float = -np.inf) -> np.ndarray:
    """(N, C, H', W', k, k): the windows of x padded by ``fill``."""
    k, s, p = case[4], _stride(case), case[6]
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=fill)
    return sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s]


def scatter(per_window: np.ndarray, case, height: int, width: int) -> np.ndarray:
    """dLoss/dx from (N, C, H', W', k, k) gradients of the window entries: added up, padding cropped."""
    n, c, ho, wo, k, _ = per_window.shape
    s, p = _stride(case), case[6]
    gxp = np.zeros((n, c, height + 2 * p, width + 2 * p))
    for u in range(k):
        for v in range(k):
            gxp[:, :, u:u + s * (ho - 1) + 1:s, v:v + s * (wo - 1) + 1:s] += per_window[..., u, v]
    return gxp[:, :, p:p + height, p:p + width]


def first_maximum(win: np.ndarray) -> np.ndarray:
    """1 at each window's first maximum (row-major), 0 elsewhere, shape of ``win``."""
    flat = win.reshape(*win.shape[:4], -1)
    return (np.arange(flat.shape[-1]) == flat.argmax(axis=-1)[..., None]).reshape(win.shape)


def last_write_wins(x: np.ndarray, g: np.ndarray, case, by_offset: bool) -> np.ndarray:
    """dLoss/dx when each window assigns (=) its gradient to its arg-max instead of adding it, so of
    overlapping windows one gradient stays: the last window's in row-major order, or, when the code
    loops over the kernel offsets (u, v) instead, the window's whose arg-max lies at the last offset."""
    k, s, p = case[4], _stride(case), case[6]
    hit = first_maximum(windows(x, case)).astype(bool)  # (N, C, H', W', k, k)
    n, c, ho, wo = g.shape
    gxp = np.zeros((n, c, x.shape[2] + 2 * p, x.shape[3] + 2 * p))
    spread = np.broadcast_to(g[..., None, None], hit.shape)
    if by_offset:
        for u in range(k):
            for v in range(k):
                view = gxp[:, :, u:u + s * (ho - 1) + 1:s, v:v + s * (wo - 1) + 1:s]
                np.copyto(view, spread[..., u, v], where=hit[..., u, v])
    else:
        for a in range(ho):
            for b in range(wo):
                window = gxp[:, :, s * a:s * a + k, s * b:s * b + k]
                window[hit[:, :, a, b]] = spread[:, :, a, b][hit[:, :, a, b]]
    return gxp[:, :, p:p + x.shape[2], p:p + x.shape[3]]


def backward_mistakes(x: np.ndarray, g: np.ndarray, case) -> dict[str, np.ndarray]:
    k = case[4]
    win, spread = windows(x, case), g[..., None, None] * np.ones((k, k))
    every_max = win == win.max(axis=(4, 5), keepdims=True)
    h, w = x.shape[2:]
    return {"the gradient goes to the window's arg-max only; yours spreads it over the whole window like average "
            "pooling (g / k^2 to every entry)": scatter(spread / (k * k), case, h, w),
            "the gradient goes to the window's arg-max only; yours copies it to every entry of the window":
            scatter(spread, case, h, w),
            "of tied maxima only the first in the window (row-major, as torch) takes the gradient; yours gives it "
            "to every maximum": scatter(spread * every_max, case, h, w),
            "where windows overlap their gradients add up (+=) at a shared arg-max; yours overwrites them (the "
            "last window's stays)": last_write_wins(x, g, case, by_offset=False),
            "where windows overlap their gradients add up (+=) at a shared arg-max; yours overwrites them (the "
            "last kernel offset's stays)": last_write_wins(x, g, case, by_offset=True)}


# --------------------------------------------------------------------------- building the layers
def _build(make, case):
    k, s, p = case[4], case[5], case[6]
    kwargs = {} if s is None else {"stride": s}
    if p:
        kwargs["padding"] = p
    return make(k, **kwargs)


def _describe(case) -> str:
    n, c, h, w, k, s, p = case
    args = [str(k)] + ([f"stride={s}"] if s is not None else []) + ([f"padding={p}"] if p else [])
    return f"x ({n}, {c}, {h}, {w}), MaxPool2d({', '.join(args)})"


def _inputs(rng, case, tied=False):
    """x below zero (so zero padding shows), or small integers (many ties), and gy."""
    n, c, h, w, k, _, p = case
    s = _stride(case)
    x = rng.integers(-3, 0, (n, c, h, w)).astype(float) if tied else rng.standard_normal((n, c, h, w)) - 1.0
    size = [(d + 2 * p - k) // s + 1 for d in (h, w)]
    return x, rng.standard_normal((n, c, *size))


def expect_output_shape(y, case) -> None:
    n, c, h, w, k, _, p = case
    s = _stride(case)
    want = (n, c, *((d + 2 * p - k) // s + 1 for d in (h, w)))
    got = np.shape(y)
    if got == want:
        return
    mistakes = {"H' = floor((H + 2p - k) / s) + 1; yours leaves out the padding":
                (n, c, *((d - k) // s + 1 for d in (h, w))),
                "H' = floor((H + 2p - k) / s) + 1 rounds down; yours rounds up":
                (n, c, *(-(-(d + 2 * p - k) // s) + 1 for d in (h, w)))}
    if case[5] is None:
        mistakes["the stride defaults to kernel_size (as torch); yours slides the window by 1"] = \
            (n, c, *(d + 2 * p - k + 1 for d in (h, w)))
    hints = [hint for hint, shape in mistakes.items() if shape == got]
    hint = f"\n  hint: {hints[0]}" if hints else ""
    raise CheckFailure(f"forward output y: shape {got}, expected {want} (inputs: {_describe(case)}){hint}")


# --------------------------------------------------------------------------- checks
def _check_forward(sub, rng, cases, tied=False):
    for case in cases:
        mine, ref = _build(sub.make, case), _build(sub.ref, case)
        x, _ = _inputs(rng, case, tied)
        y = mine(x.copy())
        expect_output_shape(y, case)
        expect_close(y, ref(x), "forward output y", _describe(case),
                     mistakes={HINT_AVERAGE: windows(x, case, 0.0).mean(axis=(4, 5)),
                               HINT_ZERO_PAD: windows(x, case, 0.0).max(axis=(4, 5)) if case[6] else None})


def check_forward(sub, rng):
    _check_forward(sub, rng, DISJOINT)


def check_forward_overlapping(sub, rng):
    _check_forward(sub, rng, OVERLAPPING)


def _check_backward(sub, rng, cases, tied=False):
    for case in cases:
        mine, ref = _build(sub.make, case), _build(sub.ref, case)
        x, g = _inputs(rng, case, tied)
        mine(x.copy()), ref(x)
        expect_close(mine.backward(g.copy()), ref.backward(g), "backward's dLoss/dx", f"{_describe(case)}, "
                     f"grad {g.shape}" + (", integer inputs (ties)" if tied else ""),
                     mistakes=backward_mistakes(x, g, case))


def check_backward(sub, rng):
    _check_backward(sub, rng, DISJOINT)


def check_backward_overlapping(sub, rng):
    _check_backward(sub, rng, OVERLAPPING)


def check_ties(sub, rng):
    _check_forward(sub, rng, TIED, tied=True)
    _check_backward(sub, rng, TIED, tied=True)


ASSIGNMENTS = (
    Assignment("maxpool2d", "MaxPool2d(kernel_size, stride=None, padding=0): each window's maximum, and the "
               "gradient to its arg-max", nn.MaxPool2d, (
                   Check("forward: the maximum of each window (stride defaults to kernel_size)", 2, check_forward),
                   Check("forward with overlapping windows and -inf padding: H' = floor((H + 2p - k) / s) + 1", 2,
                         check_forward_overlapping),
                   Check("backward: each window's gradient to its arg-max", 3, check_backward),
                   Check("backward with overlapping windows: gradients at a shared arg-max add up", 2,
                         check_backward_overlapping),
                   Check("ties: the first maximum in the window (row-major) takes the gradient, as torch", 1,
                         check_ties),
               )),
)
