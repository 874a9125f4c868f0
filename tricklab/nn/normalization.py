"""Batch normalization (Ioffe & Szegedy 2015) with the lecture's backward pass and inference rule.

References:
    Ioffe, S. and Szegedy, C. "Batch Normalization: Accelerating Deep Network Training by Reducing
    Internal Covariate Shift." ICML 2015.
"""

from __future__ import annotations

import copy
from typing import Iterable

import numpy as np

from . import _kernels as K
from .conv import Conv2d
from .inference import is_inference_mode, output_buffer
from .linear import Linear
from .module import Module, Sequential
from .parameter import Parameter


# The passes over a (rows, features) matrix z, each feature normalized over the B rows (the math of
# BatchNorm1d's docstring). With the numba kernels the layer runs their compiled twins of the same
# names in nn/_compiled.py instead (one pass over memory each); tests/nn/test_fast_path.py checks
# that both give these numbers.
def batchnorm_train(z: np.ndarray, gamma, beta, eps: float):
    """Batch statistics and the normalized output, ``(out, mu, var, inv_std)``::

        mu = (1/B) sum_i z_i,   var = (1/B) sum_i (z_i - mu)^2   (biased; sums in float64, as torch)
        inv_std = 1 / sqrt(var + eps),   out = gamma (z - mu) inv_std + beta

    gamma, beta (features,) or None (affine=False); mu, var, inv_std (features,) in z's dtype."""
    mu = z.mean(axis=0, dtype=np.float64).astype(z.dtype)
    d = z - mu
    d *= d
    var = d.mean(axis=0, dtype=np.float64).astype(z.dtype)
    inv_std = 1.0 / np.sqrt(var + z.dtype.type(eps))
    return batchnorm_eval(z, mu, inv_std, gamma, beta), mu, var, inv_std


def batchnorm_eval(z: np.ndarray, mu, inv_std, gamma, beta, out: np.ndarray | None = None) -> np.ndarray:
    """out = gamma (z - mu) inv_std + beta (just (z - mu) inv_std when gamma is None), into ``out``
    if given: with the population mu and inv_std = 1 / sqrt(running_var + eps) at eval."""
    u = np.subtract(z, mu, out=out)
    u *= inv_std
    if gamma is not None:
        u *= gamma
        u += beta
    return u


def batchnorm_backward(gy: np.ndarray, z: np.ndarray, mu, inv_std, gamma, batch_stats: bool, dgamma, dbeta):
    """The lecture's closed form, g = dLoss/dout, u = (z - mu) inv_std recomputed from z::

        dgamma += sum_i g_i u_i,   dbeta += sum_i g_i                  (sums in float64; skipped if None)
        dz = gamma inv_std (g - mean_i g_i - u mean_i g_i u_i)       (batch statistics)
        dz = gamma inv_std g                                          (population statistics)
    """
    u = (z - mu) * inv_std
    sum_g, sum_gu = gy.sum(axis=0, dtype=np.float64), (gy * u).sum(axis=0, dtype=np.float64)
    if dgamma is not None:
        dgamma += sum_gu
        dbeta += sum_g
    scale = gamma * inv_std if gamma is not None else inv_std
    if batch_stats:
        B = gy.shape[0]
        return scale * (gy - (sum_g / B).astype(gy.dtype) - u * (sum_gu / B).astype(gy.dtype))
    return scale * gy


def batchnorm_running_(running_mean, running_var, mu, var, factor: float, batch: int) -> None:
    """The running statistics in place, r <- (1 - factor) r + factor s, with the unbiased variance
    var * B / (B - 1) for running_var (B = ``batch``)."""
    unbiased = var * (batch / (batch - 1))
    running_mean *= 1 - factor
    running_mean += factor * mu
    running_var *= 1 - factor
    running_var += factor * unbiased


