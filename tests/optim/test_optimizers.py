"""Each optimizer against its torch.optim twin: same start, same gradients, same weights."""

import copy
import json

import numpy as np
import pytest
import torch

from tests.twins import TORCH_DTYPE
from tricklab import export, nn, optim
from tricklab.nn import Parameter
from tricklab.nn import _kernels as K

SHAPES = [(4, 3), (3,), (2, 2, 2)]
TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=1e-6, atol=1e-6)}

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.5)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.1, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01, maximize=True)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.05, maximize=True)),
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, alpha=0.9, eps=1e-6)),
    ("RMSprop", dict(centered=True)),
    ("RMSprop", dict(momentum=0.9)),
    ("RMSprop", dict(centered=True, momentum=0.9, weight_decay=0.1)),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}" for name, kw in CASES]


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    inits = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    return [Parameter(w) for w in inits], [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in inits]


def gradients(dtype, steps, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]


def set_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad[...] = g


def feed(ours, theirs, grads):
    set_grads(ours, grads)
    for q, g in zip(theirs, grads):
        q.grad = torch.from_numpy(g.copy())


def assert_same(ours, theirs, dtype):
    for p, q in zip(ours, theirs):
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, q.detach().numpy(), **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_matches_torch(name, kwargs, dtype):
    ours, theirs = make_params(dtype)
    opt, ref = getattr(optim, name)(ours, **kwargs), getattr(torch.optim, name)(theirs, **kwargs)
    arrays = [p.data for p in ours]
    for grads in gradients(dtype, steps=8):
        feed(ours, theirs, grads)
        opt.step()
        ref.step()
    assert_same(ours, theirs, dtype)
    assert all(p.data is a for p, a in zip(ours, arrays)), "the step must update .data in place"
    for state in opt.state.values():
        assert all(v.dtype == dtype for v in state.values() if isinstance(v, np.ndarray))


@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, weight_decay=0.1, momentum=0.5)),
])
def test_param_groups_match_torch(name, kwargs):
    """Biases without weight decay and with their own lr: the usual param-group split."""
    ours, theirs = make_params(np.float64)

    def groups(ps):
        return [{"params": ps[:1]}, {"params": ps[1:], "weight_decay": 0, "lr": 0.03}]

    opt, ref = getattr(optim, name)(groups(ours), **kwargs), getattr(torch.optim, name)(groups(theirs), **kwargs)
    assert opt.param_groups[1]["weight_decay"] == 0 and opt.param_groups[0]["weight_decay"] == 0.1
    for grads in gradients(np.float64, steps=6):
        feed(ours, theirs, grads)
        opt.step()
        ref.step()
    assert_same(ours, theirs, np.float64)


def test_add_param_group_matches_torch():
    ours, theirs = make_params(np.float64)
    opt = optim.SGD(ours[:2], lr=0.1, momentum=0.9)
    ref = torch.optim.SGD(theirs[:2], lr=0.1, momentum=0.9)
    for i, grads in enumerate(gradients(np.float64, steps=6)):
        if i == 3:
            opt.add_param_group({"params": ours[2], "lr": 0.01})
            ref.add_param_group({"params": theirs[2], "lr": 0.01})
        feed(ours, theirs, grads)
        opt.step()
        ref.step()
    assert opt.param_groups[1]["momentum"] == 0.9
    assert_same(ours, theirs, np.float64)


