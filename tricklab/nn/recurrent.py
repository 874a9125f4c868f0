"""Recurrent layers with backpropagation through time: Elman RNN, LSTM, and zoneout on their states.

Both layers read a batch-first sequence x of shape (batch, time, input_size) and run the
recurrence over time for ``num_layers`` stacked layers (layer l > 0 reads the hidden states of
layer l - 1). The forward pass keeps every state; the backward pass walks the sequence in
reverse, carrying dLoss/dh_t (and dLoss/dc_t) from step t to step t - 1. The input projection
x_t W_ih^T of all steps is one matrix product in the forward pass, and the weight gradients of
all steps are one matrix product each in the backward pass; only the recurrence loops in Python.

Each layer's pass over a sequence is written twice. ``_layer_forward`` / ``_layer_backward`` are
the plain per-step NumPy loops, the reference that reads like the equations; they run with the
``numpy`` kernels (``TRICKLAB_KERNELS=numpy``, ``_kernels.use("numpy")``). With the ``numba``
kernels the ``_fused`` twins run instead: the same arithmetic, one BLAS call per step that adds
h_{t-1} W_hh^T into the input projection (or dLoss/da_t W_hh into dLoss/dh_{t-1}), one compiled
pass per step for the gates' elementwise work (``lstm_cell_``, ``lstm_hidden_``, ``lstm_backward_``,
``rnn_backward_``, ``zone_`` in nn/_compiled.py) and work buffers kept across calls
(``Module._scratch``); both keep the same cache, and tests/nn/test_recurrent_fast.py checks
that they agree.

Zoneout (Krueger et al. 2016) regularizes a state by letting each unit keep its previous value
with probability z. In training, with a fresh mask d ~ Bernoulli(z) per example, unit and step::

    s_t = d_t * s_{t-1} + (1 - d_t) * s~_t        (s~_t: the state the cell would have computed)

and at eval the expectation over d, s_t = z s_{t-1} + (1 - z) s~_t. Unlike dropout the
state is never set to zero, so zoneout also lets the gradient skip the step where d_t = 1:
dLoss/ds_{t-1} gets d_t * dLoss/ds_t directly. The masks of a forward pass (one draw of shape
(num_layers, time, batch, hidden) per state) are kept and reused by backward.

References:
    Elman, J. L. "Finding structure in time." Cognitive Science 14, 1990.
    Werbos, P. J. "Backpropagation through time: what it does and how to do it." Proc. IEEE 78, 1990.
    Hochreiter, S. and Schmidhuber, J. "Long short-term memory." Neural Computation 9, 1997.
    Gers, F. A., Schmidhuber, J. and Cummins, F. "Learning to forget: continual prediction with
    LSTM." Neural Computation 12, 2000.
    Krueger, D., Maharaj, T., Kramár, J., Pezeshki, M., Ballas, N., Ke, N. R., Goyal, A.,
    Bengio, Y., Courville, A. and Pal, C. "Zoneout: Regularizing RNNs by Randomly Preserving
    Hidden Activations." ICLR 2017 (arXiv:1606.01305, 2016).
"""

from __future__ import annotations

import math

import numpy as np

from .._rng import RngLike, as_generator
from . import _kernels as K
from ._blas import gemm_accumulate, gemm_accumulate_steps
from ._checks import check_probability
from .activation import sigmoid
from .module import Module
from .parameter import Parameter

NONLINEARITIES = ("tanh", "relu")


def _zone(new: np.ndarray, prev: np.ndarray, d) -> np.ndarray:
    """d * prev + (1 - d) * new: d is a 0/1 mask (training), the probability z (eval) or None."""
    return new if d is None else d * prev + (1 - d) * new


def _per_step(d, T: int, B: int, H: int, dtype) -> list:
    """A layer's zoneout as one (B, H) array per step for the fused kernels (z everywhere at eval), or Nones."""
    if d is None or isinstance(d, np.ndarray):
        return [None] * T if d is None else list(d)
    return [np.full((B, H), d, dtype=dtype)] * T


