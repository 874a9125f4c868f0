"""A probe of the training step: what each layer's activations, gradients and updates look like.

Every ``every`` steps, for each probed layer, one row of numbers (the lecture's health checks):

    act_p15, act_p50, act_p85    15th/50th/85th percentiles of the layer's output a (all its entries)
    grad_norm                    ||g||,            g = the layer's parameter gradients of this step
    weight_norm                  ||w||,            w = its parameters before the step
    update_ratio                 ||w' - w|| / ||w||, w' = its parameters after the step
    bn_batch_mean, bn_batch_var  for a batch-norm layer: mean over its units of the batch mean
                                 mu_j = mean_i x_ij and of the (biased) batch variance
                                 var_j = mean_i (x_ij - mu_j)^2 of its input x
    bn_running_mean, bn_running_var  mean over its units of the running statistics after the step

Norms are over all the layer's parameters together (weight and bias as one vector), in float64;
the gradients are those the optimizer used (after clipping). Values a layer does not have (the
norms of a layer without parameters, the statistics of a layer that is not batch norm) are NaN.
``step`` is the index of the training step (``trainer.step_count`` before it: 0 is the first), so
steps 0, every, 2 every, ... are probed; ``epoch`` counts from 1 as the history does.

Activations come from one of two places:

* ``batch=None``: the training forward of the probed step itself. For that one step each probed
  layer's ``forward`` is wrapped (an instance attribute over the class's method) by a function
  that takes the percentiles of its output and removes itself; nothing else changes, so the run's
  numbers are those of a run without the probe.
* ``batch=(X, y)`` (or ``X``): a separate forward of the fixed probe batch ``X`` just before the
  probed step, in the model's current mode (training mode during ``fit``: batch statistics,
  dropout masks). The batch-norm buffers and every random generator of the model are saved before
  and restored after, so the training run goes on exactly as without the probe.

A step that is not probed costs one integer test in ``on_batch_begin`` and one in
``on_batch_end``. ``probe.records`` is columnar (a dict of lists, one entry per (step, layer));
with a ``run_dir`` the records so far are written to ``run_dir/probe.npz`` at every epoch's end
(atomically, no pickle; :func:`read_probe` reads it), and they are in every checkpoint, so a
resumed run's records are those of an uninterrupted run.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_bytes
from ..nn.normalization import _BatchNorm
from .callbacks import Callback
from .trainer import model_generators

PERCENTILES = (15, 50, 85)
FLOAT_COLUMNS = ("act_p15", "act_p50", "act_p85", "grad_norm", "weight_norm", "update_ratio",
                 "bn_batch_mean", "bn_batch_var", "bn_running_mean", "bn_running_var")
COLUMNS = ("step", "epoch", "layer", "kind", *FLOAT_COLUMNS)
FILENAME = "probe.npz"


def empty_records() -> dict[str, list]:
    """The columns of :attr:`Probe.records`, no rows."""
    return {name: [] for name in COLUMNS}


def records_to_arrays(records: dict) -> dict[str, np.ndarray]:
    """The records as NumPy columns: step and epoch int64, layer and kind strings, the rest float64."""
    out = {"step": np.asarray(records["step"], dtype=np.int64), "epoch": np.asarray(records["epoch"], dtype=np.int64)}
    for name in ("layer", "kind"):
        out[name] = np.asarray(records[name], dtype=str) if len(records[name]) else np.zeros(0, dtype="<U1")
    for name in FLOAT_COLUMNS:
        out[name] = np.asarray(records[name], dtype=np.float64)
    return out


def read_probe(path: str | Path) -> dict[str, np.ndarray]:
    """The records written by :class:`Probe`: ``path`` is the ``probe.npz`` file or its run folder."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def norm(arrays) -> float:
    """||v|| of the arrays taken as one vector, in float64: sqrt(sum_k sum_i a_ki^2)."""
    total = 0.0
    for a in arrays:
        flat = np.asarray(a, dtype=np.float64).ravel()
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def batch_statistics(bn: _BatchNorm, x: np.ndarray) -> tuple[float, float]:
    """Mean over the normalized units j of mu_j and of var_j (biased), over every axis but the
    feature axis 1 (examples, and pixels for BatchNorm2d) of batch norm's input ``x``."""
    x = np.asarray(x, dtype=np.float64)
    if bn._selected is not None:
        x = x[:, bn._selected]
    axes = (0, *range(2, x.ndim))
    return float(x.mean(axis=axes).mean()), float(x.var(axis=axes).mean())


