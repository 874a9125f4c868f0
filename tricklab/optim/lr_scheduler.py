"""Learning-rate schedules: they set the optimizer groups' ``group['lr']``, as torch's do.

Use them the torch way: construct the scheduler after the optimizer, then call
``optimizer.step(); scheduler.step()`` once per epoch (or iteration). Constructing a scheduler
does step 0: it records ``group['initial_lr']`` (``base_lrs``) and sets the lr for step 0.

StepLR, ExponentialLR, CosineAnnealingLR and LinearLR compute each lr from the previous one
(torch's "chainable" form), not from their closed form. That makes their floats equal torch's bit
for bit (the closed form differs in the last digits), and several schedulers can drive the same
optimizer together. Each docstring gives the closed form, which holds up to rounding; torch's
closed form itself (``closed_form_lr``) is what :class:`SequentialLR` uses to restart a scheduler.

Two ways to combine schedulers: chain them (step all of them, each multiplies the lr the others
left, e.g. warmup and decay at once; the Trainer takes a list), or hand over from one to the next
at given steps with :class:`SequentialLR`. :class:`MomentumRamp` schedules the momentum (and its
dampening) the same way and chains with them.
"""

from __future__ import annotations

import math
import numbers
from bisect import bisect_right
from typing import Any

from .optimizer import Optimizer, _require


def _is_int(n, low: int) -> bool:
    return isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= low


