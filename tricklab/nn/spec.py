"""A network from a list of layer specifications; the layer classes of :mod:`tricklab.nn` are the registry.

A specification is a table naming a layer class by its class name and giving its constructor's
keyword arguments, with PyTorch's names (TOML ``[[model.layers]]`` entries)::

    [{"type": "Linear", "out_features": 512, "bias": False}, {"type": "BatchNorm1d"},
     {"type": "ReLU"}, {"type": "Dropout", "p": 0.3}, {"type": "Linear"}]

Nothing is declared twice: the arguments are checked against the class's own signature and type
hints, and its constructor checks the ranges. Input sizes (``in_features``, ``num_features``,
``in_channels``, ``input_size``) follow from the previous layer's :meth:`Module.output_shape`;
the last layer's width (``out_features``/``out_channels``) may be left out and is then the
number of outputs the data asks for. A layer taking ``rng`` gets its own generator, spawned
from the run's seed sequence in the order of the list, so a run is bit-reproducible.
A layer argument annotated as a module (``SequenceEncoder``'s ``rnn``) is a nested table.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from functools import cache

import numpy as np

from .module import Module, Sequential

INFERRED_FIRST = ("num_features", "in_channels")  # the channel axis: shape[0]
INFERRED_LAST = ("in_features", "input_size")     # the feature axis of flat examples or of one time step
WIDTHS = ("out_features", "out_channels")
SET_BY_RUN = {"rng": "run.seed", "dtype": "train.dtype"}
TUPLE_OUTPUT = ("RNN", "LSTM")  # return (output, state): only inside a SequenceEncoder


class LayerSpecError(ValueError):
    """A layer specification names an unknown class or argument, or a value its class refuses."""


@cache
def layer_classes() -> dict[str, type]:
    """Every layer class exported by :mod:`tricklab.nn`, by class name (losses excluded)."""
    from . import loss as loss_
    from .. import nn

    out = {}
    for name in nn.__all__:
        obj = getattr(nn, name)
        if (isinstance(obj, type) and issubclass(obj, Module) and obj not in (Module, Sequential)
                and not issubclass(obj, loss_._Loss)):
            out[name] = obj
    return out


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _signature(cls: type) -> tuple[dict[str, inspect.Parameter], dict[str, object]]:
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self", None)
    params = {k: p for k, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    try:
        hints = typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):
        hints = {}
    return params, hints


def _allowed(hint) -> tuple[type, ...] | None:
    """The plain types a TOML value may have for a type hint (None: anything; the class checks)."""
    if hint in (int, float, bool, str):
        return {int: (int,), float: (int, float), bool: (bool,), str: (str,)}[hint]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_allowed(a) for a in typing.get_args(hint) if a is not type(None)]
        if any(p is None for p in parts):
            return None
        return tuple(t for p in parts for t in p)
    return None


def _module_hint(hint) -> bool:
    return isinstance(hint, type) and issubclass(hint, Module)


def _type_name(kinds: tuple[type, ...]) -> str:
    return " or ".join(dict.fromkeys("float" if t is float else t.__name__ for t in kinds))


def check_spec(spec, where: str, nested: bool = False) -> tuple[type, dict]:
    """The class and keyword arguments of one specification, checked against the class's signature."""
    if not isinstance(spec, dict):
        raise LayerSpecError(f"{where} must be a table with a 'type' key, got {type(spec).__name__} {spec!r}")
    if "type" not in spec:
        raise LayerSpecError(f"{where} has no 'type' key naming a layer class (e.g. type = \"Linear\")")
    name, kwargs = spec["type"], {k: v for k, v in spec.items() if k != "type"}
    classes = layer_classes()
    if name not in classes:
        raise LayerSpecError(f"{where}: unknown layer type {name!r}{_suggest(str(name), classes)}")
    if name in TUPLE_OUTPUT and not nested:
        raise LayerSpecError(f"{where} ({name}) returns (output, state); wrap it: "
                             f"{{type = \"SequenceEncoder\", time_steps = T, rnn = {{type = \"{name}\", ...}}}}")
    cls = classes[name]
    where = f"{where} ({name})"
    params, hints = _signature(cls)
    for key, value in kwargs.items():
        if key in SET_BY_RUN:
            raise LayerSpecError(f"{where}: {key} is set by the run ({SET_BY_RUN[key]}), not per layer")
        if key not in params:
            options = [p for p in params if p not in SET_BY_RUN]
            takes = f"arguments: {', '.join(options)}" if options else "it takes no arguments"
            raise LayerSpecError(f"{where}: unknown argument {key!r}{_suggest(key, options)} ({takes})")
        hint = hints.get(key)
        if _module_hint(hint):
            check_spec(value, f"{where}.{key}", nested=True)
            continue
        kinds = _allowed(hint)
        bad_bool = isinstance(value, bool) and bool not in (kinds or (bool,))
        if kinds is not None and (bad_bool or not isinstance(value, kinds)):
            raise LayerSpecError(f"{where}: {key} must be of type {_type_name(kinds)}, "
                                 f"got {type(value).__name__} {value!r}")
    return cls, kwargs