class _BatchNorm(Module):
    """What BatchNorm1d and BatchNorm2d share: the statistics, normalization and closed-form backward
    of a (rows, features) matrix, each feature normalized over the rows (the math of BatchNorm1d's
    docstring, with B the number of rows). A subclass says how its input becomes that matrix
    (``_as_rows`` / ``_from_rows``), which shapes it takes, and names its features (``_feature``) and
    the argument selecting some of them (``_selection``)."""

    _feature = "feature"
    _selection = "units"

    def __init__(self, num_features: int, eps: float, momentum: float | None, affine: bool, selected, dtype):
        super().__init__(dtype=dtype)
        name = type(self).__name__
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) or num_features <= 0:
            raise ValueError(f"{name}: num_features must be a positive integer, got {num_features!r}")
        if eps <= 0:
            raise ValueError(f"{name}: eps must be positive, got {eps}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{name}: momentum must be in [0, 1] or None, got {momentum}")
        self.num_features, self.eps, self.momentum, self.affine = int(num_features), float(eps), momentum, affine
        setattr(self, self._selection, None if selected is None else self._check_selected(selected))
        n = self.num_features if self._selected is None else len(self._selected)
        if affine:
            self.weight = Parameter(np.ones(n, dtype=self.dtype))
            self.bias = Parameter(np.zeros(n, dtype=self.dtype))
        self.register_buffer("running_mean", np.zeros(n, dtype=self.dtype))
        self.register_buffer("running_var", np.ones(n, dtype=self.dtype))
        self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        self._collector = None

    @property
    def _selected(self) -> np.ndarray | None:
        """The indices of the normalized features (``units`` or ``channels``), None for all."""
        return getattr(self, self._selection)

    def reset_running_stats(self) -> None:
        """running_mean = 0, running_var = 1, num_batches_tracked = 0, in place (as torch)."""
        self.running_mean[...] = 0
        self.running_var[...] = 1
        self.num_batches_tracked[...] = 0

    def reset_parameters(self) -> None:
        """The running statistics reset, and gamma = 1, beta = 0 (as torch)."""
        self.reset_running_stats()
        if self.affine:
            self.weight.data[...] = 1
            self.bias.data[...] = 0

    def _check_selected(self, selected) -> np.ndarray:
        idx = np.unique(np.asarray(selected, dtype=np.int64).ravel())
        if idx.size == 0 or idx.min() < 0 or idx.max() >= self.num_features:
            raise ValueError(f"{type(self).__name__}: {self._selection} must be a non-empty subset of "
                             f"range({self.num_features}), got {selected!r}")
        return idx

    # ---------------------------------------------------------------- forward
    def forward(self, x):
        x = self._cast_input(x)
        self._check_input(x)
        if is_inference_mode() and not (self.training or self._collector is not None):
            return self._inference_forward(x)
        part = x if self._selected is None else x[:, self._selected]
        z = self._as_rows(part)
        use_batch = self.training or self._collector is not None
        gamma, beta = (self.weight.data, self.bias.data) if self.affine else (None, None)
        if use_batch:
            if z.shape[0] < 2:
                raise ValueError(f"{type(self).__name__} expected more than 1 value per {self._feature} when "
                                 f"training, got input of shape {x.shape}")
            fast = K.compiled()
            out, mu, var, inv_std = (fast.batchnorm_train if fast else batchnorm_train)(z, gamma, beta, self.eps)
            self._check_finite(mu, x.shape)
            if self._collector is not None:
                self._collector.append((mu, var, z.shape[0]))
            elif self.training:
                self._update_running(mu, var, z.shape[0])
        else:
            mu = self.running_mean.copy()  # kept for backward: running statistics may change
            inv_std = 1.0 / np.sqrt(self.running_var + self.dtype.type(self.eps))
            fast = K.compiled()
            out = (fast.batchnorm_eval if fast else batchnorm_eval)(z, mu, inv_std, gamma, beta)
        # backward recomputes u = (z - mu) inv_std from the input rather than storing it
        self._z, self._mu, self._inv_std, self._batch_stats = z, mu, inv_std, use_batch
        self._input_shape = x.shape
        out = self._from_rows(out, part.shape)
        if self._selected is None:
            return out
        y = x.copy()
        y[:, self._selected] = out
        return y

    def _inference_forward(self, x: np.ndarray) -> np.ndarray:
        """Eval in inference mode: y = (x - mu) inv_std gamma + beta per feature with the running
        statistics, into the layer's reused output, nothing kept for backward. The same kernel as
        eval (so the same values), on the (N, features x pixels) matrix of the input's own layout
        with each feature's mu, inv_std, gamma, beta repeated over its pixels: no (rows, features)
        copies for images."""
        self._z = None
        part = x if self._selected is None else x[:, self._selected]
        pixels = int(np.prod(part.shape[2:]))

        def per_entry(v):
            return None if v is None else np.repeat(v, pixels)

        inv_std = 1.0 / np.sqrt(self.running_var + self.dtype.type(self.eps))
        gamma, beta = (self.weight.data, self.bias.data) if self.affine else (None, None)
        y = output_buffer(self, x.shape)
        rows = part.reshape(len(part), -1)
        out = y.reshape(rows.shape) if self._selected is None else np.empty_like(rows)
        fast = K.compiled()
        (fast.batchnorm_eval if fast else batchnorm_eval)(rows, per_entry(self.running_mean), per_entry(inv_std),
                                                          per_entry(gamma), per_entry(beta), out)
        if self._selected is not None:
            np.copyto(y, x)
            y[:, self._selected] = out.reshape(part.shape)
        return y

    def _as_rows(self, z: np.ndarray) -> np.ndarray:
        """The input (its selected features) as a (rows, features) matrix."""
        return z

    def _from_rows(self, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """A (rows, features) matrix back in the input's layout ``shape``."""
        return rows

    def _check_finite(self, mu: np.ndarray, shape: tuple[int, ...]) -> None:
        """A NaN or inf anywhere in a feature's column makes its batch mean NaN or inf: no extra pass."""
        if not np.isfinite(mu).all():
            features = np.flatnonzero(~np.isfinite(mu))
            if self._selected is not None:
                features = self._selected[features]
            listed = ", ".join(map(str, features[:5].tolist())) + (", ..." if len(features) > 5 else "")
            which = (f"{self._feature} [{listed}]" if len(features) == 1
                     else f"{len(features)} {self._feature}s [{listed}]")
            raise FloatingPointError(f"{type(self).__name__}({self.num_features}) got NaN or inf in {which} of its "
                                     f"training input of shape {shape}")

    def _update_running(self, mu: np.ndarray, var: np.ndarray, batch: int) -> None:
        self.num_batches_tracked += 1
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        fast = K.compiled()
        (fast.batchnorm_running_ if fast else batchnorm_running_)(self.running_mean, self.running_var, mu, var,
                                                                  factor, batch)

    # ---------------------------------------------------------------- backward
    def backward(self, grad_output):
        z, mu, inv_std = self._saved("_z"), self._mu, self._inv_std
        gy = np.asarray(grad_output, dtype=self.dtype)
        if gy.shape != self._input_shape:
            raise ValueError(f"{type(self).__name__}.backward got a gradient of shape {gy.shape}; expected the "
                             f"output's shape {self._input_shape}")
        part = gy if self._selected is None else gy[:, self._selected]
        gamma, dgamma, dbeta = (self.weight.data, self.weight.grad, self.bias.grad) if self.affine else (None, None, None)
        fast = K.compiled()
        gz = (fast.batchnorm_backward if fast else batchnorm_backward)(self._as_rows(part), z, mu, inv_std, gamma,
                                                                       self._batch_stats, dgamma, dbeta)
        gz = self._from_rows(gz, part.shape)
        if self._selected is None:
            return gz
        grad_input = gy.copy()
        grad_input[:, self._selected] = gz
        return grad_input

    def extra_repr(self) -> str:
        selected = "" if self._selected is None else f", {self._selection}={len(self._selected)} selected"
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}{selected}"


