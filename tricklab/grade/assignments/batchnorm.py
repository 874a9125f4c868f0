"""``batchnorm`` and ``batchnorm-units``: BatchNorm1d's training forward, the lecture's closed-form
backward, the running statistics and inference.

Per unit, over a minibatch z_1..z_B (the lecture's notation)::

    mu_B = (1/B) sum_i z_i,   var_B = (1/B) sum_i (z_i - mu_B)^2,   u_i = (z_i - mu_B) / sqrt(var_B + eps)
    zhat_i = gamma u_i + beta
    dLoss/dz_i = (1/sqrt(var_B + eps)) (g_i - mean_j g_j - u_i mean_j g_j u_j),   g_i = gamma dLoss/dzhat_i
    running <- (1 - momentum) running + momentum s,   s = mu_B, or B/(B-1) var_B (unbiased)

``momentum=None`` makes the n-th batch's weight 1/n: the cumulative average, which is the lecture's
population statistics mu_BN = mean of mu_B, var_BN = B/(B-1) mean of var_B. The known mistakes'
outputs are computed here from the same inputs, so a hint appears only when the student's numbers
equal one of them.
"""

from __future__ import annotations

import numpy as np

from ... import nn
from ..core import Assignment, Check, expect, expect_close

EPS = 1e-5  # the reference's default, which the student's default must match
SHAPES = [(2, 3), (5, 4), (8, 2)]  # (batch, num_features); training needs batch >= 2
EVAL_BATCHES = (3, 1)  # inference takes any batch, 1 included
UNIT_SHAPES = [(2, 4, [1, 3]), (5, 5, [0, 2, 3]), (3, 3, [1])]  # (batch, num_features, units)

HINT_BIASED = "your running variance is the biased one: the lecture's rule multiplies by B/(B-1)"
HINT_SWAPPED = ("momentum: running = (1 - momentum) running + momentum batch (torch's convention), "
                "yours swaps them")
HINT_EVAL = "eval mode must use the running statistics, not the batch's"


# --------------------------------------------------------------------------- the equations, for the mistakes
def _statistics(z):
    """(mu_B, var_B biased, u) of a (batch, units) array."""
    mu, var = z.mean(axis=0), z.var(axis=0)
    return mu, var, (z - mu) / np.sqrt(var + EPS)


def _input_gradient(z, gamma, g, mean_term=True, var_term=True):
    """dLoss/dz = (1/sqrt(var_B+eps)) (g_u - mean g_u - u mean(g_u u)), g_u = gamma g; a term left out on request."""
    _, var, u = _statistics(z)
    gu = gamma * g
    dz = gu.copy()
    if mean_term:
        dz -= gu.mean(axis=0)
    if var_term:
        dz -= u * (gu * u).mean(axis=0)
    return dz / np.sqrt(var + EPS)


def _running(start, batches, momentum, unbiased=True, swapped=False):
    """[(running_mean, running_var) after each batch] by the update rule, or by a mistaken one."""
    mean, var = (s.copy() for s in start)
    out = []
    for n, z in enumerate(batches, start=1):
        f = 1.0 / n if momentum is None else momentum
        keep, take = (f, 1 - f) if swapped else (1 - f, f)
        s = z.var(axis=0) * (len(z) / (len(z) - 1) if unbiased else 1.0)
        mean, var = keep * mean + take * z.mean(axis=0), keep * var + take * s
        out.append((mean, var))
    return out


# --------------------------------------------------------------------------- building the layers
def _inputs(rng, shape):
    """Inputs off zero mean and unit variance, so using the wrong statistics shows."""
    return 1.5 + 2.0 * rng.standard_normal(shape)


def _pair(sub, rng, n, **kwargs):
    """The student's layer and the reference, with the same random gamma and beta."""
    mine, ref = sub.make(n, **kwargs), sub.ref(n, **kwargs)
    k = len(ref.weight.data)
    mine.weight.data[...] = 1.0 + 0.5 * rng.standard_normal(k)
    mine.bias.data[...] = rng.standard_normal(k)
    ref.weight.data[...], ref.bias.data[...] = mine.weight.data, mine.bias.data
    return mine, ref


