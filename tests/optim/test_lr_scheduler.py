"""Learning-rate sequences against torch.optim.lr_scheduler: equal floats, not merely close."""

import json

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as torch_sched

from tricklab import optim
from tricklab.nn import Parameter
from tricklab.optim import lr_scheduler as sched

STEPS = 40
LRS = (0.1, 0.03)  # two param groups with different base lrs


def ours_opt():
    return optim.SGD([{"params": [Parameter(np.zeros(2))], "lr": lr} for lr in LRS], lr=1.0, momentum=0.9)


def torch_opt():
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in LRS],
                           lr=1.0, momentum=0.9)


def lr_sequence(opt, schedulers, steps=STEPS):
    """get_last_lr() of the last scheduler after construction and after each step, plus group lrs."""
    seq = [schedulers[-1].get_last_lr()]
    for _ in range(steps):
        opt.step()
        for s in schedulers:
            s.step()
        seq.append(schedulers[-1].get_last_lr())
        assert seq[-1] == [g["lr"] for g in opt.param_groups]
    return seq


CASES = [
    ("StepLR", dict(step_size=3, gamma=0.1)),
    ("StepLR", dict(step_size=5, gamma=0.7)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=10)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=1e-3)),
    ("LinearLR", dict()),
    ("LinearLR", dict(start_factor=0.25, end_factor=1.0, total_iters=8)),
    ("LinearLR", dict(start_factor=1.0, end_factor=0.1, total_iters=12)),
]


@pytest.mark.parametrize("name, kwargs", CASES, ids=[f"{n}-{kw}" for n, kw in CASES])
def test_sequence_equals_torch(name, kwargs):
    o, t = ours_opt(), torch_opt()
    ours = lr_sequence(o, [getattr(sched, name)(o, **kwargs)])
    theirs = lr_sequence(t, [getattr(torch_sched, name)(t, **kwargs)])
    assert ours == theirs


def test_linear_warmup_is_linear_lr_to_one():
    o, t = ours_opt(), torch_opt()
    ours = lr_sequence(o, [sched.LinearWarmup(o, warmup_steps=6, start_factor=0.1)])
    theirs = lr_sequence(t, [torch_sched.LinearLR(t, start_factor=0.1, end_factor=1.0, total_iters=6)])
    assert ours == theirs
    assert ours[0] == [0.1 * lr for lr in LRS] and ours[6:] == [list(LRS)] * (STEPS - 5)


def test_inverse_time_equals_torch_lambda_lr():
    k = 0.3
    o, t = ours_opt(), torch_opt()
    ours = lr_sequence(o, [sched.InverseTimeLR(o, k=k)])
    theirs = lr_sequence(t, [torch_sched.LambdaLR(t, lambda step: 1 / (1 + k * step))])
    assert ours == theirs
    closed = [[lr / (1 + k * step) for lr in LRS] for step in range(STEPS + 1)]
    np.testing.assert_allclose(ours, closed, rtol=1e-15)


def test_chained_schedulers_equal_torch():
    """Warmup and exponential decay driving the same optimizer: each multiplies the current lr."""
    o, t = ours_opt(), torch_opt()
    ours = lr_sequence(o, [sched.LinearLR(o, 0.2, total_iters=5), sched.ExponentialLR(o, 0.95)])
    theirs = lr_sequence(t, [torch_sched.LinearLR(t, 0.2, total_iters=5), torch_sched.ExponentialLR(t, 0.95)])
    assert ours == theirs


SEQUENTIAL = [  # (name, kwargs) of each scheduler, milestones; torch's twin has the same names
    ([("LinearLR", dict(start_factor=0.1, total_iters=4)), ("ExponentialLR", dict(gamma=0.9))], [4]),
    ([("LinearLR", dict(start_factor=0.25, end_factor=0.25, total_iters=6)),  # a constant warmup
      ("StepLR", dict(step_size=3, gamma=0.5))], [5]),
    ([("LinearLR", dict(start_factor=0.2, total_iters=3)),
      ("CosineAnnealingLR", dict(T_max=10, eta_min=1e-3))], [3]),
    ([("ExponentialLR", dict(gamma=0.7)), ("LinearLR", dict(start_factor=0.5, total_iters=4)),
      ("CosineAnnealingLR", dict(T_max=6, eta_min=3e-3))], [2, 9]),
    ([("StepLR", dict(step_size=2, gamma=0.3)), ("StepLR", dict(step_size=4, gamma=0.6))], [7]),
]