class LRScheduler:
    """Base class: ``step()``, ``get_last_lr()``, ``state_dict()`` / ``load_state_dict()``.

    Subclasses implement ``get_lr()``: the lr of every group at step ``self.last_epoch``, computed
    from the groups' current lr and/or ``self.base_lrs``; those whose ``get_lr`` is chainable also
    implement ``closed_form_lr()``, the same from ``self.base_lrs`` alone.
    """

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__} needs an Optimizer, "
                            f"got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = -1
        self.step()

    def get_lr(self) -> list[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def closed_form_lr(self) -> list[float]:
        """The lr of every group at step ``self.last_epoch`` from ``self.base_lrs`` alone."""
        return self.get_lr()

    def _current_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def _set_lrs(self, lrs: list[float]) -> None:
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = self._current_lrs()

    def step(self, metrics: float | None = None) -> None:
        """Advance one epoch (or step). ``metrics`` is accepted and ignored, so that a trainer can
        step every scheduler alike; :class:`ReduceLROnPlateau` is the one that reads it."""
        self.last_epoch += 1
        self._set_lrs(self.get_lr())

    def restart(self) -> None:
        """Go back to step 0, its lrs computed from the initial ones (torch's ``step(epoch=0)``)."""
        self.last_epoch = 0
        self._set_lrs(self.closed_form_lr())

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """Every attribute except the optimizer: plain numbers, strings and lists of numbers."""
        return {k: (list(v) if isinstance(v, list) else v)
                for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update({k: (list(v) if isinstance(v, list) else v)
                              for k, v in state_dict.items()})


class StepLR(LRScheduler):
    """Decay by ``gamma`` every ``step_size`` steps: ``eta_t = eta_0 * gamma**(t // step_size)``."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        _require("StepLR", "step_size", step_size, _is_int(step_size, 1), "an int >= 1")
        _require("StepLR", "gamma", gamma, gamma > 0, "> 0")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def get_lr(self):
        lrs = self._current_lrs()
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lrs
        return [lr * self.gamma for lr in lrs]

    def closed_form_lr(self):
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size) for base_lr in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Decay by ``gamma`` every step: ``eta_t = eta_0 * gamma ** t``."""

    def __init__(self, optimizer: Optimizer, gamma: float):
        _require("ExponentialLR", "gamma", gamma, gamma > 0, "> 0")
        self.gamma = gamma
        super().__init__(optimizer)

    def get_lr(self):
        lrs = self._current_lrs()
        return lrs if self.last_epoch == 0 else [lr * self.gamma for lr in lrs]

    def closed_form_lr(self):
        return [base_lr * self.gamma**self.last_epoch for base_lr in self.base_lrs]


class InverseTimeLR(LRScheduler):
    """Inverse-time decay: ``eta_t = eta_0 * 1 / (1 + k t)``.

    The steps shrink, yet ``sum_t eta_t = inf`` (a harmonic series) while
    ``sum_t eta_t^2 < inf``. These are the Robbins-Monro conditions under which SGD converges:
    the steps are large enough to reach the optimum from anywhere, and small enough that the
    gradient noise averages out. Torch has no such class. It equals, bit for bit,
    ``torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 / (1 + k * t))``.

    References:
        Robbins & Monro, "A Stochastic Approximation Method", 1951.
    """

    def __init__(self, optimizer: Optimizer, k: float):
        _require("InverseTimeLR", "k", k, k >= 0, ">= 0")
        self.k = k
        super().__init__(optimizer)

    def get_lr(self):
        factor = 1 / (1 + self.k * self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from ``eta_0`` down to ``eta_min`` over ``T_max`` steps, then back up
    (the cosine is periodic, as in torch)::

        eta_t = eta_min + (eta_0 - eta_min) * (1 + cos(pi * t / T_max)) / 2

    References:
        Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        _require("CosineAnnealingLR", "T_max", T_max, _is_int(T_max, 1), "an int >= 1")
        _require("CosineAnnealingLR", "eta_min", eta_min, eta_min >= 0, ">= 0")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer)

    def get_lr(self):
        t, T, eta_min = self.last_epoch, self.T_max, self.eta_min
        lrs = self._current_lrs()
        if t == 0:
            return lrs
        if (t - 1 - T) % (2 * T) == 0:  # leaving the minimum: the ratio below would be 0/0
            return [lr + (base - eta_min) * (1 - math.cos(math.pi / T)) / 2
                    for lr, base in zip(lrs, self.base_lrs)]
        ratio = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
        return [ratio * (lr - eta_min) + eta_min for lr in lrs]

    def closed_form_lr(self):
        cosine = 1 + math.cos(math.pi * self.last_epoch / self.T_max)
        return [self.eta_min + (base_lr - self.eta_min) * cosine / 2 for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    """Scale the lr by a factor that moves linearly from ``start_factor`` to ``end_factor`` over
    ``total_iters`` steps, then stays there (torch's ``LinearLR``)::

        eta_t = eta_0 * (start + (end - start) * min(t, total_iters) / total_iters)
    """

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5):
        name = type(self).__name__
        _require(name, "start_factor", start_factor, 0 < start_factor <= 1, "in (0, 1]")
        _require(name, "end_factor", end_factor, 0 <= end_factor <= 1, "in [0, 1]")
        _require(name, "total_iters", total_iters, _is_int(total_iters, 1), "an int >= 1")
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer)

    def get_lr(self):
        t, start, end = self.last_epoch, self.start_factor, self.end_factor
        lrs = self._current_lrs()
        if t == 0:
            return [lr * start for lr in lrs]
        if t > self.total_iters:
            return lrs
        step = 1.0 + (end - start) / (self.total_iters * start + (t - 1) * (end - start))
        return [lr * step for lr in lrs]

    def closed_form_lr(self):
        t, start, end = self.last_epoch, self.start_factor, self.end_factor
        return [base_lr * (start + (end - start) * min(self.total_iters, t) / self.total_iters)
                for base_lr in self.base_lrs]


class LinearWarmup(LinearLR):
    """Linear warmup: the lr climbs from ``start_factor * eta_0`` to ``eta_0`` over ``warmup_steps``
    steps and then stays at ``eta_0``. This is ``LinearLR(opt, start_factor, 1.0, warmup_steps)``.
    Large initial steps can blow up a freshly initialised network, and the warmup avoids them.

    References:
        Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, start_factor: float = 1.0 / 3):
        _require("LinearWarmup", "warmup_steps", warmup_steps, _is_int(warmup_steps, 1),
                 "an int >= 1")
        super().__init__(optimizer, start_factor, 1.0, warmup_steps)


class MomentumRamp:
    """Raise SGD's (or RMSprop's) momentum linearly from each group's initial one to ``end`` over
    ``total_iters`` steps, then hold it (Hinton et al. 2012: 0.5 rising to 0.99 over 500 epochs)::

        p_t = p_0 + (end - p_0) * min(1, t / total_iters)

    With ``damped`` the dampening follows the momentum (``dampening = p_t``), so the velocity
    averages the gradients, ``v_t = p_t v_{t-1} + (1 - p_t) g_t``, and the step stays ``lr * g``
    however high ``p_t`` climbs (Hinton et al. 2012, Appendix A); undamped, it grows to
    ``lr * g / (1 - p_t)``, twenty times at 0.95. It steps like the lr schedulers (construction is
    step 0) and chains with them: torch's OneCycleLR schedules momentum in the same place.
    """

    def __init__(self, optimizer: Optimizer, end: float, total_iters: int, damped: bool = False):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"MomentumRamp needs an Optimizer, got {type(optimizer).__name__}")
        groups = optimizer.param_groups
        _require("MomentumRamp", "optimizer", type(optimizer).__name__, all("momentum" in g for g in groups),
                 "an optimizer with momentum (SGD, RMSprop)")
        _require("MomentumRamp", "end", end, 0 <= end < 1, "in [0, 1)")
        _require("MomentumRamp", "total_iters", total_iters, _is_int(total_iters, 1), "an int >= 1")
        _require("MomentumRamp", "damped", damped, not damped or all("dampening" in g for g in groups),
                 "False for an optimizer without dampening (SGD has it)")
        self.optimizer, self.end, self.total_iters, self.damped = optimizer, end, total_iters, bool(damped)
        for group in groups:
            group.setdefault("initial_momentum", group["momentum"])
        self.base_momenta = [group["initial_momentum"] for group in groups]
        self.last_epoch = -1
        self.step()

    def momenta(self) -> list[float]:
        """Every group's momentum at step ``self.last_epoch``."""
        ramp = min(1.0, self.last_epoch / self.total_iters)
        return [p0 + (self.end - p0) * ramp for p0 in self.base_momenta]

    def step(self, metrics: float | None = None) -> None:
        """Advance one epoch (or step); ``metrics`` is ignored, as by the lr schedulers."""
        self.last_epoch += 1
        for group, p in zip(self.optimizer.param_groups, self.momenta(), strict=True):
            group["momentum"] = p
            if self.damped:
                group["dampening"] = p

    state_dict = LRScheduler.state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        LRScheduler.load_state_dict(self, state_dict)
        self.last_epoch -= 1
        self.step()  # the groups' momentum of the restored step (an optimizer's state may predate it)