@pytest.mark.parametrize("name, kwargs, sched, sched_kwargs", [
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True), "StepLR", dict(step_size=3, gamma=0.5)),
    ("Adam", dict(lr=0.01), "CosineAnnealingLR", dict(T_max=5, eta_min=1e-3)),
    ("RMSprop", dict(lr=0.01, momentum=0.5), "ExponentialLR", dict(gamma=0.8)),
    ("AdamW", dict(lr=0.01), "LinearLR", dict(start_factor=0.1, total_iters=4)),
])
def test_scheduler_drives_lr_like_torch(name, kwargs, sched, sched_kwargs):
    ours, theirs = make_params(np.float64)
    opt, ref = getattr(optim, name)(ours, **kwargs), getattr(torch.optim, name)(theirs, **kwargs)
    s = getattr(optim.lr_scheduler, sched)(opt, **sched_kwargs)
    t = getattr(torch.optim.lr_scheduler, sched)(ref, **sched_kwargs)
    for grads in gradients(np.float64, steps=10):
        feed(ours, theirs, grads)
        opt.step()
        ref.step()
        s.step()
        t.step()
        assert opt.param_groups[0]["lr"] == ref.param_groups[0]["lr"]
    assert_same(ours, theirs, np.float64)


def to_json_and_back(state_dict):
    text = json.dumps(state_dict, default=lambda a: a.tolist())
    return json.loads(text)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("roundtrip", [copy.deepcopy, to_json_and_back], ids=["dict", "json"])
@pytest.mark.parametrize("name, kwargs", [CASES[5], CASES[10], CASES[13], CASES[18]], ids=[IDS[i] for i in (5, 10, 13, 18)])
def test_state_dict_resumes_bit_identically(name, kwargs, roundtrip, dtype):
    grads = gradients(dtype, steps=8)
    straight, _ = make_params(dtype)
    opt = getattr(optim, name)(straight, **kwargs)
    for g in grads:
        set_grads(straight, g)
        opt.step()

    first, _ = make_params(dtype)
    opt1 = getattr(optim, name)(first, **kwargs)
    for g in grads[:3]:
        set_grads(first, g)
        opt1.step()
    saved = roundtrip(opt1.state_dict())
    resumed = [Parameter(p.data) for p in first]
    opt2 = getattr(optim, name)(resumed, **kwargs)
    opt2.load_state_dict(saved)
    for g in grads[3:]:
        set_grads(resumed, g)
        opt2.step()
    for p, q in zip(straight, resumed):
        assert q.data.dtype == dtype
        np.testing.assert_array_equal(p.data, q.data)
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


def test_state_dict_format_and_snapshot():
    ours, _ = make_params(np.float64)
    opt = optim.Adam([{"params": ours[:1]}, {"params": ours[1:], "lr": 0.1}], amsgrad=True)
    for g in gradients(np.float64, steps=2):
        set_grads(ours, g)
        opt.step()
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0], [1, 2]]
    assert sd["param_groups"][1]["lr"] == 0.1 and sd["param_groups"][0]["betas"] == (0.9, 0.999)
    assert set(sd["state"]) == {0, 1, 2}
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert sd["state"][0]["step"] == 2 and isinstance(sd["state"][0]["step"], int)
    before = sd["state"][0]["exp_avg"].copy()
    opt.step()
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], before)


def test_load_state_dict_rejects_mismatch():
    ours, _ = make_params(np.float64)
    opt = optim.SGD(ours, lr=0.1, momentum=0.9)
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="parameter groups"):
        optim.SGD([{"params": ours[:1]}, {"params": ours[1:]}], lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="group 0"):
        optim.SGD(ours[:2], lr=0.1).load_state_dict(sd)
    other = [Parameter(np.zeros((5,))), *ours[1:]]
    with pytest.raises(ValueError, match="momentum_buffer"):
        optim.SGD(other, lr=0.1).load_state_dict(sd)


def test_zero_grad_and_closure():
    ours, _ = make_params(np.float32)
    for p in ours:
        p.grad[...] = 1
    opt = optim.SGD(ours, lr=0.1)
    grad_arrays = [p.grad for p in ours]
    opt.zero_grad()
    assert all(p.grad is g and not g.any() for p, g in zip(ours, grad_arrays))
    assert opt.step(lambda: 3.5) == 3.5