def sequential(module, opt, parts, milestones):
    return module.SequentialLR(opt, [getattr(module, name)(opt, **kw) for name, kw in parts], milestones)


@pytest.mark.parametrize("parts, milestones", SEQUENTIAL,
                         ids=[str(m) + "-" + "+".join(n for n, _ in p) for p, m in SEQUENTIAL])
def test_sequential_equals_torch(parts, milestones):
    """Each scheduler in turn; at a milestone the next one starts at its own step 0 from the initial lrs."""
    o, t = ours_opt(), torch_opt()
    ours = lr_sequence(o, [sequential(sched, o, parts, milestones)], steps=24)
    theirs = lr_sequence(t, [sequential(torch_sched, t, parts, milestones)], steps=24)
    assert ours == theirs


def test_sequential_restarts_the_next_scheduler_from_the_initial_lr():
    o = ours_opt()
    parts = [("ExponentialLR", dict(gamma=0.5)), ("LinearLR", dict(start_factor=0.1, total_iters=2))]
    lrs = [lr for lr, _ in lr_sequence(o, [sequential(sched, o, parts, [3])], steps=6)]
    warm = [0.1 * 0.1, 0.1 * 0.1 * (1 + 0.9 / 0.2), 0.1 * 0.1 * (1 + 0.9 / 0.2) * (1 + 0.9 / 1.1)]
    assert lrs == [0.1, 0.05, 0.025, *warm, warm[-1]]


@pytest.mark.parametrize("cut", [2, 4, 5, 12])
def test_sequential_state_dict_resumes_through_json(cut):
    parts, milestones = SEQUENTIAL[3]
    o = ours_opt()
    straight = lr_sequence(o, [sequential(sched, o, parts, milestones)], steps=20)
    o1 = ours_opt()
    s1 = sequential(sched, o1, parts, milestones)
    head = lr_sequence(o1, [s1], steps=cut)
    opt_state, sched_state = json.dumps(o1.state_dict(), default=np.ndarray.tolist), json.dumps(s1.state_dict())
    o2 = ours_opt()
    s2 = sequential(sched, o2, parts, milestones)
    o2.load_state_dict(json.loads(opt_state))
    s2.load_state_dict(json.loads(sched_state))
    assert head + lr_sequence(o2, [s2], steps=20 - cut)[1:] == straight


def test_sequential_bad_arguments_raise():
    o, other = ours_opt(), ours_opt()
    with pytest.raises(ValueError, match="one milestone fewer than schedulers: got 2 schedulers and 2 milestones"):
        sched.SequentialLR(o, [sched.StepLR(o, 2), sched.ExponentialLR(o, 0.9)], [3, 5])
    with pytest.raises(ValueError, match="at least one scheduler"):
        sched.SequentialLR(o, [], [])
    with pytest.raises(ValueError, match=r"schedulers\[1\] drives another optimizer"):
        sched.SequentialLR(o, [sched.StepLR(o, 2), sched.ExponentialLR(other, 0.9)], [3])
    with pytest.raises(TypeError, match=r"schedulers\[0\] must be an LRScheduler.*ReduceLROnPlateau"):
        sched.SequentialLR(o, [sched.ReduceLROnPlateau(o), sched.ExponentialLR(o, 0.9)], [3])
    with pytest.raises(ValueError, match=r"milestones must be increasing ints >= 1, got \[4, 4\]"):
        sched.SequentialLR(o, [sched.StepLR(o, 2), sched.StepLR(o, 3), sched.StepLR(o, 4)], [4, 4])
    with pytest.raises(ValueError, match=r"milestones must be increasing ints >= 1, got \[0\]"):
        sched.SequentialLR(o, [sched.StepLR(o, 2), sched.StepLR(o, 3)], [0])