def _set_running(rng, *layers):
    """Give every layer the same random running statistics (in place); returns them."""
    k = len(layers[-1].running_mean)
    mean, var = rng.standard_normal(k), rng.uniform(0.5, 3.0, k)
    for layer in layers:
        layer.running_mean[...], layer.running_var[...] = mean, var
    return mean, var


def _zero_grads(*layers):
    for layer in layers:
        layer.weight.grad[...] = 0.0
        layer.bias.grad[...] = 0.0


def _passthrough(x, units, selected):
    """The full (batch, num_features) array: ``selected`` in the units' columns, x elsewhere."""
    y = x.copy()
    y[:, units] = selected
    return y


# --------------------------------------------------------------------------- batchnorm
def check_parameters(sub, rng):
    for _, n in SHAPES:
        layer = sub.make(n)
        for name, value in (("weight", 1.0), ("bias", 0.0)):
            p = getattr(layer, name, None)
            expect(p is not None and hasattr(p, "data") and hasattr(p, "grad"),
                   f"BatchNorm1d({n}).{name} must be a Parameter (with .data and .grad)")
            expect(p.data.shape == (n,), f"BatchNorm1d({n}).{name} has shape {p.data.shape}, expected ({n},)")
            expect(np.all(p.data == value), f"BatchNorm1d({n}).{name} must start at {value:g} (as torch)")
        for name, value in (("running_mean", 0.0), ("running_var", 1.0)):
            r = np.asarray(getattr(layer, name, None))
            expect(r.shape == (n,), f"BatchNorm1d({n}).{name} has shape {r.shape}, expected ({n},)")
            expect(np.all(r == value), f"BatchNorm1d({n}).{name} must start at {value:g} (as torch)")


def check_forward(sub, rng):
    for batch, n in SHAPES:
        mine, ref = _pair(sub, rng, n)
        x = _inputs(rng, (batch, n))
        mu, var, _ = _statistics(x)
        unbiased = (x - mu) / np.sqrt(var * batch / (batch - 1) + EPS)
        expect_close(mine(x.copy()), ref(x), "training forward output", f"x {x.shape}",
                     mistakes={"the forward pass normalizes by the batch's own variance (1/B, biased); yours "
                               "uses the unbiased one": unbiased * mine.weight.data + mine.bias.data,
                               "the output is gamma u + beta; yours leaves out gamma and beta":
                               (x - mu) / np.sqrt(var + EPS)})


def check_input_gradient(sub, rng):
    for batch, n in SHAPES:
        mine, ref = _pair(sub, rng, n)
        x, g = _inputs(rng, (batch, n)), rng.standard_normal((batch, n))
        mine(x.copy()), ref(x)
        gamma = mine.weight.data.copy()
        expect_close(mine.backward(g.copy()), ref.backward(g), "backward's dLoss/dx", f"x {x.shape}, grad {g.shape}",
                     mistakes={"dx misses the term through the batch mean":
                               _input_gradient(x, gamma, g, mean_term=False),
                               "dx misses the term through the batch variance":
                               _input_gradient(x, gamma, g, var_term=False),
                               "dx misses the terms through the batch mean and the batch variance (both depend on "
                               "every z_i)": _input_gradient(x, gamma, g, mean_term=False, var_term=False),
                               "dLoss/du = gamma dLoss/dzhat: yours leaves out gamma": _input_gradient(x, 1.0, g)})