class _Recurrent(Module):
    """Shared machinery: parameters, argument checks, masks and the loop over stacked layers.

    A subclass sets ``_gates`` (rows of ``weight_ih`` per hidden unit) and ``_states`` (the names
    of the carried states) and writes one layer's pass over the whole sequence, time-major:
    ``_layer_forward(l, x, state0, zones) -> (h, final_states, cache)`` and
    ``_layer_backward(l, cache, grad_h, grad_final, zones, input_grad) -> (grad_x, grad_state0)``
    (grad_x None when not ``input_grad``), and their ``_fused`` twins for the numba kernels.
    """

    _gates = 1
    _states: tuple[str, ...] = ("h",)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, bias: bool,
                 batch_first: bool, zoneout: dict[str, float], rng: RngLike, dtype):
        super().__init__(dtype=dtype)
        owner = type(self).__name__
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
        if batch_first is not True:
            raise ValueError(f"{owner}: only batch_first=True is supported (input of shape "
                             f"(batch, time, input_size)), got batch_first={batch_first!r}")
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.bias, self.batch_first = bool(bias), True
        # one probability per carried state, in the order of _states
        self._zoneout = tuple(check_probability(owner, name, z) for name, z in zoneout.items())
        self.rng = as_generator(rng)
        H, G = self.hidden_size, self._gates * self.hidden_size
        bound = 1.0 / math.sqrt(H)  # torch: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H))
        for l in range(self.num_layers):
            n_in = self.input_size if l == 0 else H
            shapes = [(f"weight_ih_l{l}", (G, n_in)), (f"weight_hh_l{l}", (G, H))]
            if self.bias:
                shapes += [(f"bias_ih_l{l}", (G,)), (f"bias_hh_l{l}", (G,))]
            for name, shape in shapes:
                setattr(self, name, Parameter(self.rng.uniform(-bound, bound, size=shape).astype(self.dtype)))
        self._masks = None
        self._caches = None

    # ----------------------------------------------------------------- helpers
    def _weights(self, l: int):
        W_ih, W_hh = getattr(self, f"weight_ih_l{l}"), getattr(self, f"weight_hh_l{l}")
        b = (getattr(self, f"bias_ih_l{l}"), getattr(self, f"bias_hh_l{l}")) if self.bias else None
        return W_ih, W_hh, b

    def _project_input(self, l: int, x: np.ndarray) -> np.ndarray:
        """x_t W_ih^T + b_ih + b_hh for all steps at once: (time, batch, G)."""
        W_ih, _, b = self._weights(l)
        a = x @ W_ih.data.T
        if b is not None:
            a += b[0].data + b[1].data
        return a

    def _accumulate_weight_grads(self, l: int, ga: np.ndarray, x: np.ndarray, h_prev: np.ndarray,
                                 input_grad: bool = True):
        """Sum over all steps in one product each: dW_ih += ga^T x, dW_hh += ga^T h_{t-1}; returns ga W_ih
        (None without ``input_grad``)."""
        W_ih, W_hh, b = self._weights(l)
        ga2 = ga.reshape(-1, ga.shape[-1])
        W_ih.grad += ga2.T @ x.reshape(-1, x.shape[-1])
        W_hh.grad += ga2.T @ h_prev.reshape(-1, self.hidden_size)
        if b is not None:
            gb = ga2.sum(axis=0)
            b[0].grad += gb
            b[1].grad += gb
        return ga @ W_ih.data if input_grad else None

    def _fused_input_projection(self, l: int, x: np.ndarray, w_ih: np.ndarray, bias) -> np.ndarray:
        """bias + x_t w_ih^T for all T steps as one (T*B, in) @ (in, G) product, into a reused (T, B, G) buffer."""
        T, B, n_in = x.shape
        out = self._scratch(f"_projection_l{l}", (T, B, w_ih.shape[0]))
        out[...] = bias
        gemm_accumulate(out.reshape(T * B, -1), x.reshape(T * B, n_in), w_ih.T)
        return out

    def _fused_weight_grads(self, l: int, ga: np.ndarray, x: np.ndarray, h_prev: np.ndarray, input_grad: bool):
        """_accumulate_weight_grads with one BLAS call per weight that adds into its gradient (beta = 1),
        and ga W_ih into a reused buffer."""
        W_ih, W_hh, b = self._weights(l)
        T, B, G = ga.shape
        ga2 = ga.reshape(T * B, G)
        gemm_accumulate(W_ih.grad, ga2.T, x.reshape(T * B, -1))
        gemm_accumulate(W_hh.grad, ga2.T, h_prev.reshape(T * B, -1))
        if b is not None:
            gb = ga2.sum(axis=0)
            b[0].grad += gb
            b[1].grad += gb
        if not input_grad:
            return None
        grad_x = self._scratch(f"_grad_x_l{l}", (T, B, x.shape[2]))
        np.matmul(ga2, W_ih.data, out=grad_x.reshape(T * B, -1))
        return grad_x

    def _check_input(self, x) -> np.ndarray:
        x = self._cast_input(x)
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"{type(self).__name__}({self.input_size}, {self.hidden_size}) got input of shape "
                             f"{x.shape}; expected (batch, time, input_size) = (batch, time, {self.input_size})")
        return x

    def _check_state(self, s, name: str, batch: int) -> np.ndarray:
        expected = (self.num_layers, batch, self.hidden_size)
        if s is None:
            return np.zeros(expected, dtype=self.dtype)
        s = self._cast_input(s, name=name)
        if s.shape != expected:
            raise ValueError(f"{type(self).__name__}: {name} has shape {s.shape}; expected "
                             f"(num_layers, batch, hidden_size) = {expected}")
        return s

    def _zones(self, T: int, B: int):
        """Per state: the masks (num_layers, T, B, H) in training, z at eval, None without zoneout."""
        zones = []
        for z in self._zoneout:
            if z == 0.0:
                zones.append(None)
            elif self.training:
                shape = (self.num_layers, T, B, self.hidden_size)
                zones.append((self.rng.random(shape) < z).astype(self.dtype))
            else:
                zones.append(self.dtype.type(z))
        return zones

    def _mask(self, k: int):
        """Mask of state k, batch-first (num_layers, batch, time, hidden): 1 where the unit kept s_{t-1}."""
        if self._masks is None or not isinstance(self._masks[k], np.ndarray):
            return None
        return np.moveaxis(self._masks[k], 1, 2)

    @property
    def mask_h(self):
        """The hidden-state zoneout mask of the last training forward pass, (num_layers, batch, time,
        hidden); None at eval or without zoneout."""
        return self._mask(0)

    # ----------------------------------------------------------------- passes
    def _run(self, x, states0: list):
        x = self._check_input(x)
        B, T, _ = x.shape
        states0 = [self._check_state(s, f"{name}_0", B) for s, name in zip(states0, self._states)]
        zones = self._zones(T, B)
        layer_in = np.ascontiguousarray(x.transpose(1, 0, 2))
        finals = [np.empty_like(s) for s in states0]
        caches = []
        forward = self._layer_forward if K.compiled() is None else self._layer_forward_fused
        for l in range(self.num_layers):
            layer_zones = [None if d is None else d[l] if isinstance(d, np.ndarray) else d for d in zones]
            layer_in, final, cache = forward(l, layer_in, [s[l] for s in states0], layer_zones)
            for k, s in enumerate(final):
                finals[k][l] = s
            caches.append((cache, layer_zones))
        self._masks, self._caches, self._shape = zones, caches, (B, T)
        return layer_in.transpose(1, 0, 2).copy(), finals

    def _backprop(self, grad_output, grad_finals: list, input_grad: bool = True):
        caches = self._saved("_caches")
        B, T = self._shape
        H, owner = self.hidden_size, type(self).__name__
        if grad_output is None:
            g = np.zeros((T, B, H), dtype=self.dtype)
        else:
            g = np.asarray(grad_output, dtype=self.dtype)
            if g.shape != (B, T, H):
                raise ValueError(f"{owner}.backward: grad_output has shape {g.shape}; expected the output's "
                                 f"shape (batch, time, hidden_size) = {(B, T, H)}")
            g = np.ascontiguousarray(g.transpose(1, 0, 2))
        expected = (self.num_layers, B, H)
        gfs = []
        for gf, name in zip(grad_finals, self._states):
            if gf is None:
                gfs.append(np.zeros(expected, dtype=self.dtype))
                continue
            gf = np.asarray(gf, dtype=self.dtype)
            if gf.shape != expected:
                raise ValueError(f"{owner}.backward: the gradient for {name}_n has shape {gf.shape}; "
                                 f"expected (num_layers, batch, hidden_size) = {expected}")
            gfs.append(gf)
        grads0 = [np.empty_like(gf) for gf in gfs]
        backward = self._layer_backward if K.compiled() is None else self._layer_backward_fused
        for l in reversed(range(self.num_layers)):
            cache, zones = caches[l]
            g, g0 = backward(l, cache, g, [gf[l] for gf in gfs], zones, input_grad or l > 0)
            for k, s in enumerate(g0):
                grads0[k][l] = s
        for name, g0 in zip(self._states, grads0):
            setattr(self, f"grad_{name}0", g0)
        return g.transpose(1, 0, 2).copy() if input_grad else None

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, batch_first=True"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        return s