METRICS = [1.0, 0.9, 0.9, 0.95, 0.9, 0.91, 0.92, 0.8, 0.8, 0.80001, 0.85, 0.9, 0.7, 0.7, 0.7, 0.7,
           0.71, 0.69999, 0.6, 0.65, 0.66, 0.67, 0.68, 0.69, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
PLATEAU = [
    dict(patience=2),
    dict(patience=1, factor=0.5, cooldown=2),
    dict(patience=0, factor=0.5, threshold=0.05, threshold_mode="abs", min_lr=[0.01, 0.02]),
    dict(mode="max", patience=1, factor=0.3),
    dict(mode="max", patience=2, threshold=0.01, threshold_mode="abs", cooldown=1, min_lr=1e-3),
    dict(patience=0, factor=0.9, min_lr=0.0299999999),  # tiny cut in group 2: skipped by eps
]


@pytest.mark.parametrize("kwargs", PLATEAU, ids=[str(kw) for kw in PLATEAU])
def test_reduce_on_plateau_equals_torch(kwargs):
    o, t = ours_opt(), torch_opt()
    ours = sched.ReduceLROnPlateau(o, **kwargs)
    theirs = torch_sched.ReduceLROnPlateau(t, **kwargs)
    assert ours.get_last_lr() == theirs.get_last_lr()
    for metric in METRICS:
        ours.step(metric)
        theirs.step(metric)
        assert ours.get_last_lr() == theirs.get_last_lr()
        assert [g["lr"] for g in o.param_groups] == [g["lr"] for g in t.param_groups]
        assert (ours.best, ours.num_bad_epochs) == (theirs.best, theirs.num_bad_epochs)
    assert ours.get_last_lr() != list(LRS)


@pytest.mark.parametrize("make", [
    lambda o: sched.StepLR(o, 4, 0.5),
    lambda o: sched.CosineAnnealingLR(o, 9, eta_min=1e-3),
    lambda o: sched.LinearWarmup(o, 5),
    lambda o: sched.InverseTimeLR(o, 0.1),
], ids=["StepLR", "Cosine", "LinearWarmup", "InverseTime"])
def test_state_dict_resumes_through_json(make):
    o = ours_opt()
    straight = lr_sequence(o, [make(o)], steps=20)
    o1 = ours_opt()
    s1 = make(o1)
    head = lr_sequence(o1, [s1], steps=7)
    opt_state, sched_state = json.dumps(o1.state_dict(), default=np.ndarray.tolist), json.dumps(s1.state_dict())
    o2 = ours_opt()
    s2 = make(o2)
    o2.load_state_dict(json.loads(opt_state))
    s2.load_state_dict(json.loads(sched_state))
    assert head + lr_sequence(o2, [s2], steps=13)[1:] == straight


def test_plateau_state_dict_resumes():
    o1 = ours_opt()
    s1 = sched.ReduceLROnPlateau(o1, patience=1, cooldown=1)
    for m in METRICS[:9]:
        s1.step(m)
    o2 = ours_opt()
    s2 = sched.ReduceLROnPlateau(o2)
    o2.load_state_dict(json.loads(json.dumps(o1.state_dict(), default=np.ndarray.tolist)))
    s2.load_state_dict(json.loads(json.dumps(s1.state_dict())))
    for m in METRICS[9:]:
        s1.step(m)
        s2.step(m)
        assert s1.get_last_lr() == s2.get_last_lr()


@pytest.mark.parametrize("make, match", [
    (lambda o: sched.StepLR(o, 0), "step_size must be an int >= 1"),
    (lambda o: sched.StepLR(o, 2.5), "step_size must be an int >= 1"),
    (lambda o: sched.StepLR(o, 3, gamma=0), "gamma must be > 0"),
    (lambda o: sched.ExponentialLR(o, -0.5), "gamma must be > 0"),
    (lambda o: sched.InverseTimeLR(o, -1), "k must be >= 0"),
    (lambda o: sched.CosineAnnealingLR(o, 0), "T_max must be an int >= 1"),
    (lambda o: sched.CosineAnnealingLR(o, 5, eta_min=-1), "eta_min must be >= 0"),
    (lambda o: sched.LinearLR(o, start_factor=0), r"start_factor must be in \(0, 1\]"),
    (lambda o: sched.LinearLR(o, end_factor=1.5), r"end_factor must be in \[0, 1\]"),
    (lambda o: sched.LinearLR(o, total_iters=0), "total_iters must be an int >= 1"),
    (lambda o: sched.LinearWarmup(o, 0), "warmup_steps must be an int >= 1"),
    (lambda o: sched.ReduceLROnPlateau(o, mode="up"), "mode must be 'min' or 'max'"),
    (lambda o: sched.ReduceLROnPlateau(o, factor=1.0), r"factor must be in \[0, 1\)"),
    (lambda o: sched.ReduceLROnPlateau(o, patience=-1), "patience must be an int >= 0"),
    (lambda o: sched.ReduceLROnPlateau(o, threshold_mode="x"), "threshold_mode must be"),
    (lambda o: sched.ReduceLROnPlateau(o, min_lr=[0.1]), "min_lr must be a number or a list of 2"),
])
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make(ours_opt())


def test_needs_an_optimizer():
    with pytest.raises(TypeError, match="needs an Optimizer"):
        sched.StepLR(object(), 3)


def ramp_momenta(opt, ramp, steps):
    """Each group's (momentum, dampening) after construction and after each step."""
    seq = [[(g["momentum"], g["dampening"]) for g in opt.param_groups]]
    for _ in range(steps):
        ramp.step()
        seq.append([(g["momentum"], g["dampening"]) for g in opt.param_groups])
    return seq


@pytest.mark.parametrize("damped", [False, True])
def test_momentum_ramp_is_linear_then_holds(damped):
    o = optim.SGD([{"params": [Parameter(np.zeros(2))], "momentum": p} for p in (0.5, 0.9)], lr=0.1)
    seq = ramp_momenta(o, sched.MomentumRamp(o, 0.95, 8, damped=damped), 20)
    for t, groups in enumerate(seq):
        for (p, d), p0 in zip(groups, (0.5, 0.9)):
            assert p == p0 + (0.95 - p0) * min(1.0, t / 8) and d == (p if damped else 0.0)
    assert seq[8] == seq[20] and seq[0][0][0] == 0.5 and seq[8][0][0] == 0.95


def test_damped_ramp_steps_equal_torch_sgd_with_dampening_set_each_epoch():
    """Torch has no momentum ramp; its SGD with momentum and dampening set to p_t by hand each epoch
    is the reference for the parameters' trajectory (float64, so equal up to a few ulps)."""
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((12, 5, 3))  # 12 epochs of 5 steps
    w = Parameter(np.zeros(3))
    ours = optim.SGD([w], lr=0.5, momentum=0.5, dampening=0.5)
    ramp = sched.MomentumRamp(ours, 0.95, 4, damped=True)
    tw = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    theirs = torch.optim.SGD([tw], lr=0.5, momentum=0.5, dampening=0.5)
    for epoch, steps in enumerate(grads):
        p = 0.5 + (0.95 - 0.5) * min(1.0, epoch / 4)
        theirs.param_groups[0].update(momentum=p, dampening=p)
        for g in steps:
            w.grad = g.copy()
            ours.step()
            tw.grad = torch.from_numpy(g.copy())
            theirs.step()
        ramp.step()
    np.testing.assert_allclose(w.data, tw.detach().numpy(), rtol=1e-14, atol=1e-15)


def test_damped_ramp_keeps_the_step_at_the_learning_rate():
    """The paper's averaged velocity: with a constant gradient g the step tends to lr * g at any
    momentum p (torch's undamped default would tend to lr * g / (1 - p), twenty times it at 0.95)."""
    lr, g = 0.5, np.array([1.0, -2.0])
    for damped, expected in ((True, lr * g), (False, lr * g / (1 - 0.95))):
        p = Parameter(np.zeros(2))
        opt = optim.SGD([p], lr=lr, momentum=0.5)
        ramp = sched.MomentumRamp(opt, 0.95, 10, damped=damped)
        for _ in range(40):
            for _ in range(20):
                before = p.data.copy()
                p.grad = g.copy()
                opt.step()
            ramp.step()
        np.testing.assert_allclose(before - p.data, expected, rtol=1e-9)  # 0.95^600 ~ 4e-14 left of the start


def test_momentum_ramp_resumes_through_json():
    o1 = ours_opt()
    r1 = sched.MomentumRamp(o1, 0.99, 10, damped=True)
    straight = ramp_momenta(o1, r1, 15)
    o2 = ours_opt()
    r2 = sched.MomentumRamp(o2, 0.99, 10, damped=True)
    head = ramp_momenta(o2, r2, 6)
    opt_state, ramp_state = json.dumps(o2.state_dict(), default=np.ndarray.tolist), json.dumps(r2.state_dict())
    o3 = ours_opt()
    r3 = sched.MomentumRamp(o3, 0.99, 10, damped=True)
    o3.load_state_dict(json.loads(opt_state))
    r3.load_state_dict(json.loads(ramp_state))
    assert head + ramp_momenta(o3, r3, 9)[1:] == straight


@pytest.mark.parametrize("make, match", [
    (lambda: sched.MomentumRamp(ours_opt(), 1.0, 5), r"end must be in \[0, 1\)"),
    (lambda: sched.MomentumRamp(ours_opt(), 0.9, 0), "total_iters must be an int >= 1"),
    (lambda: sched.MomentumRamp(optim.Adam([Parameter(np.zeros(2))]), 0.9, 5), "an optimizer with momentum"),
    (lambda: sched.MomentumRamp(optim.RMSprop([Parameter(np.zeros(2))]), 0.9, 5, damped=True),
     "damped must be False for an optimizer without dampening"),
])
def test_momentum_ramp_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()