def check_parameter_gradients(sub, rng):
    for batch, n in SHAPES:
        mine, ref = _pair(sub, rng, n)
        x, g = _inputs(rng, (batch, n)), rng.standard_normal((batch, n))
        _zero_grads(mine, ref)
        mine(x.copy()), ref(x)
        mine.backward(g.copy()), ref.backward(g)
        shapes = f"x {x.shape}, grad {g.shape}"
        _, _, u = _statistics(x)
        expect_close(mine.weight.grad, ref.weight.grad, "weight.grad (dLoss/dgamma)", shapes,
                     mistakes={"dLoss/dgamma = sum_i g_i u_i uses the normalized u, not the input z":
                               (g * x).sum(axis=0),
                               "dLoss/dgamma sums over the batch; yours is the mean": (g * u).mean(axis=0)})
        expect_close(mine.bias.grad, ref.bias.grad, "bias.grad (dLoss/dbeta)", shapes,
                     mistakes={"dLoss/dbeta sums g over the batch; yours is the mean": g.mean(axis=0)})


def check_gradients_accumulate(sub, rng):
    batch, n = SHAPES[1]
    mine, ref = _pair(sub, rng, n)
    _zero_grads(mine, ref)
    for _ in range(2):
        x, g = _inputs(rng, (batch, n)), rng.standard_normal((batch, n))
        mine(x.copy()), ref(x)
        mine.backward(g.copy()), ref.backward(g)
    _, _, u = _statistics(x)
    expect_close(mine.weight.grad, ref.weight.grad, "weight.grad after two backward passes",
                 f"two batches of x {x.shape}",
                 mistakes={"backward must add into weight.grad (+=), not overwrite it": (g * u).sum(axis=0)})


def _expect_running(mine, ref, want_mistakes, what, shapes):
    """Compare running_mean and running_var; ``want_mistakes``: {hint: (mean, var)} of the mistakes."""
    expect_close(mine.running_mean, ref.running_mean, f"running_mean {what}", shapes,
                 mistakes={hint: m for hint, (m, _) in want_mistakes.items()})
    expect_close(mine.running_var, ref.running_var, f"running_var {what}", shapes,
                 mistakes={hint: v for hint, (_, v) in want_mistakes.items()})


def check_running_statistics(sub, rng):
    for momentum, sizes in ((0.1, (2, 5, 3)), (0.3, (4, 2))):
        n = 3
        mine, ref = _pair(sub, rng, n, momentum=momentum)
        start = _set_running(rng, mine, ref)
        batches = [_inputs(rng, (b, n)) for b in sizes]
        biased = _running(start, batches, momentum, unbiased=False)
        swapped = _running(start, batches, momentum, swapped=True)
        for i, x in enumerate(batches):
            mine(x.copy()), ref(x)
            _expect_running(mine, ref, {HINT_BIASED: biased[i], HINT_SWAPPED: swapped[i]},
                            f"after training batch {i + 1} (momentum={momentum})",
                            f"batches of sizes {sizes[:i + 1]}, {n} features")


def check_cumulative_average(sub, rng):
    for sizes in ((4, 4, 4), (2, 6, 3)):
        n = 3
        mine, ref = _pair(sub, rng, n, momentum=None)
        start = _set_running(rng, mine, ref)
        batches = [_inputs(rng, (b, n)) for b in sizes]
        biased = _running(start, batches, None, unbiased=False)
        fixed = _running(start, batches, 0.1)
        for i, x in enumerate(batches):
            mine(x.copy()), ref(x)
            _expect_running(mine, ref, {HINT_BIASED: biased[i],
                                        "momentum=None is the cumulative average: the n-th batch weighs 1/n "
                                        "(torch's num_batches_tracked), not a fixed 0.1": fixed[i]},
                            f"after training batch {i + 1} (momentum=None)",
                            f"batches of sizes {sizes[:i + 1]}, {n} features")
        if len(set(sizes)) == 1:  # the lecture's rule: mu_BN = mean of mu_B, var_BN = B/(B-1) mean of var_B
            B = sizes[0]
            expect_close(mine.running_mean, np.mean([z.mean(axis=0) for z in batches], axis=0),
                         "running_mean against the lecture's mu_BN", f"{len(sizes)} batches of {B}")
            expect_close(mine.running_var, B / (B - 1) * np.mean([z.var(axis=0) for z in batches], axis=0),
                         "running_var against the lecture's var_BN", f"{len(sizes)} batches of {B}",
                         mistakes={HINT_BIASED: biased[-1][1]})


