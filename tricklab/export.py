"""Moving a model to PyTorch and back, weights included: :func:`to_torch` and :func:`from_torch`.

Every tricklab layer with a PyTorch counterpart maps onto it; parameters and buffers travel
through ``state_dict``, whose names and shapes are torch's on both sides::

    tricklab.nn                                  torch.nn
    Sequential (nested too)                  <-> Sequential (children "0", "1", ...)
    Linear(in, out, bias)                    <-> Linear(in, out, bias)
    Conv2d(in, out, kernel_size, stride, padding, dilation, groups, bias, padding_mode)
                                             <-> Conv2d(the same)
    ReLU, Sigmoid, Tanh, Identity            <-> ReLU, Sigmoid, Tanh, Identity
    LeakyReLU(negative_slope)                <-> LeakyReLU(negative_slope)
    Flatten(start_dim, end_dim)              <-> Flatten(start_dim, end_dim)
    Dropout(p, scaling="inverted")           <-> Dropout(p)
    Dropout2d(p, scaling="inverted")         <-> Dropout2d(p)
    BatchNorm1d(n, eps, momentum, affine)    <-> BatchNorm1d(n, eps, momentum, affine,
                                                 track_running_stats=True), num_batches_tracked too
    BatchNorm2d(n, eps, momentum, affine)    <-> BatchNorm2d(n, eps, momentum, affine,
                                                 track_running_stats=True), num_batches_tracked too
    MaxPool2d(kernel_size, stride, padding)  <-> MaxPool2d(kernel_size, stride, padding), dilation=1,
                                                 ceil_mode=False, return_indices=False
    AvgPool2d(kernel_size, stride, padding)  <-> AvgPool2d(kernel_size, stride, padding), ceil_mode=False,
                                                 count_include_pad=True, divisor_override=None
    AdaptiveAvgPool2d(output_size)           <-> AdaptiveAvgPool2d(output_size)
    RNN(in, H, num_layers, bias, nonlinearity) <-> RNN(..., batch_first=True)
    LSTM(in, H, num_layers, bias)            <-> LSTM(..., batch_first=True)
    SequenceEncoder(rnn, time_steps)         <-> TorchSequenceEncoder(rnn, time_steps) (below)

PyTorch has no SequenceEncoder, so this module defines one, ``TorchSequenceEncoder``, a torch
module doing the same reshape (x of shape (batch, time * features) viewed as (batch, time,
features)), running its ``rnn`` child and returning the last step, ``output[:, -1]``. Its child
is named ``rnn`` as in tricklab, so ``state_dict`` keys such as ``0.rnn.weight_ih_l0`` agree.
It is defined when first used (``tricklab.export.TorchSequenceEncoder`` imports torch).

Refused with :class:`UnsupportedLayerError` (a ValueError) naming the layer's position (its
``state_dict`` prefix, such as ``2`` or ``0.rnn``) and class, since torch computes something else:

- ``Dropout(scaling="test")``: classic dropout multiplies by alpha = 1 - p at eval while
  torch.nn.Dropout is inverted; for inference, ``to_torch(nn.fold_dropout_scaling(model))``
  exports the model with alpha folded into the next Linear layer's weights.
- ``BatchNorm1d(units=...)``, ``BatchNorm2d(channels=...)``: torch normalizes every feature.
- ``Dropout2d(scaling="test")``: as ``Dropout(scaling="test")``.
- RNN / LSTM with zoneout > 0: torch's recurrent layers have no zoneout.
- DropConnect, Shakeout, Whiteout, GaussianNoise, ActivityL1: tricks torch has no layer for.
  Some of them reduce to a Linear or an Identity at eval, but an exported model would then
  train differently from the original, so they are refused rather than exported for eval only.
- Losses: they are not layers of a model.

``from_torch`` is the reverse for the same set of torch modules (exact classes: a subclass may
compute something else), refusing RNN / LSTM with ``batch_first=False``, ``bidirectional``,
``dropout`` between layers or ``proj_size``, BatchNorm1d/2d without running statistics and
pooling with settings other than those above, which tricklab's layers do not have. Both
directions copy the weights (the two models share no memory) and keep every module's train/eval
mode. torch is imported only when a function runs, so tricklab works without it.
"""

from __future__ import annotations

import functools

import numpy as np

from . import nn
from ._rng import RngLike, as_generator
from .nn.module import as_float_dtype

TORCH_VERSION = "2.13.0"


class UnsupportedLayerError(ValueError):
    """A layer with no twin on the other side; the message names its position and class."""


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError(f"tricklab.export needs PyTorch: pip install torch=={TORCH_VERSION}") from None
    return torch


