"""Parity tests against PyTorch (the micrograd habit: compute it twice); every twin is
``tricklab.export.to_torch`` of the module, so the tests exercise the export they rely on."""

from __future__ import annotations

import copy

import numpy as np
import torch

from tests import rounding
from tricklab import export, nn

TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def tol(dtype) -> dict:
    """Parity tolerances: float64 to about 1e-10, float32 to about 1e-5."""
    return dict(rtol=1e-10, atol=1e-10) if np.dtype(dtype) == np.float64 else dict(rtol=1e-5, atol=1e-5)


def compare_forward_backward(module: nn.Module, x: np.ndarray, seed: int = 0) -> None:
    """Forward, input gradient and every parameter gradient equal the torch twin's."""
    twin = export.to_torch(module)
    gy_rng = np.random.default_rng(seed)
    y = module(x)
    gy = gy_rng.standard_normal(y.shape).astype(module.dtype)
    module.zero_grad()
    gx = module.backward(gy)
    xt = torch.from_numpy(np.array(x, dtype=module.dtype)).requires_grad_(True)
    yt = twin(xt)
    yt.backward(torch.from_numpy(gy))
    t = tol(module.dtype)
    np.testing.assert_allclose(y, yt.detach().numpy(), **t)
    np.testing.assert_allclose(gx, xt.grad.numpy(), **t)
    torch_params = dict(twin.named_parameters())
    for name, p in module.named_parameters():
        np.testing.assert_allclose(p.grad, torch_params[name].grad.numpy(), err_msg=name, **t)
    for name, buf in module.named_buffers():
        np.testing.assert_allclose(buf, twin.state_dict()[name].numpy(), err_msg=name, **t)


def _torch_pass(twin: torch.nn.Module, x: np.ndarray, gy: np.ndarray) -> dict[str, np.ndarray]:
    dtype = next(twin.parameters()).dtype
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    yt = twin(xt)
    yt.backward(torch.tensor(gy, dtype=dtype))
    out = {"output": yt.detach().numpy(), "input_grad": xt.grad.numpy()}
    out.update({name: p.grad.numpy() for name, p in twin.named_parameters()})
    out.update({name: b.numpy() for name, b in twin.named_buffers()})
    return out


def compare_with_float64_reference(module: nn.Sequential, x: np.ndarray, seed: int = 0) -> None:
    """tricklab and torch, both in the module's dtype, agree with torch in float64 to rounding error.

    The inputs, weights and output gradient are the module-dtype values (float32 widened exactly
    for the reference). Each entry is allowed the first-order rounding bound of
    :mod:`tests.rounding` for its own computation, SAFETY (u + u64) e, with e the accumulated sum
    of |terms| (so a float32 batch-norm gradient that cancels to 1e-4 of its terms is allowed what
    its terms imply, and a well-conditioned entry only a few ulps). The bound model itself must
    reproduce the float64 reference, to float64 rounding, so that e is computed for the right values.
    """
    unit = rounding.UNIT[module.dtype]
    x = np.asarray(x, dtype=module.dtype)
    gy_shape = copy.deepcopy(module)(x).shape  # a copy: the forward pass moves the running statistics
    gy = np.random.default_rng(seed).standard_normal(gy_shape).astype(module.dtype)
    twin = export.to_torch(module)
    reference_twin = export.to_torch(module).double()  # float64 holds float32 weights exactly
    bounds = rounding.mlp_bounds(module, x, gy)
    y = module(x)
    module.zero_grad()
    ours = {"output": y, "input_grad": module.backward(gy)}
    ours.update({name: p.grad for name, p in module.named_parameters()})
    ours.update(dict(module.named_buffers()))
    theirs, reference = _torch_pass(twin, x, gy), _torch_pass(reference_twin, x, gy)
    assert sorted(ours) == sorted(reference)
    for name, ref in reference.items():
        if name not in bounds:  # num_batches_tracked: an integer count
            np.testing.assert_array_equal(ours[name], ref, err_msg=name)
            continue
        rounding.assert_within_bound(bounds[name].v, ref, bounds[name], rounding.UNIT[np.dtype(np.float64)],
                                     f"bound model {name}")
        rounding.assert_within_bound(ours[name], ref, bounds[name], unit, f"tricklab {name}")
        rounding.assert_within_bound(theirs[name], ref, bounds[name], unit, f"torch {name}")
