"""Gradient clipping against torch.nn.utils.clip_grad_value_ / clip_grad_norm_."""

import math

import numpy as np
import pytest
import torch

from tricklab.nn import Parameter
from tricklab.optim import clip_grad_norm_, clip_grad_value_

SHAPES = [(5, 4), (4,), (3, 2, 2)]


def twins(dtype=np.float64, scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    ours, theirs = [], []
    for s in SHAPES:
        p = Parameter(np.zeros(s, dtype))
        p.grad[...] = scale * rng.standard_normal(s)
        q = torch.nn.Parameter(torch.zeros(s, dtype=torch.float64 if dtype == np.float64 else torch.float32))
        q.grad = torch.from_numpy(p.grad.copy())
        ours.append(p)
        theirs.append(q)
    return ours, theirs


def assert_grads(ours, theirs, **tol):
    for p, q in zip(ours, theirs):
        assert p.grad.dtype == p.data.dtype
        np.testing.assert_allclose(p.grad, q.grad.numpy(), **tol)


@pytest.mark.parametrize("clip_value", [5.0, 1.0, 0.0])
def test_clip_value_equals_torch(clip_value):
    ours, theirs = twins(scale=4.0)
    clip_grad_value_(ours, clip_value)
    torch.nn.utils.clip_grad_value_(theirs, clip_value)
    assert_grads(ours, theirs, rtol=0, atol=0)
    assert all(np.abs(p.grad).max() <= clip_value for p in ours)


def test_clip_value_default_is_five_and_in_place():
    p = Parameter(np.zeros(4, np.float32))
    grad = p.grad
    grad[...] = [-7.0, -5.0, 2.0, 9.0]
    clip_grad_value_(p)
    assert p.grad is grad and grad.dtype == np.float32
    np.testing.assert_array_equal(grad, [-5.0, -5.0, 2.0, 5.0])


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
@pytest.mark.parametrize("max_norm", [1.0, 1e6])
def test_clip_norm_equals_torch(norm_type, max_norm, dtype, tol):
    ours, theirs = twins(dtype)
    total = clip_grad_norm_((p for p in ours), max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert isinstance(total, float)
    assert total == pytest.approx(expected.item(), rel=tol)
    assert_grads(ours, theirs, rtol=tol, atol=tol)
    clipped = np.linalg.norm(np.concatenate([p.grad.ravel() for p in ours]), norm_type)
    assert clipped <= max_norm * (1 + tol)


def test_clip_norm_leaves_small_gradients_untouched():
    ours, _ = twins()
    before = [p.grad.copy() for p in ours]
    clip_grad_norm_(ours, 1e6)
    for p, b in zip(ours, before):
        np.testing.assert_array_equal(p.grad, b)


def test_clip_norm_single_parameter_and_empty():
    p = Parameter(np.zeros(2))
    p.grad[...] = [3.0, 4.0]
    assert clip_grad_norm_(p, 1.0) == 5.0
    np.testing.assert_allclose(p.grad, [3.0 / (5 + 1e-6), 4.0 / (5 + 1e-6)], rtol=1e-15)
    assert clip_grad_norm_([], 1.0) == 0.0
    with pytest.warns(UserWarning, match="empty generator"):
        clip_grad_norm_((q for q in []), 1.0)


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_clip_norm_nonfinite(bad):
    ours, theirs = twins()
    ours[1].grad[2] = bad
    theirs[1].grad[2] = bad
    with pytest.raises(RuntimeError, match="error_if_nonfinite"):
        clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError):
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, error_if_nonfinite=True)
    total = clip_grad_norm_(ours, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    np.testing.assert_equal(total, expected.item())
    assert_grads(ours, theirs, rtol=0, atol=0)  # NaN where torch has NaN, 0 where torch has 0


def test_bad_arguments_raise():
    p = Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="clip_value must be >= 0"):
        clip_grad_value_(p, -1.0)
    with pytest.raises(ValueError, match="max_norm must be >= 0"):
        clip_grad_norm_(p, -1.0)