def _where(path: str) -> str:
    return f"layer {path}" if path else "the model"


def _torch_dtype(torch, dtype: np.dtype):
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[np.dtype(dtype)]


# ----------------------------------------------------------------------------- the torch SequenceEncoder
@functools.cache
def _sequence_encoder_class():
    torch = _import_torch()

    class TorchSequenceEncoder(torch.nn.Module):
        """tricklab's SequenceEncoder in torch: x (batch, time * features) -> h_T (batch, hidden).

        y = rnn(x.view(batch, time, features))[0][:, -1], with ``rnn`` a batch-first
        torch.nn.RNN or LSTM and features = ``rnn.input_size``.
        """

        def __init__(self, rnn, time_steps: int):
            super().__init__()
            self.rnn, self.time_steps = rnn, int(time_steps)

        def forward(self, x):
            output, _ = self.rnn(x.reshape(x.shape[0], self.time_steps, self.rnn.input_size))
            return output[:, -1]

        def extra_repr(self) -> str:
            return f"time_steps={self.time_steps}"

    # pickled by name: pickle finds the class again through this module's __getattr__
    TorchSequenceEncoder.__module__, TorchSequenceEncoder.__qualname__ = __name__, "TorchSequenceEncoder"
    return TorchSequenceEncoder


def __getattr__(name: str):
    if name == "TorchSequenceEncoder":
        return _sequence_encoder_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------- tricklab -> torch
def to_torch(model: nn.Module):
    """The torch module computing what ``model`` computes, with a copy of its weights.

    A tricklab ``Sequential`` becomes a ``torch.nn.Sequential``, a single layer its torch layer.
    The torch module is in ``model.dtype`` (float32 or float64), has ``model.state_dict()``'s
    names and values, and every submodule has its tricklab twin's train/eval mode. A layer without
    a torch twin (see the module docstring) raises :class:`UnsupportedLayerError` (a ValueError)
    naming its position and class.
    """
    torch = _import_torch()
    if not isinstance(model, nn.Module):
        raise TypeError(f"to_torch expects a tricklab.nn Module, got {type(model).__name__}")
    twin = _build_torch(torch, model, "").to(_torch_dtype(torch, model.dtype))
    twin.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    twin_modules = dict(twin.named_modules())
    for name, m in model.named_modules():
        twin_modules[name].training = m.training
    return twin


def _build_torch(torch, m: nn.Module, path: str):
    if type(m) is nn.Sequential:
        return torch.nn.Sequential(*[_build_torch(torch, c, f"{path}.{i}" if path else str(i))
                                     for i, c in enumerate(m)])
    build = _TO_TORCH.get(type(m))
    if build is None:
        raise UnsupportedLayerError(f"to_torch: {_where(path)} ({type(m).__name__}) has no PyTorch equivalent; "
                         f"supported: {', '.join(sorted(['Sequential', *(c.__name__ for c in _TO_TORCH)]))}")
    return build(torch, m, path)


def _refuse(path: str, m: nn.Module, why: str):
    raise UnsupportedLayerError(f"to_torch: {_where(path)} ({type(m).__name__}) has no PyTorch equivalent: {why}")


def _linear_to_torch(torch, m: nn.Linear, path):
    return torch.nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)


def _conv_to_torch(torch, m: nn.Conv2d, path):
    return torch.nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                           dilation=m.dilation, groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode)


def _dropout_to_torch(torch, m: nn.Dropout, path):
    name = type(m).__name__
    if m.scaling != "inverted":
        _refuse(path, m, f"scaling={m.scaling!r} multiplies by 1 - p at eval, torch.nn.{name} is inverted; "
                         "export nn.fold_dropout_scaling(model) for inference")
    return getattr(torch.nn, name)(m.p)


def _batchnorm_to_torch(torch, m, path):
    name = type(m).__name__
    if m._selected is not None:
        _refuse(path, m, f"{m._selection}= normalizes selected {m._feature}s only, torch.nn.{name} normalizes all")
    return getattr(torch.nn, name)(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine)


def _recurrent_to_torch(torch, m, path):
    names = ("zoneout",) if isinstance(m, nn.RNN) else ("zoneout_h", "zoneout_c")
    zoneout = ", ".join(f"{k}={getattr(m, k)}" for k in names if getattr(m, k))
    if zoneout:
        _refuse(path, m, f"{zoneout}: torch's recurrent layers have no zoneout")
    kw = dict(num_layers=m.num_layers, bias=m.bias, batch_first=True)
    if isinstance(m, nn.RNN):
        return torch.nn.RNN(m.input_size, m.hidden_size, nonlinearity=m.nonlinearity, **kw)
    return torch.nn.LSTM(m.input_size, m.hidden_size, **kw)