class BatchNorm1d(_BatchNorm):
    """Batch normalization over the batch axis of (batch, num_features) inputs.

    Training, per unit, over a minibatch z_1..z_B::

        mu_B      = (1/B) sum_i z_i
        var_B     = (1/B) sum_i (z_i - mu_B)^2            (biased)
        u_i       = (z_i - mu_B) / sqrt(var_B + eps)
        zhat_i    = gamma u_i + beta                      (gamma = ``weight``, beta = ``bias``)

    Backward (the lecture's closed form, vectorized; never a B x B Jacobian), with
    g_i = dLoss/du_i = gamma dLoss/dzhat_i::

        dLoss/dz_i = g_i / sqrt(var_B+eps) - (1/(B sqrt(var_B+eps))) sum_j g_j
                     - (z_i - mu_B) / (B (var_B+eps)^(3/2)) sum_j g_j (z_j - mu_B)
                   = (1/sqrt(var_B+eps)) (g_i - mean_j g_j - u_i mean_j g_j u_j)
        dLoss/dgamma = sum_i dLoss/dzhat_i u_i,   dLoss/dbeta = sum_i dLoss/dzhat_i

    Inference uses ``running_mean`` / ``running_var`` in place of mu_B, var_B. They are updated in
    training as PyTorch does: r <- (1 - momentum) r + momentum s with the *unbiased* variance
    B/(B-1) var_B; ``momentum=None`` gives the cumulative average over all minibatches seen. The
    lecture's rule (statistics of the final network averaged over the training minibatches) is
    :func:`recompute_batchnorm_statistics`.

    ``units``: the lecture notes batch norm may be applied to selected neurons only. With an index
    set, only those features are normalized (``weight``, ``bias`` and the statistics then have
    ``len(units)`` entries); the others pass through unchanged in both directions.

    A NaN or inf in a training batch raises ``FloatingPointError`` before the running statistics
    see it (one such value makes the batch mean, and so every later inference, NaN).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, units=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, units, dtype)

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm1d({self.num_features}) got input of shape {x.shape}; expected (batch, {self.num_features})")

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(input_shape) != (self.num_features,):
            raise ValueError(f"BatchNorm1d({self.num_features}) expects examples of shape ({self.num_features},), "
                             f"got {tuple(input_shape)}")
        return tuple(input_shape)


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) images, per channel over the batch and the pixels
    (Ioffe & Szegedy's convolutional form), as ``torch.nn.BatchNorm2d``.

    It is :class:`BatchNorm1d` applied to the (N H W, C) matrix whose rows are the pixels
    z[n, :, h, w] of every image: channel c has B = N H W values, and::

        mu_c  = (1/B) sum_{n,h,w} z[n,c,h,w],    var_c = (1/B) sum_{n,h,w} (z[n,c,h,w] - mu_c)^2
        u[n,c,h,w] = (z[n,c,h,w] - mu_c) / sqrt(var_c + eps),   y = gamma_c u + beta_c

    with the same closed-form backward over those B values::

        dLoss/dz[n,c,h,w] = (gamma_c / sqrt(var_c + eps)) (g - mean_{n,h,w} g - u mean_{n,h,w} g u)
        dLoss/dgamma_c = sum_{n,h,w} g u,   dLoss/dbeta_c = sum_{n,h,w} g      (g = dLoss/dy)

    The running statistics move as torch's, with the unbiased variance B/(B-1) var_c, B = N H W
    (``momentum=None``: the cumulative average), and :func:`recompute_batchnorm_statistics` applies
    the lecture's population rule with that B. ``channels``: an index set normalizes those channels
    only (``weight``, ``bias`` and the statistics then have ``len(channels)`` entries); the others pass
    through unchanged in both directions. A NaN or inf in a training batch raises
    ``FloatingPointError`` naming the channel, before the running statistics see it.
    """

    _feature = "channel"
    _selection = "channels"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, channels=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, channels, dtype)

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm2d({self.num_features}) got input of shape {x.shape}; "
                             f"expected (N, {self.num_features}, H, W)")

    def _as_rows(self, z: np.ndarray) -> np.ndarray:
        return z.transpose(0, 2, 3, 1).reshape(-1, z.shape[1])  # a copy: rows (n, h, w), one column per channel

    def _from_rows(self, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        n, c, h, w = shape
        return np.ascontiguousarray(rows.reshape(n, h, w, c).transpose(0, 3, 1, 2))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3 or input_shape[0] != self.num_features:
            raise ValueError(f"BatchNorm2d({self.num_features}) expects examples of shape ({self.num_features}, H, W), "
                             f"got {tuple(input_shape)}")
        return tuple(input_shape)


def recompute_batchnorm_statistics(model: Module, batches: Iterable) -> int:
    """Set every BatchNorm layer's inference statistics by the lecture's rule, final weights fixed.

    Over the training minibatches b = 1..N, each giving a layer B values per unit (the batch size
    for BatchNorm1d; batch size x H x W, every pixel of every image, for BatchNorm2d), run forward with the
    final network and collect every unit's batch statistics; then::

        mu_BN  = (1/N) sum_b mu_B(b)
        var_BN = B/(B-1) (1/N) sum_b var_B(b)       (the B/(B-1) makes the estimate unbiased)

    A last batch of different size B_b contributes B_b/(B_b-1) var_B(b), so the result equals
    PyTorch's cumulative average (``momentum=None``) over the same batches. Other layers run in
    eval mode (no dropout), so the statistics are those of the network used at inference; the
    model's train/eval mode is restored afterwards. ``batches`` yields input arrays or
    (inputs, targets) pairs. Returns the number of batches used.
    """
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    modes = {id(m): m.training for m in model.modules()}
    for layer in layers:
        layer._collector = []
    count = 0
    try:
        model.eval()
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x)
            count += 1
    finally:
        for m in model.modules():
            object.__setattr__(m, "training", modes[id(m)])
        collected = {id(layer): layer._collector for layer in layers}
        for layer in layers:
            layer._collector = None
    if count == 0:
        raise ValueError("recompute_batchnorm_statistics: batches is empty")
    for layer in layers:
        stats = collected[id(layer)]
        mu = np.mean([s[0] for s in stats], axis=0)
        var = np.mean([s[1] * (s[2] / (s[2] - 1)) for s in stats], axis=0)
        layer.running_mean[...] = mu
        layer.running_var[...] = var
        layer.num_batches_tracked[...] = len(stats)
    return count


