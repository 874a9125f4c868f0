"""The fused optimizer updates (tricklab/optim/fused.py) against the transform chains they replace.

Each loop performs the chain's float operations in the chain's order, in the parameter's dtype, so
the two must agree bit for bit after EVERY step of a multi-step run, in float32 and in float64,
for the weights and for every state entry.
"""

import copy

import numpy as np
import pytest

from tricklab import nn, optim
from tricklab.nn import _kernels as K
from tricklab.optim.optimizer import FUSED

pytestmark = pytest.mark.skipif(not K.numba_available(), reason="the fused updates need numba")

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.5, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01, maximize=True)),
    ("SGD", dict(lr=0.05, weight_decay=0.1, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, maximize=True)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True, maximize=True)),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for name, kw in CASES]
STEPS = 12


def counting(monkeypatch, name):
    """Count the calls of fused.<name> (so a test knows the fused loop, not the chain, ran)."""
    with K.using("numba"):
        module = K.compiled(FUSED)
    calls = []
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *args: (calls.append(1), original(*args))[1])
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_every_step_of_the_fused_update_equals_the_chain(monkeypatch, rng, name, kwargs, dtype):
    shapes = [(5, 4), (4,), (2, 3, 2), ()]
    start = [nn.Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]
    chain_params, fused_params = copy.deepcopy(start), copy.deepcopy(start)
    chain_opt = getattr(optim, name)(chain_params, **kwargs)
    fused_opt = getattr(optim, name)(fused_params, **kwargs)
    calls = counting(monkeypatch, "sgd_" if name == "SGD" else "adam_")
    for step in range(STEPS):
        for p, q in zip(chain_params, fused_params):
            p.grad[...] = q.grad[...] = rng.standard_normal(p.shape) * 10.0 ** rng.integers(-3, 2)
        with K.using("numpy"):
            chain_opt.step()
        with K.using("numba"):
            fused_opt.step()
        for k, (p, q) in enumerate(zip(chain_params, fused_params)):
            np.testing.assert_array_equal(q.data, p.data, err_msg=f"step {step}, parameter {k}")
            chain_state, fused_state = chain_opt.state[p], fused_opt.state[q]
            assert set(fused_state) == set(chain_state)
            for key, value in chain_state.items():
                np.testing.assert_array_equal(fused_state[key], value, err_msg=f"step {step}, {key}")
    assert len(calls) == STEPS * len(shapes)


def test_unsuited_arrays_are_left_to_the_chain(monkeypatch, rng):
    """A non-contiguous gradient is not fused: the chain updates that parameter, with the same numbers."""
    w = rng.standard_normal((4, 6))
    fused_p, chain_p = nn.Parameter(w.copy()), nn.Parameter(w.copy())
    fused_p.grad = np.asfortranarray(np.zeros((4, 6)))
    calls = counting(monkeypatch, "adam_")
    fused_opt, chain_opt = optim.Adam([fused_p], lr=0.1), optim.Adam([chain_p], lr=0.1)
    g = rng.standard_normal((4, 6))
    fused_p.grad[...] = chain_p.grad[...] = g
    with K.using("numba"):
        fused_opt.step()
    with K.using("numpy"):
        chain_opt.step()
    assert not calls
    np.testing.assert_array_equal(fused_p.data, chain_p.data)