def test_sgd_first_momentum_step_is_the_gradient():
    """torch's convention: the buffer starts as a copy of g, so dampening does not apply at step 1."""
    p = Parameter(np.zeros(3))
    p.grad[...] = [1.0, -2.0, 3.0]
    opt = optim.SGD([p], lr=1.0, momentum=0.9, dampening=0.5)
    opt.step()
    np.testing.assert_array_equal(p.data, [-1.0, 2.0, -3.0])
    np.testing.assert_array_equal(opt.state[p]["momentum_buffer"], [1.0, -2.0, 3.0])


@pytest.mark.parametrize("name, kwargs, match", [
    ("SGD", dict(lr=-0.1), "lr must be >= 0"),
    ("SGD", dict(lr=0.1, momentum=-0.5), "momentum must be >= 0"),
    ("SGD", dict(lr=0.1, weight_decay=-1e-4), "weight_decay must be >= 0"),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=1.5), r"dampening must be in \[0, 1\]"),
    ("SGD", dict(lr=0.1, nesterov=True), "nesterov=True requires momentum > 0"),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "dampening == 0"),
    ("Adam", dict(lr=-1e-3), "lr must be >= 0"),
    ("Adam", dict(betas=(1.0, 0.999)), r"betas\[0\] must be in \[0, 1\)"),
    ("Adam", dict(betas=(0.9, -0.1)), r"betas\[1\] must be in \[0, 1\)"),
    ("Adam", dict(betas=(0.9,)), "betas must be a pair"),
    ("Adam", dict(eps=-1e-8), "eps must be >= 0"),
    ("Adam", dict(weight_decay=-0.1), "weight_decay must be >= 0"),
    ("AdamW", dict(weight_decay=-0.1), "AdamW: weight_decay must be >= 0"),
    ("RMSprop", dict(alpha=1.5), r"alpha must be in \[0, 1\]"),
    ("RMSprop", dict(momentum=-0.1), "momentum must be >= 0"),
    ("RMSprop", dict(eps=-1.0), "eps must be >= 0"),
])
def test_bad_hyperparameters_raise(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        getattr(optim, name)([Parameter(np.zeros(2))], **kwargs)


def test_bad_group_hyperparameter_and_params_raise():
    a, b = Parameter(np.zeros(2)), Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="SGD: lr must be >= 0, got -1"):
        optim.SGD([{"params": [a]}, {"params": [b], "lr": -1}], lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="appears twice"):
        optim.SGD([{"params": [a]}, {"params": [a, b]}], lr=0.1)
    with pytest.raises(ValueError, match="appears twice"):
        optim.SGD([a, a], lr=0.1)
    with pytest.raises(TypeError, match="single Parameter"):
        optim.SGD(a, lr=0.1)
    with pytest.raises(TypeError, match="only optimize Parameters"):
        optim.SGD([np.zeros(2)], lr=0.1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_training_loop_matches_torch(dtype):
    """A module trained end to end: the optimizer's in-place steps are what the next forward sees."""
    rng = np.random.default_rng(3)
    model = nn.Sequential(nn.Linear(5, 8, rng=rng, dtype=dtype), nn.Tanh(),
                          nn.Linear(8, 2, rng=rng, dtype=dtype))
    twin = export.to_torch(model)
    x, d = rng.standard_normal((16, 5)).astype(dtype), rng.standard_normal((16, 2)).astype(dtype)
    xt, dt = torch.from_numpy(x), torch.from_numpy(d)
    opt = optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    ref = torch.optim.AdamW(twin.parameters(), lr=0.05, weight_decay=0.1)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, 10)
    ref_sched = torch.optim.lr_scheduler.CosineAnnealingLR(ref, 10)
    loss_fn = nn.MSELoss(dtype=dtype)
    for _ in range(10):
        opt.zero_grad()
        loss = loss_fn(model(x), d)
        model.backward(loss_fn.backward())
        total = optim.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        sched.step()
        ref.zero_grad()
        ref_loss = torch.nn.functional.mse_loss(twin(xt), dt)
        ref_loss.backward()
        ref_total = torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.5)
        ref.step()
        ref_sched.step()
        assert loss == pytest.approx(ref_loss.item(), rel=TOL[dtype]["rtol"])
        assert total == pytest.approx(ref_total.item(), rel=TOL[dtype]["rtol"])
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert p.data.dtype == dtype and q.dtype == TORCH_DTYPE[np.dtype(dtype)]
        np.testing.assert_allclose(p.data, q.detach().numpy(), err_msg=name, **TOL[dtype])


