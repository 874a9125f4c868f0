"""Optimizers: one general class, each named optimizer a short chain of gradient transforms.

An optimizer step, for every parameter ``w`` with gradient ``g`` in every parameter group::

    u, state[w] = chain(group).update(g, state[w], w)     # see transforms.py
    w += u                                                # in place: modules hold the array

The chain is rebuilt from the group's hyperparameters at each step. So changing ``group['lr']``
(as the schedulers in lr_scheduler.py do) takes effect at the next ``step()``.

Fast path: SGD and Adam also have the whole chain plus ``w += u`` as one compiled loop per
parameter (``fused.py``, with the numba kernels of ``tricklab.nn._kernels``): one pass over w, g
and the state instead of one NumPy pass per link and temporary. It computes the chain's float32 operations in the chain's
order, and the chain remains the definition: it runs whenever the kernel is unavailable
(``TRICKLAB_KERNELS=numpy``, numba not installed) or the arrays don't suit it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from ..nn import _kernels as K
from ..nn.parameter import Parameter
from . import transforms as T

FUSED = "tricklab.optim.fused"  # the compiled loops, imported with numba on first use


def _require(owner: str, name: str, value, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{owner}: {name} must be {allowed}, got {value!r}")


class Optimizer:
    """Base class: parameter groups, ``step``, ``zero_grad``, ``state_dict`` as in torch.optim.

    ``params`` is an iterable of :class:`Parameter` or a list of dicts, one per group, e.g.
    ``[{'params': decayed}, {'params': biases, 'weight_decay': 0}]``. A key missing from a group
    is taken from ``defaults``. Subclasses implement ``transform(group)`` (the chain of
    gradient transforms for that group's hyperparameters) and ``validate(group)``.

    ``state_dict()`` format (plain containers, JSON/npz friendly)::

        {'state': {index: {name: ndarray | int}},       # index: position of the parameter when
                                                        # groups are read in order
         'param_groups': [{**hyperparameters, 'params': [index, ...]}, ...]}
    """

    def __init__(self, params: Iterable[Parameter] | Iterable[dict], defaults: dict[str, Any]):
        self.defaults = dict(defaults)
        self.validate(self.defaults)
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Parameter, dict[str, Any]] = {}
        if isinstance(params, Parameter):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of Parameters or "
                            "of dicts, got a single Parameter; wrap it in a list")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def transform(self, group: dict[str, Any]) -> T.Transform:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not implement transform")

    def validate(self, group: dict[str, Any]) -> None:
        """Raise ValueError naming a hyperparameter of ``group`` that is out of range."""

    def fused_update(self, group: dict[str, Any]) -> Callable[[Parameter, dict], bool] | None:
        """Optional fast path: ``f(p, state)`` does ``transform(group)``'s update and ``w += u`` in
        place and returns True, or returns False to leave that parameter to the chain. None: no
        fast path (the default)."""
        return None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Append a group: missing keys come from ``defaults``; hyperparameters are validated."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, Parameter) else list(params)
        for p in group["params"]:
            if not isinstance(p, Parameter):
                raise TypeError(f"{type(self).__name__} can only optimize Parameters, "
                                f"got {type(p).__name__}")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self.validate(group)
        ids = [id(p) for p in group["params"]]
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len(set(ids)) != len(ids) or seen.intersection(ids):
            raise ValueError("a parameter appears twice (in this group or in an earlier one); "
                             "each parameter must be in exactly one group, once")
        self.param_groups.append(group)

    def zero_grad(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad[...] = 0

    def step(self, closure: Callable[[], float] | None = None):
        """One update ``w += u`` of every parameter. ``closure`` (if given) recomputes the loss
        and its gradients first, and its value is returned."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            tx = self.transform(group)
            fused = self.fused_update(group)
            for p in group["params"]:
                state = self.state.get(p)
                if state is None:
                    state = tx.init(p.data)
                if fused is not None and fused(p, state):
                    self.state[p] = state
                    continue
                u, self.state[p] = tx.update(p.grad, state, p.data)
                p.data += u
        return loss

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """A snapshot (arrays copied) in the flat format described in the class docstring."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)]: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                for k, v in s.items()}
                 for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output, also after a JSON round trip: keys may be strings,
        arrays may be lists, and tuples may be lists. Arrays are cast to their parameter's dtype."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        by_index: dict[int, Parameter] = {}
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(group["params"]) != len(saved["params"]):
                raise ValueError(f"parameter group {i} of state_dict has {len(saved['params'])} "
                                 f"parameters, this optimizer's has {len(group['params'])}")
            by_index.update(zip((int(j) for j in saved["params"]), group["params"]))
        state = {}
        for j, saved_state in state_dict["state"].items():
            p = by_index[int(j)]
            state[p] = {name: _restore(value, p, name) for name, value in saved_state.items()}
        for group, saved in zip(self.param_groups, saved_groups):
            group.update({k: (tuple(v) if isinstance(v, list) else v)
                          for k, v in saved.items() if k != "params"})
        self.state = state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            hyper = ", ".join(f"{k}={v}" for k, v in group.items() if k != "params")
            lines.append(f"  group {i}: {len(group['params'])} params, {hyper}")
        return "\n".join(lines + [")"])


def _restore(value, p: Parameter, name: str):
    """A saved state entry back to an int counter or to an array with ``p``'s shape and dtype."""
    arr = np.asarray(value)
    if arr.ndim == 0 and (p.data.ndim > 0 or np.issubdtype(arr.dtype, np.integer)):
        return arr.item()
    if arr.shape != p.data.shape:
        raise ValueError(f"state entry {name!r} has shape {arr.shape}; "
                         f"its parameter has shape {p.data.shape}")
    return arr.astype(p.data.dtype, copy=True)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay.

    Exactly ``torch.optim.SGD``. The positional order is torch's, and ``maximize`` is
    keyword-only::

        g <- -g if maximize;   g <- g + weight_decay * w
        b <- g (first step),  else  b <- momentum * b + (1 - dampening) * g
        g <- g + momentum * b if nesterov else b       (skipped when momentum == 0)
        w <- w - lr * g
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def validate(self, g):
        _require("SGD", "lr", g["lr"], g["lr"] >= 0, ">= 0")
        _require("SGD", "momentum", g["momentum"], g["momentum"] >= 0, ">= 0")
        _require("SGD", "dampening", g["dampening"], 0 <= g["dampening"] <= 1, "in [0, 1]")
        _require("SGD", "weight_decay", g["weight_decay"], g["weight_decay"] >= 0, ">= 0")
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError("SGD: nesterov=True requires momentum > 0 and dampening == 0, got "
                             f"momentum={g['momentum']!r}, dampening={g['dampening']!r}")

    def transform(self, g):
        momentum = g["momentum"]
        return T.chain(
            T.scale(-1.0) if g["maximize"] else None,
            T.add_decayed_weights(g["weight_decay"]),
            T.trace(momentum, g["dampening"], g["nesterov"]) if momentum != 0 else None,
            T.scale_by_learning_rate(g["lr"]),
        )

    def fused_update(self, g):
        fused = K.compiled(FUSED)
        if fused is None:
            return None
        momentum = g["momentum"]

        def update(p, state):
            buf = state.get("momentum_buffer")
            if not fused.fits(p, buf):
                return False
            first = momentum != 0 and buf is None
            if first:
                buf = state["momentum_buffer"] = np.empty_like(p.data)
            fused.sgd_(p.data, p.grad, buf, g["lr"], momentum, g["dampening"], g["weight_decay"],
                   g["nesterov"], g["maximize"], first)
            return True

        return update


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) exactly as ``torch.optim.Adam``: ``weight_decay`` is L2, which means
    it is added to the gradient before the moment estimates. With ``decoupled_weight_decay=True``,
    it is AdamW::

        g <- g + weight_decay * w                           (L2, coupled)
        w <- w - lr * scale_by_adam(g)                      (see transforms.scale_by_adam)
        w <- w - lr * (scale_by_adam(g) + weight_decay * w) (decoupled, AdamW)
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *,
                 maximize: bool = False, decoupled_weight_decay: bool = False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def validate(self, g):
        name = type(self).__name__
        _require(name, "betas", g["betas"], len(g["betas"]) == 2, "a pair (beta1, beta2)")
        b1, b2 = g["betas"]
        _require(name, "lr", g["lr"], g["lr"] >= 0, ">= 0")
        _require(name, "betas[0]", b1, 0 <= b1 < 1, "in [0, 1)")
        _require(name, "betas[1]", b2, 0 <= b2 < 1, "in [0, 1)")
        _require(name, "eps", g["eps"], g["eps"] >= 0, ">= 0")
        _require(name, "weight_decay", g["weight_decay"], g["weight_decay"] >= 0, ">= 0")

    def transform(self, g):
        decay = T.add_decayed_weights(g["weight_decay"])
        decoupled = g["decoupled_weight_decay"]
        return T.chain(
            T.scale(-1.0) if g["maximize"] else None,
            None if decoupled else decay,  # L2: the decay term is rescaled by Adam
            T.scale_by_adam(*g["betas"], eps=g["eps"], amsgrad=g["amsgrad"]),
            decay if decoupled else None,  # AdamW: the decay term bypasses Adam
            T.scale_by_learning_rate(g["lr"]),
        )

    def fused_update(self, g):
        fused = K.compiled(FUSED)
        if fused is None:
            return None
        b1, b2 = g["betas"]

        def update(p, state):
            m, v, vmax = state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq")
            if not fused.fits(p, m, v, vmax) or (g["amsgrad"] and vmax is None):
                return False
            step = state["step"] = int(state["step"]) + 1
            fused.adam_(p.data, p.grad, m, v, vmax, g["lr"], b1, b2, g["eps"], g["weight_decay"],
                    g["decoupled_weight_decay"], g["amsgrad"], g["maximize"], step)
            return True

        return update


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter 2019), exactly ``torch.optim.AdamW``: Adam with decoupled weight
    decay, ``w <- (1 - lr * weight_decay) * w - lr * scale_by_adam(g)``."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6.5), exactly ``torch.optim.RMSprop`` (same defaults)::

        g <- g + weight_decay * w             (L2, the default: the decay is rescaled too)
        u <- scale_by_rms(g)                  (optionally centered, see transforms.scale_by_rms)
        b <- momentum * b + u;  u <- b        (only if momentum > 0; b starts at 0)
        w <- w - lr * u                       (L2)
        w <- w - lr * (u + weight_decay * w)  (decoupled_weight_decay=True)

    The decoupled form is ``w <- (1 - lr * weight_decay) * w - lr * u``: the decay bypasses the
    RMS scaling and the momentum, as in AdamW (Loshchilov & Hutter 2019). Torch's RMSprop has no
    such flag (torch 2.13); this equals torch's decoupled convention, ``w.mul_(1 - lr *
    weight_decay)`` before an undecayed ``torch.optim.RMSprop`` step, up to rounding.
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False, *,
                 maximize: bool = False, decoupled_weight_decay: bool = False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def validate(self, g):
        _require("RMSprop", "lr", g["lr"], g["lr"] >= 0, ">= 0")
        _require("RMSprop", "alpha", g["alpha"], 0 <= g["alpha"] <= 1, "in [0, 1]")
        _require("RMSprop", "eps", g["eps"], g["eps"] >= 0, ">= 0")
        _require("RMSprop", "weight_decay", g["weight_decay"], g["weight_decay"] >= 0, ">= 0")
        _require("RMSprop", "momentum", g["momentum"], g["momentum"] >= 0, ">= 0")

    def transform(self, g):
        # trace's first step copies u, which equals torch's zero-initialised buffer: mu*0 + u == u.
        decay = T.add_decayed_weights(g["weight_decay"])
        decoupled = g["decoupled_weight_decay"]
        return T.chain(
            T.scale(-1.0) if g["maximize"] else None,
            None if decoupled else decay,
            T.scale_by_rms(g["alpha"], g["eps"], g["centered"]),
            T.trace(g["momentum"]) if g["momentum"] > 0 else None,
            decay if decoupled else None,
            T.scale_by_learning_rate(g["lr"]),
        )