class RNN(_Recurrent):
    """Elman RNN, batch-first, as ``torch.nn.RNN(..., batch_first=True)``, with optional zoneout.

    For each layer, with x_t the input at step t (the layer below's h_t for layers above the first)::

        h~_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)        ("relu" replaces tanh)
        h_t  = d_t * h_{t-1} + (1 - d_t) * h~_t,   d_t ~ Bernoulli(zoneout)  (training)
        h_t  = zoneout * h_{t-1} + (1 - zoneout) * h~_t                      (eval)

    With ``zoneout=0`` (default) h_t = h~_t. Backpropagation through time, with
    g_t = dLoss/dh_t = grad_output_t + (what step t+1 sends back), g_T starting at grad_state::

        dLoss/da_t   = (1 - d_t) g_t * (1 - h~_t^2)          (a_t: the argument of tanh)
        dLoss/dh_t-1 = dLoss/da_t W_hh + d_t g_t
        dLoss/dx_t   = dLoss/da_t W_ih,   dW_ih += sum_t dLoss/da_t^T x_t,   dW_hh += sum_t dLoss/da_t^T h_t-1

    Shapes: x (batch, time, input_size); h0 and h_n (num_layers, batch, hidden_size); output
    (batch, time, hidden_size), the last layer's h_t. Parameters ``weight_ih_l{k}`` (H, in),
    ``weight_hh_l{k}`` (H, H), ``bias_ih_l{k}``, ``bias_hh_l{k}`` (H,), all ~ U(-1/sqrt(H), 1/sqrt(H))
    as in PyTorch, so ``state_dict`` moves both ways. After backward, ``grad_h0`` holds dLoss/dh0.
    Zoneout: Krueger et al. 2016 (see the module docstring); ``mask_h`` holds the last masks.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, bias: bool = True,
                 batch_first: bool = True, nonlinearity: str = "tanh", zoneout: float = 0.0,
                 rng: RngLike = None, dtype=None):
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"RNN: nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first,
                         {"zoneout": zoneout}, rng, dtype)
        self.nonlinearity = nonlinearity

    @property
    def zoneout(self) -> float:
        return self._zoneout[0]

    def forward(self, x, h0=None):
        """x (batch, time, input_size), h0 (num_layers, batch, hidden) or None (zeros) -> (output, h_n)."""
        output, (h_n,) = self._run(x, [h0])
        return output, h_n

    def backward(self, grad_output, grad_state=None):
        """dLoss/doutput (or None) and dLoss/dh_n (or None: zero) -> dLoss/dx (batch, time, input_size)."""
        return self._backprop(grad_output, [grad_state])

    def backward_parameters(self, grad_output, grad_state=None) -> None:
        """``backward`` for an input that is data: the same parameter gradients and ``grad_h0``, no
        dLoss/dx (the first layer's product dLoss/da W_ih is skipped). Returns None."""
        self._backprop(grad_output, [grad_state], input_grad=False)

    def _layer_forward(self, l, x, state0, zones):
        _, W_hh, _ = self._weights(l)
        (d,) = zones
        T, B = x.shape[:2]
        cand = self._project_input(l, x)  # becomes h~_t in place, step by step
        hs = np.empty((T + 1, B, self.hidden_size), dtype=self.dtype)
        hs[0] = state0[0]
        for t in range(T):
            a = cand[t] + hs[t] @ W_hh.data.T
            if self.nonlinearity == "tanh":
                np.tanh(a, out=cand[t])
            else:
                np.maximum(a, 0, out=cand[t])
            hs[t + 1] = _zone(cand[t], hs[t], d if not isinstance(d, np.ndarray) else d[t])
        return hs[1:], (hs[T],), (x, hs, cand)

    def _layer_backward(self, l, cache, grad_h, grad_final, zones, input_grad=True):
        x, hs, cand = cache
        _, W_hh, _ = self._weights(l)
        (d,) = zones
        gh = grad_final[0].copy()
        ga = np.empty_like(cand)
        for t in reversed(range(len(cand))):
            gh += grad_h[t]
            d_t = d[t] if isinstance(d, np.ndarray) else d
            g_cand = gh if d is None else (1 - d_t) * gh
            deriv = 1 - cand[t] * cand[t] if self.nonlinearity == "tanh" else (cand[t] > 0)
            ga[t] = g_cand * deriv
            gh_prev = ga[t] @ W_hh.data
            if d is not None:
                gh_prev += d_t * gh
            gh = gh_prev
        grad_x = self._accumulate_weight_grads(l, ga, x, hs[:-1], input_grad)
        return grad_x, (gh,)

    def _layer_forward_fused(self, l, x, state0, zones):
        """_layer_forward in reused buffers: per step one BLAS call adds h_{t-1} W_hh^T into the
        projection, NumPy's tanh (or max) in place, zone_ mixes in h_{t-1}. The same cache."""
        fast = K.compiled()
        W_ih, W_hh, b = self._weights(l)
        T, B = x.shape[:2]
        H = self.hidden_size
        cand = self._fused_input_projection(l, x, W_ih.data, 0 if b is None else b[0].data + b[1].data)
        hs = self._scratch(f"_hs_l{l}", (T + 1, B, H))
        hs[0] = state0[0]
        d = _per_step(zones[0], T, B, H, self.dtype)
        add_recurrent = gemm_accumulate_steps(cand, hs, W_hh.data.T)  # cand[t] += h_{t-1} W_hh^T
        for t in range(T):
            a = cand[t]
            add_recurrent(t, t)
            if self.nonlinearity == "tanh":
                np.tanh(a, out=a)
            else:
                np.maximum(a, 0, out=a)
            if d[t] is None:
                hs[t + 1] = a
            else:
                fast.zone_(a, hs[t], d[t], hs[t + 1])
        return hs[1:], (hs[T],), (x, hs, cand)

    def _layer_backward_fused(self, l, cache, grad_h, grad_final, zones, input_grad=True):
        """_layer_backward with one compiled pass a step (rnn_backward_: dLoss/da_t and
        d_t g_t + grad_output_{t-1}) and one BLAS call adding dLoss/da_t W_hh into dLoss/dh_{t-1}."""
        fast = K.compiled()
        x, hs, cand = cache
        _, W_hh, _ = self._weights(l)
        T, B, H = cand.shape
        d = _per_step(zones[0], T, B, H, self.dtype)
        ga = self._scratch(f"_ga_l{l}", cand.shape)
        pair = self._scratch("_gh_pair", (2, B, H))  # dLoss/dh_t and dLoss/dh_{t-1}, swapping each step
        gh = pair[0]
        np.add(grad_final[0], grad_h[T - 1], out=gh)
        relu = self.nonlinearity == "relu"
        add_recurrent = gemm_accumulate_steps(pair, ga, W_hh.data)  # gh_prev += dLoss/da_t W_hh
        for t in reversed(range(T)):
            k = (T - t) % 2
            fast.rnn_backward_(gh, cand[t], d[t], relu, grad_h[t - 1] if t else None, ga[t], pair[k])
            add_recurrent(k, t)
            gh = pair[k]
        return self._fused_weight_grads(l, ga, x, hs[:-1], input_grad), (gh,)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        if self.zoneout:
            s += f", zoneout={self.zoneout}"
        return s


class LSTM(_Recurrent):
    """Long short-term memory, batch-first, as ``torch.nn.LSTM(..., batch_first=True)``, with zoneout.

    For each layer (Hochreiter & Schmidhuber 1997 with the forget gate of Gers et al. 2000), gate
    rows in PyTorch's order (i, f, g, o) in ``weight_ih_l{k}`` (4H, in) and ``weight_hh_l{k}`` (4H, H)::

        [a_i, a_f, a_g, a_o] = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh
        i = sigmoid(a_i),  f = sigmoid(a_f),  g = tanh(a_g),  o = sigmoid(a_o)
        c~_t = f * c_{t-1} + i * g
        h~_t = o * tanh(c~_t)
        c_t  = d^c_t * c_{t-1} + (1 - d^c_t) * c~_t,    d^c_t ~ Bernoulli(zoneout_c)
        h_t  = d^h_t * h_{t-1} + (1 - d^h_t) * h~_t,    d^h_t ~ Bernoulli(zoneout_h)

    in training, and at eval d^c_t = zoneout_c, d^h_t = zoneout_h (the expectation). As in the
    paper, h~_t is computed from the un-zoned c~_t, and the output at step t is the zoned-out h_t.
    With both probabilities 0 (default) this is exactly ``torch.nn.LSTM``. Backward through time,
    with g^h_t = dLoss/dh_t (grad_output_t plus what step t+1 sends back) and g^c_t = dLoss/dc_t::

        g^h~ = (1 - d^h) g^h,    g^c~ = (1 - d^c) g^c + g^h~ * o * (1 - tanh(c~)^2)
        da_i = g^c~ g i(1-i),   da_f = g^c~ c_{t-1} f(1-f),   da_g = g^c~ i (1-g^2),   da_o = g^h~ tanh(c~) o(1-o)
        g^h_{t-1} += da W_hh + d^h g^h,    g^c_{t-1} = g^c~ f + d^c g^c

    Shapes: x (batch, time, input_size); h0, c0, h_n, c_n (num_layers, batch, hidden_size); output
    (batch, time, hidden_size). Biases (4H,); every parameter ~ U(-1/sqrt(H), 1/sqrt(H)) as in
    PyTorch. After backward, ``grad_h0`` and ``grad_c0`` hold the gradients for the initial state;
    ``mask_h`` and ``mask_c`` hold the last training masks (1 where the unit kept its old value).

    References: Krueger et al. 2016, "Zoneout: Regularizing RNNs by Randomly Preserving Hidden
    Activations" (the paper uses zoneout_c = 0.5, zoneout_h = 0.05 for LSTMs).
    """

    _gates = 4
    _states = ("h", "c")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, bias: bool = True,
                 batch_first: bool = True, zoneout_h: float = 0.0, zoneout_c: float = 0.0,
                 rng: RngLike = None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first,
                         {"zoneout_h": zoneout_h, "zoneout_c": zoneout_c}, rng, dtype)

    @property
    def zoneout_h(self) -> float:
        return self._zoneout[0]

    @property
    def zoneout_c(self) -> float:
        return self._zoneout[1]

    @property
    def mask_c(self):
        """The cell-state zoneout mask of the last training forward pass, like ``mask_h``."""
        return self._mask(1)

    def forward(self, x, state=None):
        """x (batch, time, input_size), state (h0, c0) or None (zeros) -> (output, (h_n, c_n))."""
        if state is None:
            state = (None, None)
        elif not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"LSTM: state must be a pair (h_0, c_0) or None, got {type(state).__name__}")
        output, (h_n, c_n) = self._run(x, list(state))
        return output, (h_n, c_n)

    def backward(self, grad_output, grad_state=None):
        """dLoss/doutput (or None) and (dLoss/dh_n, dLoss/dc_n) (None or either None: zero) -> dLoss/dx."""
        return self._backprop(grad_output, self._grad_state_pair(grad_state, "backward"))

    def backward_parameters(self, grad_output, grad_state=None) -> None:
        """``backward`` for an input that is data: the same parameter gradients, ``grad_h0`` and
        ``grad_c0``, no dLoss/dx (the first layer's product dLoss/da W_ih is skipped). Returns None."""
        self._backprop(grad_output, self._grad_state_pair(grad_state, "backward_parameters"), input_grad=False)

    @staticmethod
    def _grad_state_pair(grad_state, method: str) -> list:
        if grad_state is None:
            return [None, None]
        if not isinstance(grad_state, (tuple, list)) or len(grad_state) != 2:
            raise TypeError(f"LSTM.{method}: grad_state must be a pair (grad_h_n, grad_c_n) or None, "
                            f"got {type(grad_state).__name__}")
        return list(grad_state)

    def _layer_forward(self, l, x, state0, zones):
        _, W_hh, _ = self._weights(l)
        dh, dc = zones
        T, B = x.shape[:2]
        H = self.hidden_size
        gates = self._project_input(l, x)  # becomes [i, f, g, o] in place, step by step
        hs = np.empty((T + 1, B, H), dtype=self.dtype)
        cs = np.empty_like(hs)
        tanh_c = np.empty((T, B, H), dtype=self.dtype)
        hs[0], cs[0] = state0
        for t in range(T):
            a = gates[t]
            a += hs[t] @ W_hh.data.T
            sigmoid(a[:, :2 * H], out=a[:, :2 * H])
            sigmoid(a[:, 3 * H:], out=a[:, 3 * H:])
            np.tanh(a[:, 2 * H:3 * H], out=a[:, 2 * H:3 * H])
            i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
            c_new = f * cs[t] + i * g
            np.tanh(c_new, out=tanh_c[t])
            h_new = o * tanh_c[t]
            cs[t + 1] = _zone(c_new, cs[t], dc[t] if isinstance(dc, np.ndarray) else dc)
            hs[t + 1] = _zone(h_new, hs[t], dh[t] if isinstance(dh, np.ndarray) else dh)
        return hs[1:], (hs[T], cs[T]), (x, hs, cs, gates, tanh_c)

    def _layer_backward(self, l, cache, grad_h, grad_final, zones, input_grad=True):
        x, hs, cs, gates, tanh_c = cache
        _, W_hh, _ = self._weights(l)
        dh, dc = zones
        H = self.hidden_size
        gh, gc = grad_final[0].copy(), grad_final[1].copy()
        ga = np.empty_like(gates)
        for t in reversed(range(len(gates))):
            gh += grad_h[t]
            dh_t = dh[t] if isinstance(dh, np.ndarray) else dh
            dc_t = dc[t] if isinstance(dc, np.ndarray) else dc
            i, f, g, o = gates[t, :, :H], gates[t, :, H:2 * H], gates[t, :, 2 * H:3 * H], gates[t, :, 3 * H:]
            g_hnew = gh if dh is None else (1 - dh_t) * gh
            g_cnew = gc if dc is None else (1 - dc_t) * gc
            g_cnew = g_cnew + g_hnew * o * (1 - tanh_c[t] * tanh_c[t])
            ga[t, :, :H] = g_cnew * g * i * (1 - i)
            ga[t, :, H:2 * H] = g_cnew * cs[t] * f * (1 - f)
            ga[t, :, 2 * H:3 * H] = g_cnew * i * (1 - g * g)
            ga[t, :, 3 * H:] = g_hnew * tanh_c[t] * o * (1 - o)
            gc_prev = g_cnew * f
            gh_prev = ga[t] @ W_hh.data
            if dc is not None:
                gc_prev += dc_t * gc
            if dh is not None:
                gh_prev += dh_t * gh
            gh, gc = gh_prev, gc_prev
        grad_x = self._accumulate_weight_grads(l, ga, x, hs[:-1], input_grad)
        return grad_x, (gh, gc)

    def _halved_gate_weights(self, l):
        """S W_ih, S W_hh and S (b_ih + b_hh) with S = diag(1/2 on the i, f and o rows, 1 on the g rows).

        Then S a_t = [a_i/2, a_f/2, a_g, a_o/2] comes out of the products, and one tanh over all four
        gates gives tanh(a_g) and the tanh(a/2) of sigmoid(a) = (1 + tanh(a/2)) / 2 (activation.sigmoid's
        formula). Halving is exact in binary floating point, so S a_t is 0.5 * a_t to the bit."""
        W_ih, W_hh, b = self._weights(l)
        H = self.hidden_size
        s = np.full((4 * H, 1), 0.5, dtype=self.dtype)
        s[2 * H:3 * H] = 1
        w_ih = np.multiply(W_ih.data, s, out=self._scratch(f"_w_ih_halved_l{l}", W_ih.data.shape))
        w_hh = np.multiply(W_hh.data, s, out=self._scratch(f"_w_hh_halved_l{l}", W_hh.data.shape))
        return w_ih, w_hh, 0 if b is None else (b[0].data + b[1].data) * s[:, 0]

    def _layer_forward_fused(self, l, x, state0, zones):
        """_layer_forward in reused buffers: per step one BLAS call adds h_{t-1} (S W_hh)^T into the
        projection (see _halved_gate_weights), one NumPy tanh over the four gates, lstm_cell_
        ([i, f, g, o], c~ and c_t in one pass), NumPy's tanh(c~), lstm_hidden_ (h_t). The same cache."""
        fast = K.compiled()
        T, B = x.shape[:2]
        H = self.hidden_size
        w_ih, w_hh, bias = self._halved_gate_weights(l)
        gates = self._fused_input_projection(l, x, w_ih, bias)
        hs = self._scratch(f"_hs_l{l}", (T + 1, B, H))
        cs = self._scratch(f"_cs_l{l}", (T + 1, B, H))
        tanh_c = self._scratch(f"_tanh_c_l{l}", (T, B, H))
        hs[0], cs[0] = state0
        dh, dc = (_per_step(d, T, B, H, self.dtype) for d in zones)
        add_recurrent = gemm_accumulate_steps(gates, hs, w_hh.T)  # gates[t] += h_{t-1} (S W_hh)^T
        for t in range(T):
            a = gates[t]
            add_recurrent(t, t)
            np.tanh(a, out=a)
            fast.lstm_cell_(a, cs[t], dc[t], cs[t + 1], tanh_c[t])
            np.tanh(tanh_c[t], out=tanh_c[t])
            fast.lstm_hidden_(a, tanh_c[t], hs[t], dh[t], hs[t + 1])
        return hs[1:], (hs[T], cs[T]), (x, hs, cs, gates, tanh_c)

    def _layer_backward_fused(self, l, cache, grad_h, grad_final, zones, input_grad=True):
        """_layer_backward with one compiled pass a step (lstm_backward_: the four dLoss/da, dLoss/dc_{t-1}
        and d^h g^h + grad_output_{t-1}) and one BLAS call adding dLoss/da_t W_hh into dLoss/dh_{t-1}."""
        fast = K.compiled()
        x, hs, cs, gates, tanh_c = cache
        _, W_hh, _ = self._weights(l)
        T, B, H = tanh_c.shape
        dh, dc = (_per_step(d, T, B, H, self.dtype) for d in zones)
        ga = self._scratch(f"_ga_l{l}", gates.shape)
        pair = self._scratch("_gh_pair", (2, B, H))  # dLoss/dh_t and dLoss/dh_{t-1}, swapping each step
        gc = self._scratch("_gc", (B, H))
        gh = pair[0]
        np.add(grad_final[0], grad_h[T - 1], out=gh)
        gc[...] = grad_final[1]
        add_recurrent = gemm_accumulate_steps(pair, ga, W_hh.data)  # gh_prev += dLoss/da_t W_hh
        for t in reversed(range(T)):
            k = (T - t) % 2
            fast.lstm_backward_(gh, gc, gates[t], tanh_c[t], cs[t], dh[t], dc[t], grad_h[t - 1] if t else None,
                             ga[t], pair[k])
            add_recurrent(k, t)
            gh = pair[k]
        return self._fused_weight_grads(l, ga, x, hs[:-1], input_grad), (gh, gc)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.zoneout_h or self.zoneout_c:
            s += f", zoneout_h={self.zoneout_h}, zoneout_c={self.zoneout_c}"
        return s


