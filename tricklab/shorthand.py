"""The ``hidden = [...]`` shorthand of a run configuration, expanded into a layer list.

An MLP (``model.kind = "mlp"``) is input dropout, then per hidden width: layer, [batch norm],
activation, [noise], [L1 on activations], [dropout]; then a Linear read-out whose width comes
from the data. A recurrent net (``kind = "rnn"``/``"lstm"``) reads each example as a sequence
(image rows, MNIST-1D steps), runs a stacked RNN/LSTM with zoneout, [dropout] on the last
hidden state, a Linear read-out. The list built here is what :func:`tricklab.nn.spec.build_layers`
turns into the very same model the template built before layer lists existed (same classes,
same arguments, same order of random generators), so every shipped configuration keeps its numbers.
"""

from __future__ import annotations

ACTIVATION_TYPES = {"relu": "ReLU", "leaky_relu": "LeakyReLU", "sigmoid": "Sigmoid", "tanh": "Tanh"}
SHORTHAND_KEYS = ("kind", "hidden", "activation", "init", "batchnorm", "input_dropout", "dropout", "dropout_scaling",
                  "layer", "layer_p", "dropconnect_mask", "dropconnect_inference", "shakeout_tau", "shakeout_c",
                  "whiteout_sigma", "whiteout_gamma", "whiteout_lambda", "whiteout_mode", "noise_std", "noise_mode",
                  "zoneout_h", "zoneout_c", "activity_l1")
SEQUENCE_STEPS = {"mnist": 28, "fashion": 28, "mnist1d": 40}  # image rows; MNIST-1D's 40 steps of one value


def _hidden_layer(m: dict, width: int) -> dict:
    init = {"init": m["init"]} if m["init"] != "default" else {}
    kind = m["layer"]
    if kind == "linear":
        return {"type": "Linear", "out_features": width, **init}
    if kind == "dropconnect":
        return {"type": "DropConnect", "out_features": width, "p": m["layer_p"], "mask": m["dropconnect_mask"],
                "inference": m["dropconnect_inference"], **init}
    if kind == "shakeout":
        return {"type": "Shakeout", "out_features": width, "tau": m["shakeout_tau"], "c": m["shakeout_c"], **init}
    return {"type": "Whiteout", "out_features": width, "sigma": m["whiteout_sigma"], "gamma": m["whiteout_gamma"],
            "lam": m["whiteout_lambda"], "mode": m["whiteout_mode"], **init}


def _dropout(m: dict, p: float) -> dict:
    return {"type": "Dropout", "p": p, **({"scaling": m["dropout_scaling"]} if m["dropout_scaling"] != "inverted" else {})}


def expand_mlp(m: dict) -> list[dict]:
    """Input dropout, then per hidden width: layer, [batch norm], activation, [noise], [L1], [dropout]."""
    layers = [_dropout(m, m["input_dropout"])] if m["input_dropout"] else []
    for width in m["hidden"]:
        layers.append(_hidden_layer(m, width))
        if m["batchnorm"]:
            layers.append({"type": "BatchNorm1d"})
        layers.append({"type": ACTIVATION_TYPES[m["activation"]]})
        if m["noise_std"]:
            layers.append({"type": "GaussianNoise", "std": m["noise_std"], "mode": m["noise_mode"]})
        if m["activity_l1"]:
            layers.append({"type": "ActivityL1", "lam": m["activity_l1"]})
        if m["dropout"]:
            layers.append(_dropout(m, m["dropout"]))
    # the read-out keeps torch's default init under kaiming_uniform (its gain is for ReLU units)
    readout_init = m["init"] if m["init"] not in ("default", "kaiming_uniform") else None
    layers.append({"type": "Linear", **({"init": readout_init} if readout_init else {})})
    return layers


def expand_recurrent(m: dict, steps: int) -> list[dict]:
    """A stacked RNN/LSTM over ``steps`` time steps, [dropout] on its last hidden state, a Linear read-out."""
    if len(set(m["hidden"])) != 1:
        raise ValueError(f"model.hidden must list one width per stacked recurrent layer, all equal; got {m['hidden']}")
    rnn = {"type": "LSTM" if m["kind"] == "lstm" else "RNN", "hidden_size": m["hidden"][0]}
    if len(m["hidden"]) > 1:
        rnn["num_layers"] = len(m["hidden"])
    if m["kind"] == "lstm":
        rnn.update({k: m[k] for k in ("zoneout_h", "zoneout_c") if m[k]})
    elif m["zoneout_h"]:
        rnn["zoneout"] = m["zoneout_h"]
    layers = [{"type": "SequenceEncoder", "time_steps": steps, "rnn": rnn}]
    if m["dropout"]:
        layers.append(_dropout(m, m["dropout"]))
    return layers + [{"type": "Linear"}]


def expand(m: dict, data_name: str) -> list[dict]:
    """The layer list of a resolved ``model`` table written in the shorthand."""
    if m["kind"] == "mlp":
        return expand_mlp(m)
    if data_name not in SEQUENCE_STEPS:
        raise ValueError(f"model.kind = {m['kind']!r} reads built-in data sets as sequences; for data.name = "
                         f"{data_name!r} list the layers (model.layers with a SequenceEncoder and its time_steps)")
    return expand_recurrent(m, SEQUENCE_STEPS[data_name])
