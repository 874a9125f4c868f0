"""A probe of the training step: what each layer's activations, gradients and updates look like.

Every ``every`` steps, for each probed layer, one row of numbers (the lecture's health checks):

    act_p15, act_p50, act_p85    15th/50th/85th percentiles of the layer's output a (all its entries)
    act_mean, act_std            mean_k a_k and sqrt(mean_k (a_k - mean a)^2) of those entries
    grad_std                     the same std of g_a = dLoss/da, the gradient back-propagated to the
                                 layer's output (for a hidden Linear: dLoss/dz at the pre-activation)
    grad_norm                    ||g||,            g = the layer's parameter gradients of this step
    weight_norm                  ||w||,            w = its parameters before the step
    update_ratio                 ||w' - w|| / ||w||, w' = its parameters after the step
    bn_batch_mean, bn_batch_var  for a batch-norm layer: mean over its units of the batch mean
                                 mu_j = mean_i x_ij and of the (biased) batch variance
                                 var_j = mean_i (x_ij - mu_j)^2 of its input x
    bn_running_mean, bn_running_var  mean over its units of the running statistics after the step

Norms, means and standard deviations are in float64 (percentiles of the output's own dtype); norms
are over all the layer's parameters together (weight and bias as one vector); the gradients are
those the optimizer used (after clipping). Values a layer does not have (the norms of a layer
without parameters, the statistics of a layer that is not batch norm) are NaN, and so is
``grad_std`` where no dLoss/da was computed (see below). ``step`` is the index of the training
step (``trainer.step_count`` before it: 0 is the first), so steps 0, every, 2 every, ... are
probed; ``epoch`` counts from 1 as the history does.

Activations and output gradients come from one of two places:

* ``batch=None``: the training step itself. For that one step each probed layer's ``forward`` and
  ``backward`` (and ``backward_parameters``) are wrapped (instance attributes over the class's
  methods) by functions that summarize the output, or the incoming gradient dLoss/da, and remove
  themselves; nothing else changes, so the run's numbers are those of a run without the probe.
  The training backward skips what serves only dLoss/dx of the data (layers before the first one
  with parameters): their ``grad_std`` is NaN.
* ``batch=(X, y)`` (or ``X``): a separate forward of the fixed probe batch ``X`` just before the
  probed step, in the model's current mode (training mode during ``fit``: batch statistics,
  dropout masks); with targets ``y`` also the trainer's loss on ``y`` and ``model.backward`` of it,
  which gives ``grad_std`` (without ``y`` it is NaN). The batch-norm buffers, every random
  generator of the model and every parameter's ``.grad`` are saved before and restored after, so
  the training run goes on bit for bit as without the probe.

``units``: besides the layer-pooled row, per-unit percentiles of each probed layer's output, in
``probe.unit_records``, one row per (step, layer, unit) with columns ``unit_step``, ``unit_epoch``,
``unit_layer``, ``unit`` (the unit's index j on the output's axis 1) and ``unit_p15``,
``unit_p50``, ``unit_p85``: percentiles of a[:, j] in float64 (of a[:, j, ...], examples and
pixels together, for a convolution's channels j). ``units`` is ``"all"``, a slice or a list of
indices; the same indices for every probed layer.

``at_end=True`` (with a ``batch``): one more probe after the last step, in ``on_train_end``, so
the final state is recorded too, in training mode as the probes during ``fit`` (whatever mode the
last evaluation left; put back after): rows with ``step`` = the number of steps taken and NaN for
``grad_norm`` and ``update_ratio`` (no step follows); ``weight_norm`` and the running statistics
are the final ones (those of ``on_train_end``: before the trainer's ``finish`` recomputes batch-norm
statistics, with ``bn_statistics="recompute"``). It is skipped when rows of that step are recorded
already (a resumed run that had finished).

A step that is not probed costs one integer test in ``on_batch_begin`` and one in
``on_batch_end``. ``probe.records`` (and ``probe.unit_records``) are columnar (a dict of lists, one
entry per (step, layer)); with a ``run_dir`` the records so far are written to ``run_dir/probe.npz``
at every epoch's end and at the end of training (atomically, no pickle; :func:`read_probe` reads
it; the unit columns only when ``units`` is set), and they are in every checkpoint, so a resumed
run's records are those of an uninterrupted run.
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
FLOAT_COLUMNS = ("act_p15", "act_p50", "act_p85", "act_mean", "act_std", "grad_std", "grad_norm", "weight_norm",
                 "update_ratio", "bn_batch_mean", "bn_batch_var", "bn_running_mean", "bn_running_var")
COLUMNS = ("step", "epoch", "layer", "kind", *FLOAT_COLUMNS)
ADDED_COLUMNS = ("act_mean", "act_std", "grad_std")  # NaN in the records of a checkpoint from before them
UNIT_FLOAT_COLUMNS = ("unit_p15", "unit_p50", "unit_p85")
UNIT_COLUMNS = ("unit_step", "unit_epoch", "unit_layer", "unit", *UNIT_FLOAT_COLUMNS)
FILENAME = "probe.npz"
WRAPPED = ("forward", "backward", "backward_parameters")


def empty_records(columns=COLUMNS) -> dict[str, list]:
    """The columns of :attr:`Probe.records` (or of ``unit_records`` with ``UNIT_COLUMNS``), no rows."""
    return {name: [] for name in columns}


def records_to_arrays(records: dict) -> dict[str, np.ndarray]:
    """The records (layer rows or unit rows) as NumPy columns: steps, epochs and unit indices int64,
    layer and kind strings, the rest float64."""
    out = {}
    for name, values in records.items():
        if name in ("step", "epoch", "unit_step", "unit_epoch", "unit"):
            out[name] = np.asarray(values, dtype=np.int64)
        elif name in ("layer", "kind", "unit_layer"):
            out[name] = np.asarray(values, dtype=str) if len(values) else np.zeros(0, dtype="<U1")
        else:
            out[name] = np.asarray(values, dtype=np.float64)
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


def std(a) -> float:
    """sqrt(mean_k (a_k - mean_k a_k)^2) over every entry of ``a``, in float64."""
    return float(np.asarray(a, dtype=np.float64).std())


def batch_statistics(bn: _BatchNorm, x: np.ndarray) -> tuple[float, float]:
    """Mean over the normalized units j of mu_j and of var_j (biased), over every axis but the
    feature axis 1 (examples, and pixels for BatchNorm2d) of batch norm's input ``x``."""
    x = np.asarray(x, dtype=np.float64)
    if bn._selected is not None:
        x = x[:, bn._selected]
    axes = (0, *range(2, x.ndim))
    return float(x.mean(axis=axes).mean()), float(x.var(axis=axes).mean())