class SequentialLR(LRScheduler):
    """Hand the optimizer from one scheduler to the next at the milestones (torch's ``SequentialLR``).

    ``schedulers[i]`` sets the lr for the steps ``milestones[i-1] <= t < milestones[i]``. At a
    milestone the next scheduler restarts at its own step 0 from the initial lrs (torch steps it
    with ``epoch=0``, in closed form), whatever lr the previous one left::

        SequentialLR(opt, [LinearWarmup(opt, 5), CosineAnnealingLR(opt, 95)], milestones=[5])

    Construct the schedulers on ``optimizer`` first, then this; step only this one. On
    construction the lrs go back to the initial ones and ``schedulers[0]`` does step 0 again
    (the others' constructor steps are undone). ``state_dict`` holds the schedulers' states.
    """

    def __init__(self, optimizer: Optimizer, schedulers: list[LRScheduler], milestones: list[int]):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"SequentialLR needs an Optimizer, got {type(optimizer).__name__}")
        schedulers, milestones = list(schedulers), list(milestones)
        _check_sequence(optimizer, schedulers, milestones)
        self.optimizer, self.schedulers, self.milestones = optimizer, schedulers, milestones
        self.last_epoch = 0
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        for scheduler in schedulers:
            scheduler.last_epoch -= 1
        schedulers[0].step()
        self._last_lr = schedulers[0].get_last_lr()

    def step(self, metrics: float | None = None) -> None:
        self.last_epoch += 1
        i = bisect_right(self.milestones, self.last_epoch)
        scheduler = self.schedulers[i]
        if i > 0 and self.milestones[i - 1] == self.last_epoch:
            scheduler.restart()
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        state = {k: (list(v) if isinstance(v, list) else v)
                 for k, v in self.__dict__.items() if k not in ("optimizer", "schedulers")}
        state["schedulers"] = [s.state_dict() for s in self.schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        nested = state.pop("schedulers")
        if len(nested) != len(self.schedulers):
            raise ValueError(f"SequentialLR state has {len(nested)} schedulers, this one {len(self.schedulers)}")
        super().load_state_dict(state)
        for scheduler, s in zip(self.schedulers, nested):
            scheduler.load_state_dict(s)


def _check_sequence(optimizer: Optimizer, schedulers: list, milestones: list) -> None:
    """SequentialLR's arguments: schedulers of ``optimizer``, one milestone between each two."""
    if not schedulers:
        raise ValueError("SequentialLR needs at least one scheduler, got none")
    for i, s in enumerate(schedulers):
        if not isinstance(s, LRScheduler) or isinstance(s, SequentialLR):
            raise TypeError(f"SequentialLR: schedulers[{i}] must be an LRScheduler other than "
                            f"SequentialLR, got {type(s).__name__}")
        if s.optimizer is not optimizer:
            raise ValueError(f"SequentialLR: schedulers[{i}] drives another optimizer")
    if len(milestones) != len(schedulers) - 1:
        raise ValueError(f"SequentialLR needs one milestone fewer than schedulers: got "
                         f"{len(schedulers)} schedulers and {len(milestones)} milestones")
    ok = all(_is_int(m, 1) for m in milestones) and all(a < b for a, b in zip(milestones, milestones[1:]))
    _require("SequentialLR", "milestones", milestones, ok, "increasing ints >= 1")


class ReduceLROnPlateau:
    """Multiply the lr by ``factor`` when a monitored metric has stopped improving (torch's rules).

    ``step(metric)`` counts the epochs that are not better than the best seen so far. "Better"
    means ``metric < best * (1 - threshold)`` (mode ``'min'``, ``'rel'``), ``metric < best -
    threshold`` (``'abs'``), and the mirror images for mode ``'max'``. When more than ``patience``
    epochs in a row are bad, every group's ``lr <- max(lr * factor, min_lr)``. The change is
    skipped if it would be smaller than ``eps``. Counting then pauses for ``cooldown`` epochs.
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float | list[float] = 0.0, eps: float = 1e-8):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"ReduceLROnPlateau needs an Optimizer, got {type(optimizer).__name__}")
        name = "ReduceLROnPlateau"
        _require(name, "mode", mode, mode in ("min", "max"), "'min' or 'max'")
        _require(name, "threshold_mode", threshold_mode, threshold_mode in ("rel", "abs"),
                 "'rel' or 'abs'")
        _require(name, "factor", factor, 0 <= factor < 1, "in [0, 1)")
        _require(name, "patience", patience, _is_int(patience, 0), "an int >= 0")
        _require(name, "cooldown", cooldown, _is_int(cooldown, 0), "an int >= 0")
        _require(name, "threshold", threshold, threshold >= 0, ">= 0")
        n_groups = len(optimizer.param_groups)
        min_lrs = list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr] * n_groups
        _require(name, "min_lr", min_lr, len(min_lrs) == n_groups,
                 f"a number or a list of {n_groups} numbers (one per param group)")
        self.optimizer = optimizer
        self.mode, self.factor, self.patience, self.cooldown = mode, factor, patience, cooldown
        self.threshold, self.threshold_mode = threshold, threshold_mode
        self.min_lrs, self.eps = min_lrs, eps
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = [group["lr"] for group in optimizer.param_groups]

    def _is_better(self, a: float) -> bool:
        best, thr, rel = self.best, self.threshold, self.threshold_mode == "rel"
        if self.mode == "min":
            return a < (best * (1.0 - thr) if rel else best - thr)
        return a > (best * (thr + 1.0) if rel else best + thr)

    def step(self, metrics: float | None = None) -> None:
        """One epoch with the monitored value ``metrics`` (e.g. the validation loss); required."""
        if metrics is None:
            raise ValueError("ReduceLROnPlateau.step needs the monitored value: step(metrics=val_loss)")
        current = float(metrics)
        self.last_epoch += 1
        if self._is_better(current):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs, strict=True):
                new_lr = max(float(group["lr"]) * self.factor, min_lr)
                if float(group["lr"]) - new_lr > self.eps:
                    group["lr"] = new_lr
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    get_last_lr = LRScheduler.get_last_lr
    state_dict = LRScheduler.state_dict
    load_state_dict = LRScheduler.load_state_dict
