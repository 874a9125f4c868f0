"""Gradient checking: the analytic backward against central finite differences in float64.

For a scalar probe L = sum_k <R_k, y_k> over the outputs y_k (R_k fixed random arrays, so that
dL/dy_k = R_k), every checked element theta of an input or a parameter must satisfy::

    | dL/dtheta (backward)  -  (L(theta + eps) - L(theta - eps)) / (2 eps) |  <=  atol + rtol |numeric|
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ._rng import as_generator
from .nn.module import Module


class GradcheckError(AssertionError):
    """Raised when an analytic gradient disagrees with finite differences."""


@dataclass
class GradcheckResult:
    ok: bool
    worst_name: str
    worst_index: tuple
    analytic: float
    numeric: float
    abs_error: float
    checked: int

    def __str__(self) -> str:
        status = "passed" if self.ok else "FAILED"
        return (
            f"gradcheck {status} on {self.checked} elements; worst at {self.worst_name}{list(self.worst_index)}: "
            f"analytic {self.analytic:.10g}, numeric {self.numeric:.10g}, |diff| {self.abs_error:.3g}"
        )


def _leaves(out) -> list[np.ndarray]:
    if isinstance(out, (tuple, list)):
        return [leaf for item in out for leaf in _leaves(item)]
    return [np.asarray(out)]


def _like(structure, leaves_iter):
    if isinstance(structure, (tuple, list)):
        return type(structure)(_like(item, leaves_iter) for item in structure)
    return next(leaves_iter)


def _is_float(x) -> bool:
    return np.issubdtype(np.asarray(x).dtype, np.floating)


def _generators(module: Module) -> list[np.random.Generator]:
    gens = []
    for m in module.modules():
        for value in vars(m).values():
            if isinstance(value, np.random.Generator) and all(value is not g for g in gens):
                gens.append(value)
    return gens


ACCEPTS = ("gradcheck accepts a tricklab.nn.Module or a callable f(*inputs) -> (outputs, backward) whose "
           "backward(*grads) returns the input gradients")


def _with_backward(fn):
    """``fn`` checked to return (outputs, backward) rather than the outputs alone."""

    def run(*args):
        result = fn(*args)
        if not (isinstance(result, tuple) and len(result) == 2 and callable(result[1])):
            raise TypeError(f"{ACCEPTS}; {getattr(fn, '__name__', type(fn).__name__)} returned "
                            f"{type(result).__name__}, not (outputs, backward)")
        return result

    return run


def gradcheck(fn_or_module, *inputs, eps: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-4,
              check_inputs: bool = True, check_params: bool = True, max_per_tensor: int = 64,
              seed: int = 0, raise_exception: bool = True) -> GradcheckResult:
    """Compare a module's backward with central differences, in float64, for inputs and parameters.

    ``fn_or_module`` is a :class:`~tricklab.nn.Module` (checked on a float64 deep copy, whatever its
    dtype; its random generators are rewound before every forward pass, so dropout-like layers
    reuse one mask) or a callable ``f(*inputs) -> (outputs, backward)`` where ``backward(*grads)``
    returns the input gradients (one that returns its outputs alone is a ``TypeError``). Outputs may be an array or a nested tuple of arrays; ``backward``
    then receives the gradients in the same structure (as ``RNN.backward(grad_output, grad_state)``).
    Up to ``max_per_tensor`` randomly chosen elements of each tensor are checked. Returns the
    result with the worst element; raises :class:`GradcheckError` on failure unless
    ``raise_exception=False``.
    """
    rng = as_generator(seed)
    # floating inputs are checked in float64; others (integer class targets) pass through as they are
    xs = [np.array(x, dtype=np.float64, copy=True) if _is_float(x) else x for x in inputs]
    if isinstance(fn_or_module, Module):
        module = copy.deepcopy(fn_or_module).to(np.float64)
        gens = _generators(module)
        states = [g.bit_generator.state for g in gens]

        def run(*args):
            for g, s in zip(gens, states):
                g.bit_generator.state = s
            out = module(*args)

            def backward(*grads):
                return module.backward(*grads)

            return out, backward

        params = list(module.named_parameters()) if check_params else []
    elif callable(fn_or_module):
        module, run, params = None, _with_backward(fn_or_module), []
    else:
        raise TypeError(f"{ACCEPTS}; got {type(fn_or_module).__name__}")

    out, _ = run(*xs)
    probes = [rng.standard_normal(leaf.shape) for leaf in _leaves(out)]

    def loss(*args) -> float:
        o, _ = run(*args)
        return float(sum(np.sum(leaf * r) for leaf, r in zip(_leaves(o), probes)))

    if module is not None:
        module.zero_grad()
    out, backward = run(*xs)
    grads = _like(out, iter(probes))
    grad_in = backward(*grads) if isinstance(grads, (tuple, list)) else backward(grads)
    grad_in = list(grad_in) if isinstance(grad_in, (tuple, list)) else [grad_in]

    targets = []
    if check_inputs:
        targets += [(f"input{i}", x, np.asarray(g)) for i, (x, g) in enumerate(zip(xs, grad_in)) if _is_float(x)]
    targets += [(name, p.data, p.grad.copy()) for name, p in params]

    worst = GradcheckResult(True, "", (), 0.0, 0.0, 0.0, 0)
    worst_excess = -np.inf
    for name, arr, analytic in targets:
        if analytic.shape != arr.shape:
            raise GradcheckError(f"gradient for {name} has shape {analytic.shape}, expected {arr.shape}")
        flat = np.arange(arr.size)
        if arr.size > max_per_tensor:
            flat = rng.choice(arr.size, size=max_per_tensor, replace=False)
        for f in flat:
            idx = np.unravel_index(f, arr.shape)
            orig = arr[idx]
            arr[idx] = orig + eps
            plus = loss(*xs)
            arr[idx] = orig - eps
            minus = loss(*xs)
            arr[idx] = orig
            numeric = (plus - minus) / (2 * eps)
            err = abs(analytic[idx] - numeric)
            excess = err - (atol + rtol * abs(numeric))
            worst.checked += 1
            if excess > worst_excess:
                worst_excess = excess
                worst.worst_name, worst.worst_index = name, tuple(int(i) for i in idx)
                worst.analytic, worst.numeric, worst.abs_error = float(analytic[idx]), float(numeric), float(err)
    worst.ok = bool(worst_excess <= 0)
    if not worst.ok and raise_exception:
        raise GradcheckError(str(worst))
    return worst
