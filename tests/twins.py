"""PyTorch twins of tricklab modules, for parity tests (the micrograd habit: compute it twice)."""

from __future__ import annotations

import numpy as np
import torch

from tricklab import nn

TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def torch_twin(module: nn.Module) -> torch.nn.Module:
    """A torch module with the same structure and the same weights as ``module``."""
    twin = _build(module).to(TORCH_DTYPE[module.dtype])
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in module.state_dict().items()})
    twin.train(module.training)
    return twin


def _build(m: nn.Module) -> torch.nn.Module:
    if isinstance(m, nn.Sequential):
        return torch.nn.Sequential(*[_build(c) for c in m])
    if isinstance(m, nn.Linear):
        return torch.nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    if isinstance(m, nn.BatchNorm1d):
        return torch.nn.BatchNorm1d(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine)
    simple = {nn.ReLU: torch.nn.ReLU, nn.Sigmoid: torch.nn.Sigmoid, nn.Tanh: torch.nn.Tanh,
              nn.Identity: torch.nn.Identity}
    if type(m) in simple:
        return simple[type(m)]()
    if isinstance(m, nn.LeakyReLU):
        return torch.nn.LeakyReLU(m.negative_slope)
    if isinstance(m, nn.Dropout):
        return torch.nn.Dropout(m.p)
    if isinstance(m, nn.Flatten):
        return torch.nn.Flatten(m.start_dim, m.end_dim)
    raise TypeError(f"no torch twin for {type(m).__name__}")


def tol(dtype) -> dict:
    """Parity tolerances: float64 to about 1e-10, float32 to about 1e-5."""
    return dict(rtol=1e-10, atol=1e-10) if np.dtype(dtype) == np.float64 else dict(rtol=1e-5, atol=1e-5)


def compare_forward_backward(module: nn.Module, x: np.ndarray, seed: int = 0) -> None:
    """Forward, input gradient and every parameter gradient equal the torch twin's."""
    twin = torch_twin(module)
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
