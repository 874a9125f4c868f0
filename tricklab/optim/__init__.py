"""Optimizers, learning-rate schedules and gradient clipping, composed of small gradient transforms.

    from tricklab import optim
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
    ...  # forward, backward
    optim.clip_grad_norm_(model.parameters(), max_norm=1.0)
    opt.step(); sched.step(); opt.zero_grad()
"""

from . import lr_scheduler, transforms
from .clipping import clip_grad_norm_, clip_grad_value_
from .optimizer import SGD, Adam, AdamW, Optimizer, RMSprop

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "clip_grad_norm_", "clip_grad_value_",
           "lr_scheduler", "transforms"]
