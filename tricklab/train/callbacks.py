"""Callbacks: what the training loop does besides the step, hooked in with Keras' names.

A callback subclasses :class:`Callback` and overrides the hooks it needs; the :class:`Trainer`
calls them in this order::

    on_train_begin(logs)
    for every epoch:                        epoch = 0, 1, ... (index, as Keras; logs["epoch"] = epoch + 1)
        on_epoch_begin(epoch, logs)
        for every minibatch:                batch = 0, 1, ... within the epoch
            on_batch_begin(batch, logs)     logs: {"batch", "size"}
            (forward, backward, clip, optimizer step)
            on_batch_end(batch, logs)       logs: {"batch", "size", "loss", "penalty"} of this step
        on_epoch_end(epoch, logs)           logs: the epoch's history row (train_*, val_*, lr, seconds)
    on_train_end(logs)                      logs: the last history row ({} if no epoch ran)

``self.trainer`` is the trainer (``trainer.model``, ``trainer.optimizer``, ``trainer.step_count``)
once the callback is registered. Setting ``trainer.stop_training = True`` ends training after the
current minibatch. The logs of ``on_epoch_end`` are the history row itself, so a value a callback
adds to them is in the history (and its files) too.

A callback with state (early stopping's best epoch and weights, a scheduler's count) returns it
from ``state_dict()`` (nested dicts, lists, numbers, strings and NumPy arrays) and takes it back in
``load_state_dict``; the trainer keeps it in every checkpoint under ``state_key``, so a resumed run
continues exactly. Stateless callbacks return None and are not checkpointed.

The trainer's own collaborators are callbacks of this module, registered in this order before the
user's: :class:`StepSchedulers`, :class:`ProgressBar`, :class:`EpochLog`, early stopping
(:class:`~tricklab.train.early_stopping.EarlyStopping`); after the user's, the writers that must see
every other callback's state of the epoch: :class:`Checkpoint`, then :class:`HistoryFiles`.
"""

from __future__ import annotations

import sys
from pathlib import Path

HOOKS = ("on_train_begin", "on_epoch_begin", "on_batch_begin", "on_batch_end", "on_epoch_end", "on_train_end")


class Callback:
    """Base class: every hook does nothing; override the ones you need (Keras' ``keras.callbacks.Callback``)."""

    trainer = None
    last = False  # writers that must run after every other callback of an epoch set this

    @property
    def state_key(self) -> str:
        """The name of this callback's state in a checkpoint (its class name by default)."""
        return type(self).__name__

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, logs: dict) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict) -> None: ...
    def on_batch_begin(self, batch: int, logs: dict) -> None: ...
    def on_batch_end(self, batch: int, logs: dict) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...
    def on_train_end(self, logs: dict) -> None: ...

    def state_dict(self) -> dict | None:
        """What a checkpoint must keep of this callback; None: nothing (the default)."""
        return None

    def load_state_dict(self, state: dict) -> None:
        """Take back what :meth:`state_dict` returned."""


def overrides(callback: Callback, hook: str) -> bool:
    """Whether ``callback`` does something in ``hook``: its class overrides it, or (LambdaCallback) the
    instance holds a function for it, and it does not list the hook in ``skip_hooks`` (a callback
    switched off in a hook it has, e.g. a progress bar off a terminal); the base class's hooks do
    nothing."""
    if hook in getattr(callback, "skip_hooks", ()):
        return False
    return hook in vars(callback) or getattr(type(callback), hook) is not getattr(Callback, hook)


class CallbackList:
    """Calls a hook on every callback that overrides it, in order; a hook nobody overrides costs nothing.

    ``state_keys`` are unique: a second callback of the same class gets ``Name#2``, and so on.
    """

    def __init__(self, callbacks, trainer):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be tricklab.train.Callback instances, got {type(cb).__name__}")
            cb.set_trainer(trainer)
        self.by_hook = {hook: [cb for cb in self.callbacks if overrides(cb, hook)] for hook in HOOKS}

    def wants(self, hook: str) -> bool:
        return bool(self.by_hook[hook])

    def keyed(self) -> dict[str, Callback]:
        out: dict[str, Callback] = {}
        for cb in self.callbacks:
            key, n = cb.state_key, 1
            while key in out:
                n += 1
                key = f"{cb.state_key}#{n}"
            out[key] = cb
        return out

    def on_train_begin(self, logs):
        for cb in self.by_hook["on_train_begin"]:
            cb.on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs):
        for cb in self.by_hook["on_epoch_begin"]:
            cb.on_epoch_begin(epoch, logs)

    def on_batch_begin(self, batch, logs):
        for cb in self.by_hook["on_batch_begin"]:
            cb.on_batch_begin(batch, logs)

    def on_batch_end(self, batch, logs):
        for cb in self.by_hook["on_batch_end"]:
            cb.on_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs):
        for cb in self.by_hook["on_epoch_end"]:
            cb.on_epoch_end(epoch, logs)

    def on_train_end(self, logs):
        for cb in self.by_hook["on_train_end"]:
            cb.on_train_end(logs)