def _sequence_encoder_to_torch(torch, m: nn.SequenceEncoder, path):
    rnn = _build_torch(torch, m.rnn, f"{path}.rnn" if path else "rnn")
    return _sequence_encoder_class()(rnn, m.time_steps)


_TO_TORCH = {
    nn.Linear: _linear_to_torch,
    nn.Conv2d: _conv_to_torch,
    nn.ReLU: lambda torch, m, path: torch.nn.ReLU(),
    nn.LeakyReLU: lambda torch, m, path: torch.nn.LeakyReLU(m.negative_slope),
    nn.Sigmoid: lambda torch, m, path: torch.nn.Sigmoid(),
    nn.Tanh: lambda torch, m, path: torch.nn.Tanh(),
    nn.Identity: lambda torch, m, path: torch.nn.Identity(),
    nn.Flatten: lambda torch, m, path: torch.nn.Flatten(m.start_dim, m.end_dim),
    nn.Dropout: _dropout_to_torch,
    nn.Dropout2d: _dropout_to_torch,
    nn.BatchNorm1d: _batchnorm_to_torch,
    nn.BatchNorm2d: _batchnorm_to_torch,
    nn.MaxPool2d: lambda torch, m, path: torch.nn.MaxPool2d(m.kernel_size, m.stride, m.padding),
    nn.AvgPool2d: lambda torch, m, path: torch.nn.AvgPool2d(m.kernel_size, m.stride, m.padding),
    nn.AdaptiveAvgPool2d: lambda torch, m, path: torch.nn.AdaptiveAvgPool2d(m.output_size),
    nn.RNN: _recurrent_to_torch,
    nn.LSTM: _recurrent_to_torch,
    nn.SequenceEncoder: _sequence_encoder_to_torch,
}


# ----------------------------------------------------------------------------- torch -> tricklab
def from_torch(module, rng: RngLike = None, dtype=None) -> nn.Module:
    """The tricklab model computing what the torch ``module`` computes, with a copy of its weights.

    The reverse of :func:`to_torch`: a ``torch.nn.Sequential`` becomes a tricklab ``Sequential``,
    a single torch layer its tricklab layer. ``dtype`` (float32 or float64) defaults to that of
    the module's floating tensors (float32 for a module without any, such as a lone ReLU); every
    submodule keeps its train/eval mode. Layers that draw random numbers (Dropout) get their own
    generators spawned from ``rng`` (a ``numpy.random.Generator``, a seed or None). A torch module
    tricklab has no twin for raises :class:`UnsupportedLayerError` naming its position and class.
    """
    torch = _import_torch()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"from_torch expects a torch.nn.Module, got {type(module).__name__}")
    dtype = _module_dtype(torch, module) if dtype is None else as_float_dtype(dtype)
    model = _build_tricklab(torch, module, "", dtype, as_generator(rng))
    # copies each tensor into the model's own arrays; strict, so no weight is left at its init
    model.load_state_dict(module.state_dict())
    torch_modules = dict(module.named_modules())
    for name, m in model.named_modules():
        object.__setattr__(m, "training", torch_modules[name].training)
    return model


def _module_dtype(torch, module) -> np.dtype:
    dtypes = {t.dtype for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()}
    known = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}
    if len(dtypes) > 1 or not dtypes <= set(known):
        raise TypeError(f"from_torch: the module's tensors are {sorted(map(str, dtypes))}; tricklab computes in one "
                        "dtype, float32 or float64: convert the module with .float() or .double() first")
    return known[dtypes.pop()] if dtypes else np.dtype(np.float32)


def _build_tricklab(torch, t, path: str, dtype: np.dtype, rng: np.random.Generator) -> nn.Module:
    if type(t) is torch.nn.Sequential:
        return nn.Sequential(*[_build_tricklab(torch, c, f"{path}.{i}" if path else str(i), dtype, rng)
                               for i, c in enumerate(t)])
    builders = _from_torch_builders(torch)
    build = builders.get(type(t))
    if build is None:
        raise UnsupportedLayerError(f"from_torch: {_where(path)} ({type(t).__name__}) has no tricklab "
                         f"equivalent; supported: {', '.join(sorted(['Sequential', *(c.__name__ for c in builders)]))}")
    try:
        return build(t, path, dtype, rng)
    except UnsupportedLayerError:
        raise
    except (TypeError, ValueError) as err:  # a value torch accepts and tricklab's layer refuses
        raise UnsupportedLayerError(f"from_torch: {_where(path)} ({type(t).__name__}): {err}") from err