def _missing(cls: type, kwargs: dict, inferable: set[str], where: str) -> None:
    params, _ = _signature(cls)
    for key, p in params.items():
        if p.default is p.empty and key not in kwargs and key not in inferable and key not in SET_BY_RUN:
            raise LayerSpecError(f"{where} ({cls.__name__}): missing required argument {key!r}")


def check_specs(specs, where: str = "model.layers") -> None:
    """Check every specification without building (names, types, required arguments)."""
    if not isinstance(specs, list):
        raise LayerSpecError(f"{where} must be an array of tables, got {type(specs).__name__}")
    last_width = _last_width_index(specs)
    for i, spec in enumerate(specs):
        cls, kwargs = check_spec(spec, f"{where}.{i}")
        inferable = set(INFERRED_FIRST + INFERRED_LAST) | (set(WIDTHS) if i == last_width else set())
        _missing(cls, kwargs, inferable, f"{where}.{i}")


def _last_width_index(specs) -> int | None:
    classes = layer_classes()
    for i in range(len(specs) - 1, -1, -1):
        cls = classes.get(specs[i].get("type")) if isinstance(specs[i], dict) else None
        if cls is not None and any(w in _signature(cls)[0] for w in WIDTHS):
            return i
    return None


def _infer(cls: type, kwargs: dict, shape: tuple[int, ...], where: str) -> dict:
    """``kwargs`` with the input size taken from ``shape``; an explicit size must agree."""
    params, _ = _signature(cls)
    out = dict(kwargs)
    for key in INFERRED_FIRST + INFERRED_LAST:
        if key not in params:
            continue
        if key in INFERRED_LAST and key == "in_features" and len(shape) != 1:
            raise LayerSpecError(f"{where}: {key} needs flat examples, but the input has shape {shape}; "
                                 "put a Flatten before it")
        size = shape[0] if key in INFERRED_FIRST else shape[-1]
        if key in kwargs and kwargs[key] != size:
            raise LayerSpecError(f"{where}: {key} = {kwargs[key]} disagrees with the input, which has {size} "
                                 f"(shape {shape})")
        out[key] = size
    return out


def _construct(cls: type, kwargs: dict, where: str) -> Module:
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise LayerSpecError(f"{where}: {exc}") from None


def build_layer(spec: dict, input_shape: tuple[int, ...], seeds: np.random.SeedSequence, where: str,
                width: int | None = None, nested: bool = False) -> Module:
    """One layer from its specification, for examples of ``input_shape``; ``width`` fills a missing
    ``out_features``/``out_channels``."""
    cls, kwargs = check_spec(spec, where, nested=nested)
    where = f"{where} ({cls.__name__})"
    params, hints = _signature(cls)
    kwargs = _infer(cls, kwargs, tuple(input_shape), where)
    for key in WIDTHS:
        if key in params and key not in kwargs and width is not None:
            kwargs[key] = width
    for key, value in list(kwargs.items()):
        if _module_hint(hints.get(key)):
            inner_shape = cls.inner_input_shape(tuple(input_shape), **{k: v for k, v in kwargs.items() if k != key})
            kwargs[key] = build_layer(value, inner_shape, seeds, f"{where}.{key}", nested=True)
    _missing(cls, kwargs, set(), where.rsplit(" (", 1)[0])  # _missing names the class itself
    if "rng" in params:
        kwargs["rng"] = np.random.default_rng(seeds.spawn(1)[0])
    return _construct(cls, kwargs, where)


def build_layers(specs: list[dict], input_shape: tuple[int, ...], n_outputs: int | None,
                 seeds: np.random.SeedSequence, dtype=np.float32, where: str = "model.layers") -> Sequential:
    """A :class:`Sequential` of the specified layers for examples of ``input_shape`` (batch axis left out).

    Each layer's output shape is computed before the next is built, so a size that does not fit
    is an error naming the layer, not a failure at the first batch.
    """
    check_specs(specs, where)
    last_width = _last_width_index(specs)
    shape, layers = tuple(input_shape), []
    for i, spec in enumerate(specs):
        layer = build_layer(spec, shape, seeds, f"{where}.{i}", width=n_outputs if i == last_width else None)
        try:
            shape = layer.output_shape(shape)
        except ValueError as exc:
            raise LayerSpecError(f"{where}.{i} ({type(layer).__name__}): {exc}") from None
        layers.append(layer)
    if n_outputs is not None and shape != (n_outputs,):
        at = f"{where}.{last_width} ({specs[last_width]['type']})" if last_width is not None else where
        raise LayerSpecError(f"{at}: the network ends in examples of shape {shape}, but the data needs "
                             f"{n_outputs} outputs (leave the last width out to take it from the data)")
    return Sequential(*layers).to(np.dtype(dtype))
