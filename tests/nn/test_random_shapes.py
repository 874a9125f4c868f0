"""Parity with the PyTorch twin on random shapes and values (hypothesis draws them)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.twins import compare_forward_backward
from tricklab import nn

ACTIVATIONS = [nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Identity]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(batch=st.integers(2, 17), widths=st.lists(st.integers(1, 12), min_size=2, max_size=4),
       act=st.sampled_from(ACTIVATIONS), batchnorm=st.booleans(), scale=st.floats(0.1, 10.0),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1))
def test_mlp_matches_torch_on_random_shapes(batch, widths, act, batchnorm, scale, dtype, seed):
    rng = np.random.default_rng(seed)
    layers = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        layers.append(nn.Linear(n_in, n_out, rng=rng, dtype=dtype))
        if batchnorm:
            layers.append(nn.BatchNorm1d(n_out, dtype=dtype))
        layers.append(act(dtype=dtype))
    model = nn.Sequential(*layers)
    compare_forward_backward(model, rng.standard_normal((batch, widths[0])) * scale, seed=seed)
