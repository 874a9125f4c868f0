"""A model summary as Keras' ``model.summary()`` and torchinfo print it: each layer, its output
shape for one example, its parameter count, and the total."""

from __future__ import annotations

from .module import Module


def parameter_count(module: Module) -> int:
    return int(sum(p.data.size for p in module.parameters()))


def summary_rows(model: Module, input_shape: tuple[int, ...]) -> list[tuple[str, str, tuple[int, ...], int]]:
    """(index, layer, output shape, parameters) for each top-level layer of ``model``."""
    layers = list(model) if hasattr(model, "__iter__") else [model]
    rows, shape = [], tuple(input_shape)
    for i, layer in enumerate(layers):
        shape = layer.output_shape(shape)
        rows.append((str(i), _describe(layer), shape, parameter_count(layer)))
    return rows


def _describe(layer: Module) -> str:
    extra = layer.extra_repr()
    return f"{type(layer).__name__}({extra})" if extra else type(layer).__name__


def summary(model: Module, input_shape: tuple[int, ...]) -> str:
    """The summary as text, for examples of ``input_shape`` (batch axis left out)."""
    rows = summary_rows(model, input_shape)
    table = [("#", "layer", "output shape", "parameters")]
    table += [(i, name, str(shape), f"{n:,}") for i, name, shape, n in rows]
    widths = [max(len(r[c]) for r in table) for c in range(4)]
    lines = [f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}" for r in table]
    rule = "-" * len(lines[0])
    total = sum(n for *_, n in rows)
    return "\n".join([lines[0], rule, *lines[1:], rule, f"total parameters: {total:,} (input {tuple(input_shape)})"])
