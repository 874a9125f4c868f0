import numpy as np
import pytest
import torch

from tests.twins import tol
from tricklab import nn
from tricklab.check import gradcheck


def _torch_grad(torch_loss, pred, target):
    p = torch.from_numpy(pred).requires_grad_(True)
    value = torch_loss(p, torch.from_numpy(target))
    value.backward()
    return value.item(), p.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch", [1, 13])
def test_cross_entropy_matches_torch(rng, dtype, batch):
    z = (rng.standard_normal((batch, 7)) * 5).astype(dtype)
    d = rng.integers(0, 7, size=batch)
    crit = nn.CrossEntropyLoss(dtype=dtype)
    value = crit(z, d)
    ref_value, ref_grad = _torch_grad(torch.nn.CrossEntropyLoss(), z, d)
    assert isinstance(value, float)
    np.testing.assert_allclose(value, ref_value, **tol(dtype))
    np.testing.assert_allclose(crit.backward(), ref_grad, **tol(dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mse_and_bce_match_torch(rng, dtype):
    pred = rng.standard_normal((6, 3)).astype(dtype)
    for crit, ref, target in [
        (nn.MSELoss(dtype=dtype), torch.nn.MSELoss(), rng.standard_normal((6, 3)).astype(dtype)),
        (nn.BCEWithLogitsLoss(dtype=dtype), torch.nn.BCEWithLogitsLoss(), rng.random((6, 3)).astype(dtype)),
    ]:
        value = crit(pred, target)
        ref_value, ref_grad = _torch_grad(ref, pred, target)
        np.testing.assert_allclose(value, ref_value, **tol(dtype))
        np.testing.assert_allclose(crit.backward(), ref_grad, **tol(dtype))


def test_cross_entropy_is_stable_for_huge_logits():
    crit = nn.CrossEntropyLoss(dtype=np.float64)
    value = crit(np.array([[1e4, 0.0, -1e4]]), np.array([1]))
    assert np.isfinite(value) and value == pytest.approx(1e4)
    assert np.all(np.isfinite(crit.backward()))


def test_losses_gradcheck(rng):
    pred = rng.standard_normal((5, 4))
    assert gradcheck(nn.CrossEntropyLoss(), pred, rng.integers(0, 4, 5)).checked == 20
    assert gradcheck(nn.MSELoss(), pred, rng.standard_normal((5, 4))).ok
    assert gradcheck(nn.BCEWithLogitsLoss(), pred, rng.random((5, 4))).ok


def test_nan_in_prediction_is_a_clear_error():
    z = np.zeros((2, 3))
    z[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: prediction contains NaN.*\(1, 2\)"):
        nn.CrossEntropyLoss()(z, np.array([0, 1]))
    with pytest.raises(ValueError, match="MSELoss: target contains NaN"):
        nn.MSELoss()(np.zeros(2), np.array([0.0, np.nan]))


def test_cross_entropy_target_errors():
    z = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(TypeError, match="integer class indices"):
        nn.CrossEntropyLoss()(z, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"target classes must lie in \[0, 3\)"):
        nn.CrossEntropyLoss()(z, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"target has shape \(3,\), expected \(2,\)"):
        nn.CrossEntropyLoss()(z, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"target has shape \(2, 2\), expected \(2, 3\)"):
        nn.MSELoss()(z, np.zeros((2, 2)))


def test_losses_follow_the_prediction_dtype_like_torch(rng):
    z = rng.standard_normal((4, 3))
    d = rng.integers(0, 3, 4)
    crit = nn.CrossEntropyLoss()  # default float32, but a float64 prediction is not downcast
    value = crit(z, d)
    ref_value, ref_grad = _torch_grad(torch.nn.CrossEntropyLoss(), z, d)
    assert crit.backward().dtype == np.float64
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(crit.backward(), ref_grad, rtol=1e-10, atol=1e-12)
    assert crit(z.astype(np.float32), d) == pytest.approx(ref_value, rel=1e-5)
    assert crit.backward().dtype == np.float32


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_label_smoothing_matches_torch(eps, dtype):
    import torch

    rng = np.random.default_rng(4)
    z = (rng.standard_normal((7, 5)) * 3).astype(dtype)
    d = rng.integers(0, 5, 7)
    crit = nn.CrossEntropyLoss(label_smoothing=eps)
    value, grad = crit(z, d), crit.backward()
    zt = torch.tensor(z, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(zt, torch.tensor(d), label_smoothing=eps)
    ref.backward()
    # log softmax sums C exponentials of logits up to max|z|: each side rounds by at most about
    # (C + 2) eps max|z| per entry; the mean over the batch does not grow that bound
    tol = (z.shape[1] + 2) * float(np.finfo(dtype).eps) * float(np.abs(z).max())
    assert value == pytest.approx(ref.item(), rel=tol, abs=tol)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=tol, atol=tol)


def test_label_smoothing_is_gradchecked_and_range_checked():
    from tricklab.check import gradcheck

    rng = np.random.default_rng(5)
    crit = nn.CrossEntropyLoss(label_smoothing=0.2, dtype=np.float64)
    d = rng.integers(0, 4, 6)
    assert gradcheck(lambda z: (crit(z, d), lambda g: crit.backward(g)), rng.standard_normal((6, 4)))
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
