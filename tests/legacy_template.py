"""The model template as it was before layer lists (commit 5e917ae, tricklab/experiment.py), kept
frozen as the reference that the ``hidden = [...]`` shorthand must reproduce bit for bit."""

import numpy as np

from tricklab import nn


def _activation(name):
    return {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[name]()


def _hidden_layer(m, n_in, n_out, rng):
    kind = m["layer"]
    if kind == "linear":
        return nn.Linear(n_in, n_out, init=m["init"], rng=rng)
    if kind == "dropconnect":
        return nn.DropConnect(n_in, n_out, p=m["layer_p"], mask=m["dropconnect_mask"],
                              inference=m["dropconnect_inference"], init=m["init"], rng=rng)
    if kind == "shakeout":
        return nn.Shakeout(n_in, n_out, tau=m["shakeout_tau"], c=m["shakeout_c"], init=m["init"], rng=rng)
    return nn.Whiteout(n_in, n_out, sigma=m["whiteout_sigma"], gamma=m["whiteout_gamma"], lam=m["whiteout_lambda"],
                       mode=m["whiteout_mode"], init=m["init"], rng=rng)


def build_recurrent(cfg, n_in, n_out, gens):
    m = cfg["model"]
    steps = 28 if n_in == 784 else n_in
    size, layers = m["hidden"][0], len(m["hidden"])
    if m["kind"] == "lstm":
        rnn = nn.LSTM(n_in // steps, size, layers, zoneout_h=m["zoneout_h"], zoneout_c=m["zoneout_c"], rng=next(gens))
    else:
        rnn = nn.RNN(n_in // steps, size, layers, zoneout=m["zoneout_h"], rng=next(gens))
    out = [nn.SequenceEncoder(rnn, steps)]
    if m["dropout"]:
        out.append(nn.Dropout(m["dropout"], scaling=m["dropout_scaling"], rng=next(gens)))
    out.append(nn.Linear(size, n_out, rng=next(gens)))
    return nn.Sequential(*out)


def build_model(cfg, n_in, n_out, seeds):
    m = cfg["model"]
    gens = iter(np.random.default_rng(s) for s in seeds.spawn(4 * len(m["hidden"]) + 4))
    if m["kind"] != "mlp":
        return build_recurrent(cfg, n_in, n_out, gens).to(np.dtype(cfg["train"]["dtype"]))
    layers = []
    if m["input_dropout"]:
        layers.append(nn.Dropout(m["input_dropout"], scaling=m["dropout_scaling"], rng=next(gens)))
    width = n_in
    for h in m["hidden"]:
        layers.append(_hidden_layer(m, width, h, next(gens)))
        if m["batchnorm"]:
            layers.append(nn.BatchNorm1d(h))
        layers.append(_activation(m["activation"]))
        if m["noise_std"]:
            layers.append(nn.GaussianNoise(m["noise_std"], mode=m["noise_mode"], rng=next(gens)))
        if m["activity_l1"]:
            layers.append(nn.ActivityL1(m["activity_l1"]))
        if m["dropout"]:
            layers.append(nn.Dropout(m["dropout"], scaling=m["dropout_scaling"], rng=next(gens)))
        width = h
    layers.append(nn.Linear(width, n_out, init=m["init"] if m["init"] != "kaiming_uniform" else "default",
                            rng=next(gens)))
    return nn.Sequential(*layers).to(np.dtype(cfg["train"]["dtype"]))