def unit_indices(units, n_units: int) -> np.ndarray:
    """The indices j in [0, n_units) that ``units`` ("all", a slice or a list of indices) names."""
    if isinstance(units, str):
        return np.arange(n_units)
    if isinstance(units, slice):
        return np.arange(n_units)[units]
    idx = np.asarray(units, dtype=np.int64)
    if ((idx < -n_units) | (idx >= n_units)).any():
        raise ValueError(f"Probe: units has {idx.tolist()}, but the layer's output has {n_units} units")
    return idx % n_units


def unit_percentiles(a: np.ndarray, units) -> tuple[np.ndarray, np.ndarray]:
    """(j, P) for the units j that ``units`` names: P[k] = the PERCENTILES of a[:, j_k] (pooled over
    every axis but the unit axis 1), in float64."""
    a = np.asarray(a)
    if a.ndim < 2:
        raise ValueError(f"Probe: units needs an output with a unit axis 1, got shape {a.shape}")
    idx = unit_indices(units, a.shape[1])
    per_unit = np.moveaxis(a[:, idx], 1, -1).reshape(-1, len(idx)).astype(np.float64)
    return idx, np.percentile(per_unit, PERCENTILES, axis=0).T


def model_layers(model) -> list[tuple[str, object]]:
    """The model's top-level layers (a Sequential's "0", "1", ...) with their names."""
    return [(name, m) for name, m in model.named_modules() if name and "." not in name]


def _check_units(units):
    if units is None or units == "all" or isinstance(units, slice):
        return units
    if isinstance(units, str):
        raise ValueError(f"Probe: units must be 'all', a slice or a list of indices, got {units!r}")
    units = [units] if isinstance(units, (int, np.integer)) else list(units)
    if not units or any(isinstance(u, bool) or not isinstance(u, (int, np.integer)) for u in units):
        raise ValueError(f"Probe: units must be 'all', a slice or a list of indices, got {units!r}")
    return units