def model_layers(model) -> list[tuple[str, object]]:
    """The model's top-level layers (a Sequential's "0", "1", ...) with their names."""
    return [(name, m) for name, m in model.named_modules() if name and "." not in name]


class Probe(Callback):
    """Record activation percentiles, gradient and weight norms, update/weight ratios and batch-norm
    statistics of chosen layers every ``every`` steps (see the module's docstring for the columns).

    Args:
        every: probe steps 0, every, 2 every, ... (a positive integer).
        layers: which layers: None for every top-level layer of the model; else a list of indices
            into them (negative counts from the end) or names from ``model.named_modules()``
            ("3", or "3.1" inside a nested Sequential).
        batch: None to take the activations of the training forward of the probed step; ``(X, y)``
            or ``X`` for a separate forward of the fixed batch ``X`` (running statistics and random
            generators restored after it).
    """

    def __init__(self, every: int = 100, layers=None, batch=None):
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"Probe: every must be a positive integer, got {every!r}")
        if layers is not None:
            layers = [layers] if isinstance(layers, (int, np.integer, str)) else list(layers)
            for layer in layers:
                if isinstance(layer, bool) or not isinstance(layer, (int, np.integer, str)):
                    raise TypeError(f"Probe: layers must be indices or names, got {layer!r}")
        if batch is not None:
            batch = np.asarray(batch[0] if isinstance(batch, tuple) else batch)
            if batch.ndim < 1 or len(batch) == 0:
                raise ValueError(f"Probe: batch must hold examples, got an array of shape {batch.shape}")
        self.every, self.layer_spec, self.batch = int(every), layers, batch
        self.records = empty_records()
        self.layers: list[tuple[str, object]] = []
        self._step = None  # the step being probed, between on_batch_begin and on_batch_end
        self._before: dict[str, list[np.ndarray]] = {}
        self._seen: dict[str, tuple] = {}

    # ------------------------------------------------------------------ which layers
    def resolve_layers(self, model) -> list[tuple[str, object]]:
        """(name, module) of the layers to probe, checked against ``model``."""
        top = model_layers(model)
        if self.layer_spec is None:
            return top
        named = dict(model.named_modules())
        out = []
        for spec in self.layer_spec:
            if isinstance(spec, str):
                if not spec or spec not in named:
                    raise ValueError(f"Probe: layers has {spec!r}, not a layer name of the model "
                                     f"(names: {', '.join(n for n in named if n)})")
                out.append((spec, named[spec]))
            else:
                if not -len(top) <= spec < len(top):
                    raise ValueError(f"Probe: layers has index {spec}, but the model has {len(top)} layers")
                out.append(top[spec])
        return out

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, logs):
        self._unwrap()  # a step that failed midway may have left wrappers behind
        self.layers = self.resolve_layers(self.trainer.model)
        self._step = None

    def on_batch_begin(self, batch, logs):
        if self.trainer.step_count % self.every:
            return
        self._begin()

    def on_batch_end(self, batch, logs):
        if self._step is None:
            return
        self._end()

    def on_epoch_end(self, epoch, logs):
        run_dir = self.trainer.run_dir
        if run_dir is not None:
            buf = io.BytesIO()
            np.savez(buf, **records_to_arrays(self.records))
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(Path(run_dir) / FILENAME, buf.getvalue())

    def on_train_end(self, logs):
        self._unwrap()

    # ------------------------------------------------------------------ one probed step
    def _begin(self) -> None:
        """Snapshot the probed layers' weights; take the activations (wrap the forwards, or run the probe batch)."""
        self._step = self.trainer.step_count
        self._before = {name: [p.data.copy() for p in layer.parameters()] for name, layer in self.layers}
        self._seen = {}
        for name, layer in self.layers:
            self._wrap(name, layer)
        if self.batch is not None:
            self._probe_forward()

    def _wrap(self, name: str, layer) -> None:
        original = layer.forward

        def forward(x, *args, **kwargs):
            vars(layer).pop("forward", None)  # the first call of the step is the one probed
            y = original(x, *args, **kwargs)
            self._seen[name] = self._activation_summary(layer, x, y)
            return y

        object.__setattr__(layer, "forward", forward)

    def _unwrap(self) -> None:
        for _, layer in self.layers:
            vars(layer).pop("forward", None)

    @staticmethod
    def _activation_summary(layer, x, y) -> tuple:
        """The output's percentiles and, for batch norm, its input's batch statistics."""
        p15, p50, p85 = (float(v) for v in np.percentile(np.asarray(y), PERCENTILES))
        stats = batch_statistics(layer, x) if isinstance(layer, _BatchNorm) else (math.nan, math.nan)
        return p15, p50, p85, *stats

    def _probe_forward(self) -> None:
        """The fixed batch through the model in its current mode; the batch-norm buffers and the
        random generators put back as they were."""
        model = self.trainer.model
        buffers = {name: np.array(b, copy=True) for name, b in model.named_buffers()}
        generators = {k: (g, g.bit_generator.state) for k, g in model_generators(model).items()}
        try:
            model(self.batch)
        finally:
            self._unwrap()
            owners = dict(model.named_modules())
            for full, value in buffers.items():
                owner, _, attr = full.rpartition(".")
                getattr(owners[owner], attr)[...] = value
            for g, state in generators.values():
                g.bit_generator.state = state

    def _end(self) -> None:
        """One row per probed layer: the activations seen, the gradients now, the update made."""
        self._unwrap()
        step, epoch, rec = self._step, self.trainer.epoch + 1, self.records
        for name, layer in self.layers:
            params = list(layer.parameters())
            before = self._before[name]
            p15, p50, p85, bn_mean, bn_var = self._seen.get(name, (math.nan,) * 5)
            w_norm = norm(before) if params else math.nan
            if params:
                delta = norm(p.data.astype(np.float64) - w for p, w in zip(params, before))
                ratio = delta / w_norm if w_norm > 0 else math.nan
            else:
                ratio = math.nan
            is_bn = isinstance(layer, _BatchNorm)
            row = {"step": step, "epoch": epoch, "layer": name, "kind": type(layer).__name__,
                   "act_p15": p15, "act_p50": p50, "act_p85": p85,
                   "grad_norm": norm(p.grad for p in params) if params else math.nan,
                   "weight_norm": w_norm, "update_ratio": ratio,
                   "bn_batch_mean": bn_mean, "bn_batch_var": bn_var,
                   "bn_running_mean": float(np.mean(layer.running_mean, dtype=np.float64)) if is_bn else math.nan,
                   "bn_running_var": float(np.mean(layer.running_var, dtype=np.float64)) if is_bn else math.nan}
            for key, value in row.items():
                rec[key].append(value)
        self._step, self._before, self._seen = None, {}, {}

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        return {"records": records_to_arrays(self.records)}

    def load_state_dict(self, state: dict) -> None:
        saved = state["records"]
        missing = set(COLUMNS) - set(saved)
        if missing:
            raise ValueError(f"Probe: checkpointed records lack columns {sorted(missing)}")
        self.records = {name: np.asarray(saved[name]).tolist() for name in COLUMNS}