def _unsupported(path: str, t, why: str):
    raise UnsupportedLayerError(f"from_torch: {_where(path)} ({type(t).__name__}) has {why}, "
                                "which tricklab does not support")


def _child(rng: np.random.Generator) -> np.random.Generator:
    return rng.spawn(1)[0]


def _recurrent_from_torch(t, path, dtype, rng):
    checks = [("batch_first=False", not t.batch_first), ("bidirectional=True", t.bidirectional),
              (f"dropout={t.dropout} between layers", t.dropout != 0), (f"proj_size={t.proj_size}", t.proj_size != 0)]
    for what, present in checks:
        if present:
            _unsupported(path, t, what)
    kw = dict(num_layers=t.num_layers, bias=t.bias, rng=_child(rng), dtype=dtype)
    if t.mode.startswith("RNN"):  # "RNN_TANH" or "RNN_RELU"; "LSTM" otherwise
        return nn.RNN(t.input_size, t.hidden_size, nonlinearity=t.nonlinearity, **kw)
    return nn.LSTM(t.input_size, t.hidden_size, **kw)


def _conv_from_torch(t, path, dtype, rng):
    return nn.Conv2d(t.in_channels, t.out_channels, t.kernel_size, stride=t.stride, padding=t.padding,
                     dilation=t.dilation, groups=t.groups, bias=t.bias is not None, padding_mode=t.padding_mode,
                     rng=_child(rng), dtype=dtype)


def _batchnorm_from_torch(t, path, dtype, rng):
    if not t.track_running_stats:
        _unsupported(path, t, "track_running_stats=False")
    return getattr(nn, type(t).__name__)(t.num_features, eps=t.eps, momentum=t.momentum, affine=t.affine, dtype=dtype)


# the settings of torch's pooling that tricklab's layers have only at these values
_POOL_FIXED = {"MaxPool2d": {"dilation": 1, "ceil_mode": False, "return_indices": False},
               "AvgPool2d": {"ceil_mode": False, "count_include_pad": True, "divisor_override": None}}


def _pool_from_torch(t, path, dtype, rng):
    name = type(t).__name__
    for setting, value in _POOL_FIXED[name].items():
        if getattr(t, setting) not in (value, (value, value)):
            _unsupported(path, t, f"{setting}={getattr(t, setting)!r}")
    return getattr(nn, name)(t.kernel_size, t.stride, t.padding, dtype=dtype)


def _sequence_encoder_from_torch(t, path, dtype, rng):
    rnn = _build_tricklab(_import_torch(), t.rnn, f"{path}.rnn" if path else "rnn", dtype, rng)
    return nn.SequenceEncoder(rnn, t.time_steps)


@functools.cache
def _from_torch_builders(torch) -> dict:
    """torch class -> f(module, path, dtype, rng) building its tricklab twin (weights loaded later)."""
    tn = torch.nn
    return {
        tn.Linear: lambda t, path, dtype, rng: nn.Linear(t.in_features, t.out_features, bias=t.bias is not None,
                                                         rng=_child(rng), dtype=dtype),
        tn.Conv2d: _conv_from_torch,
        tn.ReLU: lambda t, path, dtype, rng: nn.ReLU(dtype=dtype),
        tn.LeakyReLU: lambda t, path, dtype, rng: nn.LeakyReLU(t.negative_slope, dtype=dtype),
        tn.Sigmoid: lambda t, path, dtype, rng: nn.Sigmoid(dtype=dtype),
        tn.Tanh: lambda t, path, dtype, rng: nn.Tanh(dtype=dtype),
        tn.Identity: lambda t, path, dtype, rng: nn.Identity(dtype=dtype),
        tn.Flatten: lambda t, path, dtype, rng: nn.Flatten(t.start_dim, t.end_dim, dtype=dtype),
        tn.Dropout: lambda t, path, dtype, rng: nn.Dropout(t.p, rng=_child(rng), dtype=dtype),
        tn.BatchNorm1d: _batchnorm_from_torch,
        tn.BatchNorm2d: _batchnorm_from_torch,
        tn.Dropout2d: lambda t, path, dtype, rng: nn.Dropout2d(t.p, rng=_child(rng), dtype=dtype),
        tn.MaxPool2d: _pool_from_torch,
        tn.AvgPool2d: _pool_from_torch,
        tn.AdaptiveAvgPool2d: lambda t, path, dtype, rng: nn.AdaptiveAvgPool2d(t.output_size, dtype=dtype),
        tn.RNN: _recurrent_from_torch,
        tn.LSTM: _recurrent_from_torch,
        _sequence_encoder_class(): _sequence_encoder_from_torch,
    }