def check_eval(sub, rng):
    n = 4
    mine, ref = _pair(sub, rng, n)
    mean, var = _set_running(rng, mine, ref)
    mine.eval(), ref.eval()
    gamma, beta = mine.weight.data.copy(), mine.bias.data.copy()
    for batch in EVAL_BATCHES:
        x = _inputs(rng, (batch, n))
        _, _, u = _statistics(x)
        expect_close(mine(x.copy()), ref(x), "eval-mode output", f"x {x.shape}, running statistics set",
                     mistakes={HINT_EVAL: gamma * u + beta})
        expect_close(mine.running_mean, mean, "running_mean after an eval-mode forward", f"x {x.shape}",
                     mistakes={"eval mode must not update the running statistics": 0.9 * mean + 0.1 * x.mean(axis=0)})
        expect_close(mine.running_var, var, "running_var after an eval-mode forward", f"x {x.shape}")


def check_batch_of_one_refused(sub, rng):
    n = 3
    layer = sub.make(n)
    y = layer(_inputs(rng, (2, n)))
    expect(np.shape(y) == (2, n), f"training forward on x (2, {n}) returned shape {np.shape(y)}, expected (2, {n})")
    before = np.array(layer.running_mean, copy=True), np.array(layer.running_var, copy=True)
    try:
        layer(_inputs(rng, (1, n)))
    except ValueError:
        pass
    else:
        expect(False, f"a training forward on x (1, {n}) must raise ValueError (as torch): one example has no "
                      "batch variance, and B/(B-1) divides by zero")
    expect(np.array_equal(layer.running_mean, before[0]) and np.array_equal(layer.running_var, before[1]),
           "a refused batch of 1 changed the running statistics: refuse it before updating them")


# --------------------------------------------------------------------------- batchnorm-units
def check_units_parameters(sub, rng):
    for _, n, units in UNIT_SHAPES:
        layer = sub.make(n, units=units)
        for name in ("weight", "bias"):
            p = getattr(layer, name, None)
            expect(p is not None and hasattr(p, "data") and hasattr(p, "grad"),
                   f"BatchNorm1d({n}, units={units}).{name} must be a Parameter (with .data and .grad)")
            expect(p.data.shape == (len(units),), f"BatchNorm1d({n}, units={units}).{name} has shape "
                   f"{p.data.shape}, expected ({len(units)},): one entry per selected unit")
        for name in ("running_mean", "running_var"):
            r = np.asarray(getattr(layer, name, None))
            expect(r.shape == (len(units),), f"BatchNorm1d({n}, units={units}).{name} has shape {r.shape}, "
                   f"expected ({len(units)},): one entry per selected unit")


def check_units_forward(sub, rng):
    for batch, n, units in UNIT_SHAPES:
        mine, ref = _pair(sub, rng, n, units=units)
        x = _inputs(rng, (batch, n))
        _, _, u = _statistics(x[:, units])
        selected = mine.weight.data * u + mine.bias.data
        _, _, u_all = _statistics(x)
        expect_close(mine(x.copy()), ref(x), "training forward output", f"x {x.shape}, units {units}",
                     mistakes={"the units not selected must pass through unchanged; yours are zero":
                               _passthrough(np.zeros_like(x), units, selected),
                               "only the selected units are normalized; yours normalizes the others too":
                               _passthrough(u_all, units, selected)})


