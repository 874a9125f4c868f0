"""``clip-grad-norm``: clip_grad_norm_(params, max_norm) rescales all gradients together.

    total = sqrt( sum_i ||g_i||^2 )                 (the norm of all entries of all parameters)
    g_i  <- g_i * min(1, max_norm / (total + 1e-6))  (torch.nn.utils.clip_grad_norm_'s scale)

and returns ``total``, the norm before clipping, as a float.
"""

from __future__ import annotations

import numpy as np

from ... import optim
from ...nn import Parameter
from ..core import Assignment, Check, expect, expect_close

SHAPES = [(3, 4), (4,), (2, 3, 2)]
EPS = 1e-6  # torch's, added to the total norm


def _params(rng, shapes, scale):
    """Two lists of Parameters (the student's and the reference's) holding the same gradients."""
    grads = [scale * rng.standard_normal(shape) for shape in shapes]
    mine, ref = [Parameter(np.zeros(s)) for s in shapes], [Parameter(np.zeros(s)) for s in shapes]
    for p, q, g in zip(mine, ref, grads):
        p.grad[...], q.grad[...] = g, g
    return mine, ref, grads


def _flat(arrays):
    return np.concatenate([np.ravel(a) for a in arrays])


def _total(grads):
    return float(np.sqrt(sum(np.sum(g * g) for g in grads)))


def _describe(grads, max_norm) -> str:
    return (f"gradients {', '.join(str(g.shape) for g in grads)}, max_norm {max_norm:.4g}, "
            f"total norm {_total(grads):.4g}")


def _clip(sub, rng, shapes, scale, max_norm_over_total):
    """Run the student's function and the reference on the same gradients; their returns and params."""
    mine, ref, grads = _params(rng, shapes, scale)
    max_norm = max_norm_over_total * _total(grads)
    return sub.obj(mine, max_norm), sub.reference(ref, max_norm), mine, ref, grads, max_norm


def per_parameter(grads, max_norm):
    return [g * min(1.0, max_norm / (np.linalg.norm(g) + EPS)) for g in grads]


def check_returns_total(sub, rng):
    for shapes, fraction in ((SHAPES, 0.1), (SHAPES[:1], 0.3), (SHAPES, 2.0)):
        returned, want, _, _, grads, max_norm = _clip(sub, rng, shapes, 10.0, fraction)
        expect(returned is not None, "clip_grad_norm_ returned None; it must return the total norm before "
                                     "clipping (a float)")
        total = _total(grads)
        expect_close(returned, want, "the returned total norm", _describe(grads, max_norm), {
            "return the norm before clipping; yours is the norm after clipping":
                total * min(1.0, max_norm / (total + EPS)) if fraction < 1 else None,
            "the total norm is sqrt(sum of every squared entry); yours is the sum of the parameters' norms":
                sum(np.linalg.norm(g) for g in grads) if len(grads) > 1 else None,
            "the total norm is sqrt(sum of every squared entry); yours leaves out the square root": total ** 2})


def check_clips_globally(sub, rng):
    # gradients large enough that the 1e-6 changes the scale by less than rounding (its own check follows)
    for shapes in (SHAPES[1:2], SHAPES):
        _, _, mine, ref, grads, max_norm = _clip(sub, rng, shapes, 100.0, rng.uniform(0.05, 0.5))
        per_param = {"norm clipped per parameter, not globally: every gradient is scaled by the same max_norm / "
                     "total, with total the norm over all parameters": _flat(per_parameter(grads, max_norm))}
        expect_close(_flat(p.grad for p in mine), _flat(p.grad for p in ref),
                     "the clipped gradients (all parameters, flattened)", _describe(grads, max_norm), per_param)


def check_epsilon(sub, rng):
    _, _, mine, ref, grads, max_norm = _clip(sub, rng, SHAPES[:1], 0.005, 0.25)
    total = _total(grads)
    expect_close(mine[0].grad, ref[0].grad, "the clipped gradient", _describe(grads, max_norm),
                 {"the scale is max_norm / (total + 1e-6), as torch's; yours is max_norm / total":
                      grads[0] * max_norm / total})


def check_unchanged_below(sub, rng):
    for shapes in (SHAPES, SHAPES[2:]):
        _, _, mine, _, grads, max_norm = _clip(sub, rng, shapes, 1.0, rng.uniform(1.5, 3.0))
        total = _total(grads)
        expect_close(_flat(p.grad for p in mine), _flat(grads), "the gradients (total norm below max_norm)",
                     _describe(grads, max_norm),
                     {"below max_norm the gradients stay as they are (the scale is min(1, max_norm / total)); yours "
                      "scales them up": _flat(grads) * max_norm / (total + EPS)})


ASSIGNMENTS = (
    Assignment("clip-grad-norm", "clip_grad_norm_(params, max_norm): scale all gradients by min(1, max_norm / "
               "(total + 1e-6)) with total their joint norm, and return total", optim.clip_grad_norm_, (
        Check("returns the total norm over all parameters, before clipping", 2, check_returns_total),
        Check("clips globally: every gradient scaled by max_norm / (total + 1e-6)", 3, check_clips_globally),
        Check("the scale's 1e-6: max_norm / (total + 1e-6), as torch's", 1, check_epsilon),
        Check("no change when the total norm is below max_norm", 1, check_unchanged_below),
    ), kind="function"),
)