class SequenceEncoder(Module):
    """Read each flat input row as a sequence and return the recurrent net's last hidden state.

    x of shape (batch, time * features) is viewed as (batch, time, features) (an MNIST image as
    28 rows of 28 pixels, an MNIST-1D signal as 40 steps of 1 value), run through ``rnn`` and
    h_T = output[:, -1] is returned, shape (batch, hidden). Backward puts dLoss/dh_T at the last
    step of dLoss/doutput (zero elsewhere), backpropagates through time and flattens dLoss/dx.
    """

    def __init__(self, rnn: _Recurrent, time_steps: int):
        super().__init__(dtype=rnn.dtype)
        if not isinstance(time_steps, (int, np.integer)) or time_steps < 1:
            raise ValueError(f"SequenceEncoder: time_steps must be a positive integer, got {time_steps!r}")
        self.rnn, self.time_steps = rnn, int(time_steps)
        self._shape = None

    def forward(self, x):
        x = self._cast_input(x)
        features = self.rnn.input_size
        if x.ndim != 2 or x.shape[1] != self.time_steps * features:
            raise ValueError(f"SequenceEncoder got input of shape {x.shape}; expected "
                             f"(batch, {self.time_steps} * {features})")
        output, _ = self.rnn(x.reshape(len(x), self.time_steps, features))
        self._shape = output.shape
        return output[:, -1]

    def backward(self, grad_output):
        return self.rnn.backward(self._grad_sequence(grad_output)).reshape(self._shape[0], -1)

    def backward_parameters(self, grad_output) -> None:
        """``backward`` without dLoss/dx, for an input that is data (see ``LSTM.backward_parameters``)."""
        self.rnn.backward_parameters(self._grad_sequence(grad_output))

    def _grad_sequence(self, grad_output) -> np.ndarray:
        """dLoss/doutput of the whole sequence: dLoss/dh_T at the last step, zero elsewhere."""
        grad = np.zeros(self._saved("_shape"), dtype=self.dtype)
        grad[:, -1] = grad_output
        return grad

    @staticmethod
    def inner_input_shape(input_shape: tuple[int, ...], time_steps: int) -> tuple[int, int]:
        """The (time, features) shape the recurrent net reads from flat examples of ``input_shape``."""
        width = int(np.prod(input_shape))
        if len(input_shape) != 1 or width % time_steps:
            raise ValueError(f"SequenceEncoder(time_steps={time_steps}) needs flat examples whose width is a "
                             f"multiple of {time_steps}, got shape {tuple(input_shape)}")
        return time_steps, width // time_steps

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        width = self.time_steps * self.rnn.input_size
        if tuple(input_shape) != (width,):
            raise ValueError(f"SequenceEncoder expects examples of shape ({self.time_steps} * {self.rnn.input_size},) "
                             f"= ({width},), got {tuple(input_shape)}")
        return (self.rnn.hidden_size,)

    def extra_repr(self) -> str:
        return f"time_steps={self.time_steps}"