def check_units_backward(sub, rng):
    for batch, n, units in UNIT_SHAPES:
        mine, ref = _pair(sub, rng, n, units=units)
        x, g = _inputs(rng, (batch, n)), rng.standard_normal((batch, n))
        _zero_grads(mine, ref)
        mine(x.copy()), ref(x)
        gamma = mine.weight.data.copy()
        shapes = f"x {x.shape}, grad {g.shape}, units {units}"
        selected = _input_gradient(x[:, units], gamma, g[:, units])
        expect_close(mine.backward(g.copy()), ref.backward(g), "backward's dLoss/dx", shapes,
                     mistakes={"the gradient of the units not selected passes through unchanged (dLoss/dx = "
                               "dLoss/dy there); yours is zero": _passthrough(np.zeros_like(g), units, selected)})
        expect_close(mine.weight.grad, ref.weight.grad, "weight.grad (dLoss/dgamma)", shapes)
        expect_close(mine.bias.grad, ref.bias.grad, "bias.grad (dLoss/dbeta)", shapes)


def check_units_running_and_eval(sub, rng):
    batch_sizes, n, units = (4, 2), 5, [0, 2, 3]
    mine, ref = _pair(sub, rng, n, units=units)
    start = _set_running(rng, mine, ref)
    batches = [_inputs(rng, (b, n)) for b in batch_sizes]
    selected = [z[:, units] for z in batches]
    biased, swapped = _running(start, selected, 0.1, unbiased=False), _running(start, selected, 0.1, swapped=True)
    for i, x in enumerate(batches):
        mine(x.copy()), ref(x)
        _expect_running(mine, ref, {HINT_BIASED: biased[i], HINT_SWAPPED: swapped[i]}, f"after training batch {i + 1}",
                        f"batches of sizes {batch_sizes[:i + 1]}, units {units}")
    mine.eval(), ref.eval()
    for batch in EVAL_BATCHES:
        x = _inputs(rng, (batch, n))
        _, _, u = _statistics(x[:, units])
        expect_close(mine(x.copy()), ref(x), "eval-mode output", f"x {x.shape}, units {units}",
                     mistakes={HINT_EVAL: _passthrough(x, units, mine.weight.data * u + mine.bias.data)})


ASSIGNMENTS = (
    Assignment("batchnorm", "BatchNorm1d(num_features): batch normalization, its closed-form backward, "
               "the running statistics and inference", nn.BatchNorm1d, (
                   Check("weight, bias start at 1, 0; running_mean, running_var at 0, 1", 1, check_parameters),
                   Check("training forward: gamma (z - mu_B) / sqrt(var_B + eps) + beta", 2, check_forward),
                   Check("backward: the lecture's closed-form dLoss/dz (through mu_B and var_B)", 3,
                         check_input_gradient),
                   Check("backward: dLoss/dgamma = sum g u, dLoss/dbeta = sum g", 2, check_parameter_gradients),
                   Check("backward adds into .grad (gradients accumulate)", 1, check_gradients_accumulate),
                   Check("running statistics: (1 - momentum) r + momentum s, unbiased variance", 2,
                         check_running_statistics),
                   Check("momentum=None: the cumulative average (the lecture's population statistics)", 2,
                         check_cumulative_average),
                   Check("eval mode uses (and keeps) the running statistics, any batch size", 2, check_eval),
                   Check("a training batch of 1 is refused (ValueError)", 1, check_batch_of_one_refused),
               )),
    Assignment("batchnorm-units", "BatchNorm1d(num_features, units=...): batch normalization of the selected "
               "units only, the others passed through", nn.BatchNorm1d, (
                   Check("weight, bias and the running statistics have one entry per selected unit", 1,
                         check_units_parameters),
                   Check("training forward: the selected units normalized, the others unchanged", 2,
                         check_units_forward),
                   Check("backward: dLoss/dz through the selected units, the others' gradient unchanged; "
                         "dgamma, dbeta", 3, check_units_backward),
                   Check("running statistics of the selected units, and eval mode uses them", 2,
                         check_units_running_and_eval),
               )),
)
