"""A student's batch norm with two classic mistakes, to show what the grader reports:

    tricklab grade examples/grading/batchnorm_student.py --assignment batchnorm
"""

import numpy as np

from tricklab.nn import Module, Parameter

class BatchNorm1d(Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, units=None, dtype=None):
        super().__init__(dtype=dtype)
        self.units = None if units is None else np.asarray(units)
        n = num_features if units is None else len(units)
        self.eps, self.momentum, self.count = eps, momentum, 0
        self.weight = Parameter(np.ones(n), dtype=self.dtype)
        self.bias = Parameter(np.zeros(n), dtype=self.dtype)
        self.running_mean = np.zeros(n)
        self.running_var = np.ones(n)

    def forward(self, x):
        z = x if self.units is None else x[:, self.units]
        if self.training:
            B = len(z)
            if B < 2:
                raise ValueError("BatchNorm1d needs more than 1 example per batch in training")
            mu, var = z.mean(axis=0), z.var(axis=0)
            self.count += 1
            m = 1 / self.count if self.momentum is None else self.momentum
            self.running_mean[...] = (1 - m) * self.running_mean + m * mu
            self.running_var[...] = (1 - m) * self.running_var + m * var
        else:
            mu, var = self.running_mean, self.running_var
        self.inv_std = 1 / np.sqrt(var + self.eps)
        self.u = (z - mu) * self.inv_std
        out = self.weight.data * self.u + self.bias.data
        if self.units is None:
            return out
        y = x.copy()
        y[:, self.units] = out
        return y

    def backward(self, g):
        gz = g if self.units is None else g[:, self.units]
        self.weight.grad += (gz * self.u).sum(axis=0)
        self.bias.grad += gz.sum(axis=0)
        gu = gz * self.weight.data
        dz = self.inv_std * (gu - self.u * (gu * self.u).mean(axis=0))
        if self.units is None:
            return dz
        dx = g.copy()
        dx[:, self.units] = dz
        return dx