def fold_batchnorm(model: Sequential) -> Sequential:
    """Return an inference copy of ``model`` with each batch norm that directly follows a Linear
    (BatchNorm1d) or Conv2d (BatchNorm2d) layer folded into that layer's weights.

    In eval mode a batch norm layer computes, for each feature (unit or channel) o with its
    running statistics mu_o, var_o::

        y_o = gamma_o (z_o - mu_o) / sqrt(var_o + eps) + beta_o = s_o z_o + beta_o - s_o mu_o,
        s_o = gamma_o / sqrt(var_o + eps)

    and the layer before it computes z_o = W_o x + b_o (W_o the weight's row o, or the kernel of
    output channel o), so the two are one layer with::

        W'_o = s_o W_o,    b'_o = s_o (b_o - mu_o) + beta_o

    (gamma = 1 and beta = 0 without ``affine``; s_o = 1 and b'_o = b_o for a feature that
    ``units``/``channels`` leaves unnormalized; a layer without bias gets one, from b = 0). W' and
    b' are computed in float64 from the layer's values and rounded once to the model's dtype.
    Batch norm layers after anything else stay as they are (after a dropout layer: remove those
    first with :func:`~tricklab.nn.dropout.fold_dropout_scaling`); nested Sequentials are folded
    too. The copy is in eval mode, its layers renumbered (so are its ``state_dict`` keys), the
    folded layers' gradients zero; ``model`` is untouched.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"fold_batchnorm expects a Sequential, got {type(model).__name__}")
    kept: list[Module] = []
    for i, layer in enumerate(copy.deepcopy(model)):
        if isinstance(layer, Sequential):
            layer = fold_batchnorm(layer)
        elif kept and _folds(kept[-1], layer, i):
            kept[-1] = _folded(kept[-1], layer)
            continue
        kept.append(layer)
    return Sequential(*kept, input_grad=model.input_grad).eval()


def _folds(layer: Module, bn: Module, index: int) -> bool:
    """True when ``bn`` is the batch norm of ``layer``'s output; an error when its features do not match."""
    if isinstance(layer, Linear) and type(bn) is BatchNorm1d:
        features = layer.out_features
    elif isinstance(layer, Conv2d) and type(bn) is BatchNorm2d:
        features = layer.out_channels
    else:
        return False
    if bn.num_features != features:
        raise ValueError(f"fold_batchnorm: layer {index} ({type(bn).__name__}({bn.num_features})) follows "
                         f"{type(layer).__name__} with {features} outputs")
    return True


