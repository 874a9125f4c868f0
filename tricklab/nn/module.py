"""The module protocol: forward caches what backward needs; backward returns dLoss/dx.

Every layer in tricklab is a :class:`Module` that writes out both passes by hand::

    y  = m(x)            # forward: computes y, caches what the backward pass needs
    gx = m.backward(gy)  # backward: given dLoss/dy returns dLoss/dx and *adds* into p.grad

The order matters (the lecture's correction): ``backward`` computes the gradient for the previous
layer with the weights as they were in the forward pass; the optimizer changes weights only after
the whole backward pass is done.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Iterator

import numpy as np

from .inference import inference_mode
from .parameter import Parameter

DEFAULT_DTYPE = np.float32


def as_float_dtype(dtype) -> np.dtype:
    """Validate a ``dtype=`` argument: float32 or float64."""
    dt = np.dtype(dtype if dtype is not None else DEFAULT_DTYPE)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


class Module:
    """Base class of every layer: parameters, buffers, children, train/eval mode, state_dict.

    Subclasses implement ``forward(x)`` and ``backward(grad_output)``. Attributes assigned a
    :class:`Parameter` or a :class:`Module` are registered automatically (as in PyTorch); buffers
    (non-trainable state such as batch-norm statistics) are registered with ``register_buffer``.
    """

    def __init__(self, dtype=None):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "dtype", as_float_dtype(dtype))

    # ----------------------------------------------------------------- registration
    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif name in self._parameters and value is None:
            self._parameters[name] = None
        elif name in self._buffers:
            self._buffers[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._buffers.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, value: np.ndarray) -> None:
        """Non-trainable state that belongs in ``state_dict`` (e.g. ``running_mean``)."""
        self._buffers[name] = value
        object.__setattr__(self, name, value)

    def register_parameter(self, name: str, value: Parameter | None) -> None:
        self._parameters[name] = value
        object.__setattr__(self, name, value)

    # ----------------------------------------------------------------- passes
    def forward(self, x):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_output):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def backward_parameters(self, grad_output) -> None:
        """Backward for a module whose input is data: only the parameters' gradients are wanted.

        Adds into every ``p.grad`` exactly as ``backward`` does; work that serves only dLoss/dx
        may be skipped (Linear skips the product g W). Returns None.
        """
        self.backward(grad_output)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one example's output for one example's input shape (batch axis left out),
        computed without running the layer. Elementwise layers keep the shape; others override."""
        return tuple(input_shape)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def _cast_input(self, x, name: str = "input") -> np.ndarray:
        """Cast a floating input to the module's dtype; refuse integers and booleans clearly."""
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(
                f"{type(self).__name__} expected a floating-point {name}, got dtype {x.dtype}; "
                f"convert it first, e.g. x.astype(np.float32)"
            )
        return x if x.dtype == self.dtype else x.astype(self.dtype)

    def _saved(self, attr: str):
        """The value cached by forward for backward, or a clear error if forward was not run."""
        value = getattr(self, attr, None)
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return value

    def _scratch(self, attr: str, shape: tuple[int, ...]) -> np.ndarray:
        """An internal work array of this module's dtype, kept and reused by every call.

        Only for caches and temporaries that never leave the module: it is overwritten by the
        next call, so it must not be returned to a caller. Reusing it spares the allocator (large
        arrays are otherwise returned to the OS and faulted back in at every step).
        """
        buf = self.__dict__.get(attr)
        if buf is None or buf.shape != shape or buf.dtype != self.dtype:
            buf = np.empty(shape, dtype=self.dtype)
            object.__setattr__(self, attr, buf)
        return buf

    def _scratch_view(self, attr: str, shape: tuple[int, ...]) -> np.ndarray:
        """Like :meth:`_scratch`, but a contiguous view of the first prod(``shape``) entries of a
        flat buffer that only grows: work arrays of varying sizes (a smaller last chunk) share it."""
        size = math.prod(shape)
        buf = self.__dict__.get(attr)
        if buf is None or buf.size < size or buf.dtype != self.dtype:
            buf = np.empty(size, dtype=self.dtype)
            object.__setattr__(self, attr, buf)
        return buf[:size].reshape(shape)

    # ----------------------------------------------------------------- traversal
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def children(self) -> Iterator["Module"]:
        return (m for m in self._modules.values() if m is not None)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for mod_name, mod in self.named_modules(prefix):
            for name, p in mod._parameters.items():
                if p is not None:
                    yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for mod_name, mod in self.named_modules(prefix):
            for name, b in mod._buffers.items():
                if b is not None:
                    yield (f"{mod_name}.{name}" if mod_name else name), b

    # ----------------------------------------------------------------- modes and grads
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def predict(self, x, batch_size: int = 1024) -> np.ndarray:
        """The outputs for ``x`` in eval mode, ``batch_size`` examples at a time (large inputs do not
        hold every layer's activations at once); the modules' train/eval modes are restored after.
        Runs in :func:`~tricklab.nn.inference.inference_mode` (nothing kept for backward, each layer's
        output array reused), copying each batch's output."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"predict: batch_size must be a positive integer, got {batch_size!r}")
        x = np.asarray(x)
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            with inference_mode():
                parts = [np.array(self(x[i:i + batch_size]), copy=True) for i in range(0, len(x), batch_size)]
        finally:
            for m, mode in modes:
                object.__setattr__(m, "training", mode)
        if not parts:
            raise ValueError("predict: x holds no examples")
        return np.concatenate(parts)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()

    def to(self, dtype) -> "Module":
        """Convert every parameter and floating buffer of this module and its children in place."""
        dt = as_float_dtype(dtype)
        for m in self.modules():
            object.__setattr__(m, "dtype", dt)
            for p in m._parameters.values():
                if p is not None:
                    p.astype_(dt)
            for name, b in list(m._buffers.items()):
                if b is not None and np.issubdtype(b.dtype, np.floating):
                    m.register_buffer(name, b.astype(dt))
            m._on_dtype_change()
        return self

    def _on_dtype_change(self) -> None:
        """Hook for modules that keep derived arrays (scratch buffers) of the old dtype."""

    def double(self) -> "Module":
        return self.to(np.float64)

    def float(self) -> "Module":
        return self.to(np.float32)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Name -> copy of every parameter and buffer, with PyTorch's names and shapes."""
        out: OrderedDict[str, np.ndarray] = OrderedDict()
        for mod_name, mod in self.named_modules():
            for name, p in mod._parameters.items():
                if p is not None:
                    out[f"{mod_name}.{name}" if mod_name else name] = p.data.copy()
            for name, b in mod._buffers.items():
                if b is not None:
                    out[f"{mod_name}.{name}" if mod_name else name] = np.array(b, copy=True)
        return out

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays into parameters and buffers, cast to each one's dtype (as torch does).

        ``state`` maps names to arrays (NumPy arrays, or anything ``np.asarray`` accepts, such as
        CPU torch tensors). The names expected are those ``state_dict`` writes: a parameter or
        buffer set to None (``Linear(..., bias=False)``) has none, as in torch. With ``strict``
        missing or unexpected keys raise ``KeyError``; a shape mismatch always raises
        ``ValueError`` naming the key.
        """
        own = {}
        for mod_name, mod in self.named_modules():
            for name, value in list(mod._parameters.items()) + list(mod._buffers.items()):
                if value is not None:
                    own[f"{mod_name}.{name}" if mod_name else name] = (mod, name)
        if strict:
            missing = sorted(set(own) - set(state))
            unexpected = sorted(set(state) - set(own))
            if missing or unexpected:
                raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for key, value in state.items():
            if key not in own:
                continue
            mod, name = own[key]
            arr = _to_numpy(value)
            if name in mod._parameters:
                p = mod._parameters[name]
                if arr.shape != p.data.shape:
                    raise ValueError(f"load_state_dict: '{key}' has shape {arr.shape}, expected {p.data.shape}")
                p.data[...] = arr.astype(p.data.dtype, copy=False)
            else:
                b = mod._buffers[name]
                if arr.shape != np.shape(b):
                    raise ValueError(f"load_state_dict: '{key}' has shape {arr.shape}, expected {np.shape(b)}")
                mod.register_buffer(name, np.array(arr, dtype=b.dtype, copy=True))

    # ----------------------------------------------------------------- display
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        if self._modules:
            for name, child in self._modules.items():
                body = repr(child).replace("\n", "\n  ")
                lines.append(f"\n  ({name}): {body}")
            lines.append("\n")
        lines.append(")")
        return "".join(lines)


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor: no torch import needed
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _common_dtype(layers) -> np.dtype | None:
    """The dtype of the layers that hold state; parameter-free layers follow it."""
    stateful = {m.dtype for layer in layers for m in layer.modules() if m._parameters or m._buffers}
    if len(stateful) > 1:
        raise TypeError(f"Sequential got layers of different dtypes {sorted(map(str, stateful))}; convert them with .to(dtype)")
    if stateful:
        return stateful.pop()
    return layers[0].dtype if layers else None


class Sequential(Module):
    """Modules applied in order: ``y = f_n(...f_2(f_1(x)))``; backward runs them in reverse.

    Children are named "0", "1", ... so ``state_dict`` keys match ``torch.nn.Sequential``.

    ``input_grad=False`` says the input is data, like a torch input without ``requires_grad``:
    ``backward`` then returns None and skips what serves only dLoss/dx (the layers before the
    first one with parameters, and that layer's input gradient: for a first Linear layer on 784
    pixels, about a tenth of an MLP step's multiply-adds). Parameter gradients are unchanged.
    """

    def __init__(self, *layers: Module, input_grad: bool = True):
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential argument {i} is {type(layer).__name__}, not a Module")
        super().__init__(dtype=_common_dtype(layers))
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)
        self.input_grad = bool(input_grad)
        self.to(self.dtype)

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, idx):
        layers = list(self._modules.values())
        if isinstance(idx, slice):
            return Sequential(*layers[idx])
        return layers[idx]

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, layer: Module) -> "Sequential":
        setattr(self, str(len(self._modules)), layer.to(self.dtype))
        return self

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x

    def backward(self, grad_output):
        if not self.input_grad:
            return self.backward_parameters(grad_output)
        for layer in reversed(self._modules.values()):
            grad_output = layer.backward(grad_output)
        return grad_output

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        for layer in self._modules.values():
            input_shape = layer.output_shape(input_shape)
        return tuple(input_shape)

    def backward_parameters(self, grad_output) -> None:
        layers = list(self._modules.values())
        first = next((i for i, m in enumerate(layers) if next(m.parameters(), None) is not None), None)
        if first is None:
            return None
        for layer in reversed(layers[first + 1:]):
            grad_output = layer.backward(grad_output)
        layers[first].backward_parameters(grad_output)
        return None