KERNELS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(not K.numba_available(),
                                                                     reason="numba is not installed"))]


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_scalar_vector_and_matrix_parameters_match_torch(name, kwargs, dtype, kernels):
    """0-d parameters too, with both kernel back ends: NumPy arithmetic on 0-d arrays returns
    scalars, which neither ``out=`` nor the in-place updates of the state may meet."""
    shapes = [(), (3,), (4, 3)]
    rng = np.random.default_rng(7)
    inits = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ours = [Parameter(w) for w in inits]
    theirs = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in inits]
    with K.using(kernels):
        opt, ref = getattr(optim, name)(ours, **kwargs), getattr(torch.optim, name)(theirs, **kwargs)
        for _ in range(4):
            feed(ours, theirs, [rng.standard_normal(s).astype(dtype) for s in shapes])
            opt.step()
            ref.step()
    assert_same(ours, theirs, dtype)
    for p in ours:
        assert all(isinstance(v, np.ndarray) and v.shape == p.shape
                   for v in opt.state[p].values() if not isinstance(v, int))


def rmsprop_decoupled_reference(w, grads, lr, alpha, eps, weight_decay, momentum, centered, maximize):
    """torch's RMSprop algorithm in float64, with the decay applied to w before the update."""
    w = w.astype(np.float64)
    v, ga, b = np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)
    for g in grads:
        g = -g.astype(np.float64) if maximize else g.astype(np.float64)
        w = w * (1 - lr * weight_decay)
        v = alpha * v + (1 - alpha) * g * g
        ga = alpha * ga + (1 - alpha) * g
        avg = np.sqrt(v - ga * ga if centered else v) + eps
        b = momentum * b + g / avg
        w = w - lr * (b if momentum > 0 else g / avg)
    return w


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", [
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.05, alpha=0.9, eps=1e-6, weight_decay=0.3, momentum=0.9),
    dict(lr=0.02, weight_decay=0.2, centered=True, momentum=0.5, maximize=True),
], ids=str)
def test_rmsprop_decoupled_weight_decay(kwargs, dtype):
    """w <- (1 - lr wd) w, then the RMSprop step: against the equations and against torch's
    RMSprop without decay after torch's decoupled decay (torch's RMSprop has no such flag)."""
    full = dict(dict(alpha=0.99, eps=1e-8, momentum=0.0, centered=False, maximize=False), **kwargs)
    ours, theirs = make_params(dtype)
    opt = optim.RMSprop(ours, **kwargs, decoupled_weight_decay=True)
    ref = torch.optim.RMSprop(theirs, **dict(kwargs, weight_decay=0.0))
    steps = gradients(dtype, steps=8)
    for grads in steps:
        feed(ours, theirs, grads)
        opt.step()
        with torch.no_grad():
            for q in theirs:
                q.mul_(1 - kwargs["lr"] * kwargs["weight_decay"])
        ref.step()
    assert_same(ours, theirs, dtype)
    first, _ = make_params(np.float64)
    for i, (p, w0) in enumerate(zip(ours, (q.data for q in first))):
        expected = rmsprop_decoupled_reference(w0, [g[i] for g in steps], **full)
        np.testing.assert_allclose(p.data, expected, **TOL[dtype])
    coupled, _ = make_params(dtype)
    l2 = optim.RMSprop(coupled, **kwargs)
    for grads in steps:
        set_grads(coupled, grads)
        l2.step()
    assert not np.allclose(coupled[0].data, ours[0].data, **TOL[dtype]), "the default stays L2"