class Probe(Callback):
    """Record activation percentiles, means and standard deviations, the standard deviation of the
    back-propagated gradient, gradient and weight norms, update/weight ratios and batch-norm
    statistics of chosen layers every ``every`` steps (see the module's docstring for the columns).

    Args:
        every: probe steps 0, every, 2 every, ... (a positive integer).
        layers: which layers: None for every top-level layer of the model; else a list of indices
            into them (negative counts from the end) or names from ``model.named_modules()``
            ("3", or "3.1" inside a nested Sequential).
        batch: None to take the activations and output gradients of the probed training step;
            ``(X, y)`` or ``X`` for a separate forward of the fixed batch ``X`` (and, with ``y``, a
            backward of the trainer's loss on ``y``), after which running statistics, random
            generators and parameter gradients are put back.
        units: None, or "all", a slice or a list of indices: per-unit percentiles of those units
            of every probed layer's output, in ``unit_records``.
        at_end: also probe the final state after the last step (needs ``batch``).
    """

    def __init__(self, every: int = 100, layers=None, batch=None, units=None, at_end: bool = False):
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"Probe: every must be a positive integer, got {every!r}")
        if layers is not None:
            layers = [layers] if isinstance(layers, (int, np.integer, str)) else list(layers)
            for layer in layers:
                if isinstance(layer, bool) or not isinstance(layer, (int, np.integer, str)):
                    raise TypeError(f"Probe: layers must be indices or names, got {layer!r}")
        targets = None
        if batch is not None:
            batch, targets = batch if isinstance(batch, tuple) else (batch, None)
            batch = np.asarray(batch)
            if batch.ndim < 1 or len(batch) == 0:
                raise ValueError(f"Probe: batch must hold examples, got an array of shape {batch.shape}")
            if targets is not None and len(targets) != len(batch):
                raise ValueError(f"Probe: batch has {len(batch)} examples but {len(targets)} targets")
        if at_end and batch is None:
            raise ValueError("Probe: at_end needs a probe batch (batch=(X, y) or X): after the last step "
                             "no training forward is left to watch")
        self.every, self.layer_spec, self.batch, self.targets = int(every), layers, batch, targets
        self.units, self.at_end = _check_units(units), bool(at_end)
        self.records = empty_records()
        self.unit_records = empty_records(UNIT_COLUMNS)
        self.layers: list[tuple[str, object]] = []
        self._step = None  # the step being probed, between on_batch_begin and on_batch_end
        self._before: dict[str, list[np.ndarray]] = {}
        self._seen: dict[str, dict] = {}
        self._grads: dict[str, float] = {}

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
        self._write()

    def on_train_end(self, logs):
        self._unwrap()
        self._step = None
        if self.at_end and self.trainer.step_count not in self.records["step"]:
            self._probe_final_state()
            self._write()

    def _probe_final_state(self) -> None:
        """The probe batch through the final model in training mode, as the probes during ``fit``
        saw it (the last epoch's evaluation may have left it in eval mode); every module's mode is
        put back after."""
        modes = [(m, m.training) for m in self.trainer.model.modules()]
        self.trainer.model.train()
        try:
            self._begin()
            self._end(stepped=False)
        finally:
            for m, mode in modes:
                object.__setattr__(m, "training", mode)

    def _write(self) -> None:
        """``run_dir/probe.npz`` of the records so far (the unit columns with ``units`` set)."""
        run_dir = self.trainer.run_dir
        if run_dir is None:
            return
        arrays = records_to_arrays(self.records)
        if self.units is not None:
            arrays.update(records_to_arrays(self.unit_records))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(Path(run_dir) / FILENAME, buf.getvalue())

    # ------------------------------------------------------------------ one probed step
    def _begin(self) -> None:
        """Snapshot the probed layers' weights; take the activations and output gradients (wrap
        the layers' passes for the training step, or run the probe batch)."""
        self._step = self.trainer.step_count
        self._before = {name: [p.data.copy() for p in layer.parameters()] for name, layer in self.layers}
        self._seen, self._grads = {}, {}
        for name, layer in self.layers:
            self._wrap(name, layer)
        if self.batch is not None:
            self._probe_batch()

    def _wrap(self, name: str, layer) -> None:
        """Instance attributes over the layer's forward and backward passes that summarize the first
        call of each (its output; the gradient dLoss/da it receives) and then remove themselves."""
        forward, backward, backward_parameters = layer.forward, layer.backward, layer.backward_parameters

        def wrapped_forward(x, *args, **kwargs):
            vars(layer).pop("forward", None)
            y = forward(x, *args, **kwargs)
            self._seen[name] = self._activation_summary(layer, x, y)
            return y

        def watch(original):
            def wrapped(grad_output, *args, **kwargs):
                vars(layer).pop("backward", None)  # both: backward_parameters may call backward
                vars(layer).pop("backward_parameters", None)
                self._grads[name] = std(grad_output)
                return original(grad_output, *args, **kwargs)
            return wrapped

        object.__setattr__(layer, "forward", wrapped_forward)
        object.__setattr__(layer, "backward", watch(backward))
        object.__setattr__(layer, "backward_parameters", watch(backward_parameters))

    def _unwrap(self) -> None:
        for _, layer in self.layers:
            for attr in WRAPPED:
                vars(layer).pop(attr, None)

    def _activation_summary(self, layer, x, y) -> dict:
        """The output's percentiles, mean and std, its per-unit percentiles (with ``units``) and,
        for batch norm, its input's batch statistics."""
        y = np.asarray(y)
        p15, p50, p85 = (float(v) for v in np.percentile(y, PERCENTILES))
        out = {"act_p15": p15, "act_p50": p50, "act_p85": p85,
               "act_mean": float(np.mean(y, dtype=np.float64)), "act_std": std(y)}
        if isinstance(layer, _BatchNorm):
            out["bn_batch_mean"], out["bn_batch_var"] = batch_statistics(layer, x)
        if self.units is not None:
            out["units"] = unit_percentiles(y, self.units)
        return out

    def _probe_batch(self) -> None:
        """The fixed batch through the model in its current mode (and, with targets, the trainer's
        loss on them back through it); the batch-norm buffers, the random generators and the
        parameter gradients put back as they were."""
        model = self.trainer.model
        buffers = {name: np.array(b, copy=True) for name, b in model.named_buffers()}
        generators = {k: (g, g.bit_generator.state) for k, g in model_generators(model).items()}
        grads = [(p, p.grad.copy()) for p in model.parameters()]
        try:
            out = model(self.batch)
            if self.targets is not None:
                loss = self.trainer.loss
                loss(out, self.targets)
                model.backward(loss.backward())
        finally:
            self._unwrap()
            owners = dict(model.named_modules())
            for full, value in buffers.items():
                owner, _, attr = full.rpartition(".")
                getattr(owners[owner], attr)[...] = value
            for g, state in generators.values():
                g.bit_generator.state = state
            for p, g in grads:
                p.grad[...] = g

    def _end(self, stepped: bool = True) -> None:
        """One row per probed layer: the activations and gradients seen, the parameter gradients now,
        the update made (NaN for both when no step was ``stepped``: the probe at the end)."""
        self._unwrap()
        step, epoch, rec = self._step, self.trainer.epoch + stepped, self.records
        for name, layer in self.layers:
            params = list(layer.parameters())
            before = self._before[name]
            seen = self._seen.get(name, {})
            w_norm = norm(before) if params else math.nan
            if params and stepped:
                delta = norm(p.data.astype(np.float64) - w for p, w in zip(params, before))
                ratio = delta / w_norm if w_norm > 0 else math.nan
            else:
                ratio = math.nan
            is_bn = isinstance(layer, _BatchNorm)
            row = {"step": step, "epoch": epoch, "layer": name, "kind": type(layer).__name__,
                   **{k: seen.get(k, math.nan) for k in ("act_p15", "act_p50", "act_p85", "act_mean", "act_std")},
                   "grad_std": self._grads.get(name, math.nan),
                   "grad_norm": norm(p.grad for p in params) if params and stepped else math.nan,
                   "weight_norm": w_norm, "update_ratio": ratio,
                   "bn_batch_mean": seen.get("bn_batch_mean", math.nan),
                   "bn_batch_var": seen.get("bn_batch_var", math.nan),
                   "bn_running_mean": float(np.mean(layer.running_mean, dtype=np.float64)) if is_bn else math.nan,
                   "bn_running_var": float(np.mean(layer.running_var, dtype=np.float64)) if is_bn else math.nan}
            for key, value in row.items():
                rec[key].append(value)
            if "units" in seen:
                self._unit_rows(step, epoch, name, *seen["units"])
        self._step, self._before, self._seen, self._grads = None, {}, {}, {}

    def _unit_rows(self, step: int, epoch: int, name: str, idx: np.ndarray, pct: np.ndarray) -> None:
        rec = self.unit_records
        rec["unit_step"] += [step] * len(idx)
        rec["unit_epoch"] += [epoch] * len(idx)
        rec["unit_layer"] += [name] * len(idx)
        rec["unit"] += idx.tolist()
        for j, column in enumerate(UNIT_FLOAT_COLUMNS):
            rec[column] += pct[:, j].tolist()

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        return {"records": records_to_arrays(self.records), "unit_records": records_to_arrays(self.unit_records)}

    def load_state_dict(self, state: dict) -> None:
        saved = dict(state["records"])
        missing = set(COLUMNS) - set(ADDED_COLUMNS) - set(saved)
        if missing:
            raise ValueError(f"Probe: checkpointed records lack columns {sorted(missing)}")
        rows = len(saved["step"])
        for name in ADDED_COLUMNS:
            saved.setdefault(name, np.full(rows, np.nan))
        self.records = {name: np.asarray(saved[name]).tolist() for name in COLUMNS}
        units = state.get("unit_records") or {}
        self.unit_records = {name: np.asarray(units[name]).tolist() if name in units else []
                             for name in UNIT_COLUMNS}
