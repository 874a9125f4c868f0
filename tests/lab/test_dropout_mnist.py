"""dropout-mnist's schedule and its verdict over seeds, on made-up errors (no training)."""

import types

import numpy as np

from tricklab import optim
from tricklab.lab.reproduce import dropout_mnist as D
from tricklab.nn import Parameter


def test_momentum_ramps_over_the_first_quarter_then_stays():
    assert D.momentum(0, 40) == D.MOMENTUM_START and D.momentum(10, 40) == D.MOMENTUM_END
    assert D.MOMENTUM_START < D.momentum(5, 40) < D.MOMENTUM_END and D.momentum(39, 40) == D.MOMENTUM_END


def test_verdict_needs_the_order_and_gaps_above_the_spread():
    clear = {"standard": [0.0150, 0.0152, 0.0148], "dropout": [0.0130, 0.0131, 0.0129],
             "dropout + max-norm": [0.0110, 0.0112, 0.0111]}
    assert D.verdict(clear).startswith("Matches: ")
    noisy = dict(clear, dropout=[0.0155, 0.0105, 0.0130])  # mean in order, spread 0.25 points > the gaps
    assert D.verdict(noisy).startswith("Matches in direction")
    wrong = dict(clear, standard=[0.0120, 0.0121, 0.0119])
    text = D.verdict(wrong)
    assert text.startswith("Does not match") and "standard 1.20% -> dropout 1.30%: -0.10 points" in text


def test_one_seed_never_clears_the_spread():
    one = {"standard": [0.015], "dropout": [0.013], "dropout + max-norm": [0.011]}
    assert D.verdict(one).startswith("Matches in direction")


def test_the_ramp_damps_momentum_so_the_step_stays_the_learning_rate():
    """The paper's averaged velocity: with a constant gradient g the step tends to lr * g at any
    momentum p (PyTorch's undamped default would tend to lr * g / (1 - p), twenty times it at 0.95)."""
    epochs, lr, g = 40, 0.5, np.array([1.0, -2.0])
    p = Parameter(np.zeros(2))
    opt = optim.SGD([p], lr=lr, momentum=D.MOMENTUM_START)
    trainer = types.SimpleNamespace(optimizer=opt)
    set_momentum = D.ramp_momentum(epochs)
    for epoch in range(epochs):
        set_momentum(epoch, trainer)
        group = opt.param_groups[0]
        assert group["momentum"] == group["dampening"] == D.momentum(epoch, epochs)
        for _ in range(20):
            before = p.data.copy()
            p.grad = g.copy()
            opt.step()
    np.testing.assert_allclose(before - p.data, lr * g, rtol=1e-9)  # 600 steps at p = 0.95 leave 0.95^600 ~ 4e-14
