"""Inference mode: forward passes that keep nothing for backward and write into reused output arrays.

Outside inference mode every forward returns a fresh array and keeps what backward needs, in
eval mode too (gradients of an eval-mode network are legitimate: gradient checks, input
attributions, the grader's dropout checks). Inside ``with inference_mode():`` the layers that
support it (Linear, BatchNorm1d/2d, the activations, Dropout) instead

- keep nothing for backward and drop what an earlier forward kept, so a ``backward`` after an
  inference-mode forward raises "backward called before forward" instead of using stale arrays;
- write their output into an array the layer keeps and reuses on its next inference-mode call
  with the same shape and dtype: an output is valid until that layer runs again, so copy what you
  keep (``Module.predict`` copies each batch). A layer called twice in one forward pass (a shared
  activation object) has consumed its first output by then in a chain, as in ``Sequential``.

It is orthogonal to train/eval, as ``torch.inference_mode``: a layer in training mode (dropout
drawing masks, batch norm with batch statistics) runs its training forward as usual; use it with
``model.eval()``. The arrays kept are one output per layer, freed with the model.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import numpy as np

_ACTIVE: ContextVar[bool] = ContextVar("tricklab_inference_mode", default=False)
OUTPUT = "_inference_output"


@contextmanager
def inference_mode(enabled: bool = True) -> Iterator[None]:
    """Run the forward passes inside the block in inference mode (``enabled=False``: outside it)."""
    token = _ACTIVE.set(bool(enabled))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def is_inference_mode() -> bool:
    """True inside ``inference_mode()``."""
    return _ACTIVE.get()


def output_buffer(module, shape: tuple[int, ...]) -> np.ndarray:
    """The array ``module``'s inference-mode forward writes its output of ``shape`` into, reused by
    its next inference-mode call (a new one when the shape or the module's dtype changed)."""
    return module._scratch(OUTPUT, tuple(shape))