def _folded(layer: Module, bn: _BatchNorm) -> Module:
    """A copy of ``layer`` (Linear or Conv2d) computing ``bn(layer(x))`` in eval mode: W' = s W, b' = s b + t."""
    scale, shift = _eval_affine(bn)
    weight = layer.weight.data.astype(np.float64)
    bias = 0.0 if layer.bias is None else layer.bias.data.astype(np.float64)
    folded = copy.deepcopy(layer)
    folded.weight = Parameter(scale.reshape((-1,) + (1,) * (weight.ndim - 1)) * weight, dtype=layer.dtype)
    folded.bias = Parameter(scale * bias + shift, dtype=layer.dtype)
    return folded.eval()


def _eval_affine(bn: _BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    """(s, t) in float64 with bn's eval output y = s z + t per feature: s = gamma / sqrt(var + eps),
    t = beta - s mu on the normalized features, s = 1, t = 0 on the others."""
    n = bn.running_mean.shape[0]
    gamma = bn.weight.data.astype(np.float64) if bn.affine else np.ones(n)
    beta = bn.bias.data.astype(np.float64) if bn.affine else np.zeros(n)
    eps = float(bn.dtype.type(bn.eps))  # the eps the layer adds, in its dtype
    s = gamma / np.sqrt(bn.running_var.astype(np.float64) + eps)
    t = beta - s * bn.running_mean.astype(np.float64)
    if bn._selected is None:
        return s, t
    scale, shift = np.ones(bn.num_features), np.zeros(bn.num_features)
    scale[bn._selected], shift[bn._selected] = s, t
    return scale, shift