# ---------------------------------------------------------------------------- the trainer's own
class StepSchedulers(Callback):
    """Step the learning-rate schedulers once per epoch (``interval="epoch"``) or once per step.

    At the end of an epoch every scheduler gets ``step(metrics)`` with the validation loss (the
    training loss without validation data); :class:`~tricklab.optim.lr_scheduler.ReduceLROnPlateau`
    reads it, the others ignore it. Per step they are stepped after the optimizer's step.
    """

    def __init__(self, schedulers, interval: str = "epoch"):
        if interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {interval!r}")
        self.schedulers, self.interval = list(schedulers), interval
        self.skip_hooks = {"on_batch_end"} if interval == "epoch" or not schedulers else set()

    def on_batch_end(self, batch, logs):
        if self.interval == "step":
            for scheduler in self.schedulers:
                scheduler.step()

    def on_epoch_end(self, epoch, logs):
        if self.interval == "epoch":
            metric = logs.get("val_loss", logs.get("train_loss"))
            for scheduler in self.schedulers:
                scheduler.step(metrics=metric)

    def state_dict(self):
        return {"schedulers": [s.state_dict() for s in self.schedulers]}

    def load_state_dict(self, state):
        saved = state["schedulers"]
        if len(saved) != len(self.schedulers):
            raise ValueError(f"checkpoint has {len(saved)} schedulers, this run {len(self.schedulers)}")
        for scheduler, s in zip(self.schedulers, saved):
            scheduler.load_state_dict(s)


class ProgressBar(Callback):
    """A tqdm bar over the minibatches of each epoch with the running training loss (only on a terminal
    by default: ``enabled=None`` asks whether standard error is one)."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else bool(enabled)
        self.bar = None
        self.skip_hooks = () if self.enabled else HOOKS

    def on_epoch_begin(self, epoch, logs):
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=self.trainer.steps_per_epoch, desc=f"epoch {epoch + 1}", leave=False,
                            dynamic_ncols=True)
            self.total = self.count = 0.0

    def on_batch_end(self, batch, logs):
        if self.bar is not None:
            self.total, self.count = self.total + logs["loss"] * logs["size"], self.count + logs["size"]
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{self.total / self.count:.4f}")

    def on_epoch_end(self, epoch, logs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EpochLog(Callback):
    """One line per epoch: ``epoch   3 | train loss 0.3120 accuracy 0.9010 | val loss 0.3300 accuracy 0.8950 | 1.2s``."""

    def __init__(self, log, metric_names=("accuracy",)):
        self.log, self.metric_names = log, tuple(metric_names)

    def on_epoch_end(self, epoch, logs):
        parts = [f"epoch {logs['epoch']:3d}"]
        for split in ("train", "val") if "val_loss" in logs else ("train",):
            values = " ".join(f"{name} {logs[f'{split}_{name}']:.4f}" for name in ("loss", *self.metric_names))
            parts.append(f"{split} {values}")
        parts.append(f"{logs['seconds']:.1f}s")
        self.log(" | ".join(parts))


class HistoryFiles(Callback):
    """``history.csv`` and ``history.jsonl`` in ``run_dir``: the whole history, rewritten atomically each epoch."""

    last = True

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    def on_epoch_end(self, epoch, logs):
        from .history import write_history

        write_history(self.run_dir, self.trainer.history)


class Checkpoint(Callback):
    """The whole training state after every epoch in ``run_dir/checkpoints`` (crash-safe, see checkpoint.py).

    Keras' ``BackupAndRestore``: :meth:`Trainer.resume` reads the newest intact one back. It runs
    after every other callback, so their state of the epoch is in the checkpoint.
    """

    last = True

    def __init__(self, run_dir: str | Path):
        self.folder = Path(run_dir) / "checkpoints"

    def on_epoch_end(self, epoch, logs):
        from .checkpoint import save_checkpoint

        trainer = self.trainer
        trainer.last_checkpoint = save_checkpoint(self.folder, trainer.epoch, trainer.state_dict())


class LambdaCallback(Callback):
    """A callback from plain functions, as Keras' ``LambdaCallback``:
    ``LambdaCallback(on_epoch_end=lambda epoch, logs: print(epoch, logs["val_loss"]))``."""

    def __init__(self, **hooks):
        unknown = set(hooks) - set(HOOKS)
        if unknown:
            raise TypeError(f"LambdaCallback: unknown hook(s) {', '.join(sorted(unknown))}; known: {', '.join(HOOKS)}")
        for hook, fn in hooks.items():
            setattr(self, hook, fn)
