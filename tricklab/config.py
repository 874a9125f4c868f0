"""Run configuration: a TOML file, validated against a schema, with ``--set key=value`` overrides.

Every key has a type, a default and (where it matters) a range or a set of choices. Unknown keys
are refused with the closest known key as a suggestion; wrong types and out-of-range values name
the key. ``resolve(doc)`` returns the full configuration with every default filled in: that is
what a run folder records, so a run can be repeated or resumed from its folder alone.
"""

from __future__ import annotations

import copy
import difflib
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration key is unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class Key:
    type: type | tuple
    default: Any
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    help: str = ""
    optional: bool = False  # None (the default) means unset; TOML has no null, so an unset key is left out


def _prob(default, help=""):
    return Key(float, default, low=0.0, high=1.0, high_open=True, help=help)


LAYERS = ("linear", "dropconnect", "shakeout", "whiteout")
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh")
CLASSIFICATION_MONITORS = ("loss", "error", "val_loss", "val_accuracy", "val_error")
MONITORS = {"cross_entropy": CLASSIFICATION_MONITORS, "bce_with_logits": CLASSIFICATION_MONITORS,
            "mse": ("loss", "val_loss", "val_rmse", "val_r2")}
DATA_NAMES = ("mnist", "fashion", "mnist1d", "npz", "csv")
INITS = ("default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal")

SCHEMA: dict[str, dict[str, Key]] = {
    "run": {
        "seed": Key(int, 0, low=0, help="seeds every random generator of the run"),
        "name": Key(str, "run", help="folder name of the run (one component, no path)"),
    },
    "data": {
        "name": Key(str, "mnist1d", choices=DATA_NAMES,
                    help="a built-in data set, or your own file: npz (x_train, y_train[, x_test, y_test]) or csv"),
        "root": Key(str, "", help="folder with the IDX files; empty: $TRICKLAB_DATA, then the cache"),
        "path": Key(str, "", help="your data file (data.name = npz or csv)"),
        "target": Key(str, "", help="the CSV column holding the target (data.name = csv)"),
        "test_path": Key(str, "", help="a CSV file of test rows with the same columns (empty: hold out a test split)"),
        "test_fraction": Key(float, 0.2, low=0.0, high=1.0, low_open=True, high_open=True,
                             help="share of your file held out as the test split when it has none"),
        "val_fraction": Key(float, 0.1, low=0.0, high=1.0, high_open=True,
                            help="share of the training examples held out for validation; 0: none, train on all "
                            "(as a paper that reports the test score at the end; no early stopping, no lab sweeps)"),
        "train_subset": Key(int, 0, low=0, help="use only this many training examples (0: all)"),
        "test_subset": Key(int, 0, low=0, help="score only the first this many test examples (0: all)"),
        "order": Key(str, "reshuffle", choices=("reshuffle", "once", "fixed", "sorted"),
                     help="minibatch order: a new permutation every epoch, one kept for all epochs, the "
                     "stored order, or sorted by class (the shuffling experiment's worst case)"),
        "normalize": Key(str, "per_feature", choices=("per_feature", "global", "none")),
    },
    "model": {
        "kind": Key(str, "mlp", choices=("mlp", "rnn", "lstm"),
                    help="mlp, or a recurrent net reading each input as a sequence (image rows, MNIST-1D steps)"),
        "layers": Key(list, [], help="the model as a list of layers: [[model.layers]] tables naming a class of "
                      "tricklab.nn (type = \"Linear\") and its arguments; instead of the hidden = [...] shorthand"),
        "hidden": Key(list, [256, 256], help="widths of the hidden layers (recurrent: one entry per stacked layer)"),
        "activation": Key(str, "relu", choices=ACTIVATIONS),
        "init": Key(str, "default", choices=INITS),
        "batchnorm": Key(bool, False, help="batch norm after each hidden Linear, before the activation"),
        "input_dropout": _prob(0.0, "drop probability on the inputs"),
        "dropout": _prob(0.0, "drop probability after each hidden activation"),
        "dropout_scaling": Key(str, "inverted", choices=("inverted", "test")),
        "layer": Key(str, "linear", choices=LAYERS, help="kind of hidden layer"),
        "layer_p": _prob(0.5, "DropConnect drop probability"),
        "dropconnect_mask": Key(str, "example", choices=("example", "batch")),
        "dropconnect_inference": Key(str, "mean", choices=("mean", "gaussian")),
        "shakeout_tau": _prob(0.5),
        "shakeout_c": Key(float, 0.1, low=0.0),
        "whiteout_sigma": Key(float, 0.1, low=0.0),
        "whiteout_gamma": Key(float, 1.0, low=0.0),
        "whiteout_lambda": Key(float, 0.0, low=0.0),
        "whiteout_mode": Key(str, "additive", choices=("additive", "multiplicative")),
        "noise_std": Key(float, 0.0, low=0.0, help="Gaussian noise on hidden activations in training"),
        "noise_mode": Key(str, "additive", choices=("additive", "multiplicative")),
        "zoneout_h": _prob(0.0, "zoneout probability of the hidden state (rnn, lstm)"),
        "zoneout_c": _prob(0.0, "zoneout probability of the cell state (lstm)"),
        "activity_l1": Key(float, 0.0, low=0.0, help="lambda of the L1 penalty on hidden activations"),
    },
    "loss": {
        "name": Key(str, "cross_entropy", choices=("cross_entropy", "mse", "bce_with_logits"),
                    help="cross_entropy for classes, mse for regression, bce_with_logits for 0/1 targets"),
        "label_smoothing": Key(float, 0.0, low=0.0, high=1.0, help="cross-entropy's label smoothing, as torch's"),
    },
    "optimizer": {
        "name": Key(str, "adam", choices=("sgd", "adam", "adamw", "rmsprop")),
        "lr": Key(float, 1e-3, low=0.0, low_open=True),
        "momentum": Key(float, 0.0, low=0.0, high=1.0, high_open=True),
        "nesterov": Key(bool, False),
        "damped": Key(bool, False, help="SGD's dampening = momentum: v = p v + (1 - p) g, the step stays lr "
                      "whatever p (Hinton et al. 2012); torch's dampening=momentum"),
        "weight_decay": Key(float, 0.0, low=0.0),
        "decay_bn_and_bias": Key(bool, False, help="apply weight decay to biases and batch-norm parameters too"),
        "beta1": Key(float, 0.9, low=0.0, high=1.0, high_open=True),
        "beta2": Key(float, 0.999, low=0.0, high=1.0, high_open=True),
    },
    "schedule": {
        "name": Key(str, "none", choices=("none", "step", "exponential", "inverse_time", "cosine", "plateau")),
        "step_size": Key(int, 10, low=1),
        "gamma": Key(float, 0.1, low=0.0, low_open=True),
        "k": Key(float, 0.1, low=0.0, help="inverse-time decay eta_0 / (1 + k t)"),
        "min_lr": Key(float, 0.0, low=0.0),
        "patience": Key(int, 3, low=0),
        "warmup_epochs": Key(int, 0, low=0),
        "momentum_end": Key(float, 0.0, low=0.0, high=1.0, high_open=True,
                            help="momentum rises linearly from optimizer.momentum to this over "
                                 "schedule.momentum_epochs epochs, then stays (Srivastava et al. 2014); 0: off"),
        "momentum_epochs": Key(int, 0, low=0, help="epochs of the momentum ramp to schedule.momentum_end"),
    },
    "regularization": {
        "clip_value": Key(float, 0.0, low=0.0, help="clip each gradient to [-v, v] (the lecture's theta = 5); 0: off"),
        "clip_norm": Key(float, 0.0, low=0.0, help="clip the global gradient norm; 0: off"),
        "max_norm": Key(float, 0.0, low=0.0, help="max-norm constraint c on each unit's incoming weights; 0: off"),
    },
    "augmentation": {
        "rotation": Key(float, 0.0, low=0.0, help="maximum rotation in degrees"),
        "stretch": Key(float, 0.0, low=0.0, high=1.0, high_open=True, help="maximum relative stretch per axis"),
        "translation": Key(float, 0.0, low=0.0, help="maximum shift in pixels"),
        "elastic": Key(bool, False),
        "elastic_alpha": Key(float, 34.0, low=0.0),
        "elastic_sigma": Key(float, 4.0, low=0.0, low_open=True),
        "noise": Key(float, 0.0, low=0.0, help="std of additive Gaussian noise"),
    },
    "early_stopping": {
        "enabled": Key(bool, False),
        "criterion": Key(str, "patience", choices=("patience", "GL", "PQ", "UP")),
        "monitor": Key(str, "loss", help="what to watch: loss or error (1 - accuracy) on validation, or any "
                       "reported validation metric by name: val_loss, val_accuracy, val_error, val_rmse, val_r2"),
        "patience": Key(int, 5, low=0, help="epochs without improvement before stopping (0: stop at the first)"),
        "min_delta": Key(float, 0.0, low=0.0),
        "baseline": Key(float, None, optional=True,
                        help="stop if the monitored value does not beat it within patience epochs (Keras)"),
        "check_finite": Key(bool, True, help="stop when the monitored value is NaN or infinite (Lightning)"),
        "stopping_threshold": Key(float, None, optional=True,
                                  help="stop as soon as the monitored value is below it (Lightning)"),
        "divergence_threshold": Key(float, None, optional=True,
                                    help="stop as soon as the monitored value is above it (Lightning)"),
        "alpha": Key(float, 5.0, low=0.0, low_open=True),
        "strip": Key(int, 5, low=1),
        "s": Key(int, 3, low=1),
        "restore_best": Key(bool, True),
    },
    "train": {
        "epochs": Key(int, 10, low=1),
        "batch_size": Key(int, 128, low=1),
        "bn_statistics": Key(str, "recompute", choices=("recompute", "running")),
        "dtype": Key(str, "float32", choices=("float32", "float64")),
        "max_steps": Key(int, 0, low=0, help="stop after this many optimizer steps (0: train.epochs decides)"),
    },
    "logging": {
        "probe_every": Key(int, 0, low=0, help="record activation percentiles, gradient and weight norms and "
                           "update/weight ratios of every layer every this many steps (0: off); probe.npz"),
        "tensorboard": Key(bool, False, help="write TensorBoard event files to RUN/tensorboard "
                           "(pip install -e \".[tensorboard]\")"),
    },
}


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _check_value(path: str, key: Key, value):
    expected = key.type
    if value is None and key.optional:
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if expected in (int, float) and isinstance(value, bool) or not isinstance(value, expected):
        raise ConfigError(f"{path} must be of type {expected.__name__}, got {type(value).__name__} {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path} must be a finite number, got {value!r}")
    if key.choices is not None and value not in key.choices:
        raise ConfigError(f"{path} must be one of {list(key.choices)}, got {value!r}{_suggest(str(value), key.choices)}")
    if key.low is not None and (value < key.low or (key.low_open and value == key.low)):
        raise ConfigError(f"{path} must be {'>' if key.low_open else '>='} {key.low}, got {value!r}")
    if key.high is not None and (value > key.high or (key.high_open and value == key.high)):
        raise ConfigError(f"{path} must be {'<' if key.high_open else '<='} {key.high}, got {value!r}")
    if path == "model.hidden":
        if not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in value):
            raise ConfigError(f"model.hidden must be a list of positive integers, got {value!r}")
    if path == "run.name":
        _check_run_name(value)
    return value


def _check_run_name(name: str) -> None:
    """The name becomes a folder under the runs folder: one path component, never a way out of it."""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise ConfigError(f"run.name must be a plain folder name (no '/', '\\', '..' or empty name), got {name!r}")


def resolve(doc: dict) -> dict:
    """Validate ``doc`` and return the full configuration with defaults filled in."""
    if not isinstance(doc, dict):
        raise ConfigError(f"a configuration must be a table, got {type(doc).__name__}")
    out = {section: {name: copy.deepcopy(k.default) for name, k in keys.items()} for section, keys in SCHEMA.items()}
    for section, table in doc.items():
        if section not in SCHEMA:
            raise ConfigError(f"unknown section [{section}]{_suggest(section, SCHEMA)}")
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table, got {type(table).__name__} {table!r}")
        for name, value in table.items():
            if name not in SCHEMA[section]:
                known = list(SCHEMA[section]) + [f"{s}.{n}" for s in SCHEMA for n in SCHEMA[s]]
                raise ConfigError(f"unknown key {section}.{name}{_suggest(name, known)}")
            out[section][name] = _check_value(f"{section}.{name}", SCHEMA[section][name], value)
    _resolve_layers(out, doc.get("model", {}))
    check_combinations(out)
    return out


def uses_shorthand(cfg: dict) -> bool:
    """Whether a resolved configuration's model is written in the ``hidden = [...]`` shorthand
    (its ``model.layers`` then is the shorthand's expansion) rather than as an explicit layer list."""
    return "hidden" in cfg["model"]


def _resolve_layers(out: dict, given: dict) -> None:
    """Fill ``model.layers``: the shorthand's expansion, or the user's list (then the shorthand keys go).

    A table may carry both only as a resolved configuration does: the list equal to the expansion.
    """
    from .nn.spec import LayerSpecError, check_specs
    from .shorthand import SHORTHAND_KEYS, expand

    m = out["model"]
    shorthand_given = [k for k in given if k in SHORTHAND_KEYS]
    try:
        if not given.get("layers"):
            m["layers"] = expand(m, out["data"]["name"])
            return
        check_specs(m["layers"])
    except (LayerSpecError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if shorthand_given:
        if m["layers"] != expand(m, out["data"]["name"]):
            raise ConfigError(f"model.layers and the shorthand key model.{shorthand_given[0]} are both given: a "
                              "layer list describes the whole model, so remove the shorthand keys (or model.layers)")
        return
    for key in SHORTHAND_KEYS:
        del m[key]


def _get(cfg: dict, dotted: str):
    section, name = dotted.split(".")
    return cfg[section][name]


def _is_set(cfg: dict, dotted: str) -> bool:
    """A key is set when it differs from its default."""
    section, name = dotted.split(".")
    return cfg[section][name] != SCHEMA[section][name].default


def _inapplicable_rules(cfg: dict) -> list[tuple[bool, str, str, tuple[str, ...]]]:
    """(whether the choice holds, the choice, why, the keys that then would have no effect)."""
    m, o = cfg["model"], cfg["optimizer"]
    opt = o["name"]
    rules = [
        (opt in ("adam", "adamw"), f'optimizer.name = "{opt}"', "Adam's momentum is optimizer.beta1",
         ("optimizer.momentum", "optimizer.nesterov", "optimizer.damped", "schedule.momentum_end",
          "schedule.momentum_epochs")),
        (opt in ("sgd", "rmsprop"), f'optimizer.name = "{opt}"', "betas are Adam's", ("optimizer.beta1", "optimizer.beta2")),
        (opt == "rmsprop", 'optimizer.name = "rmsprop"', "Nesterov momentum and dampening are SGD's",
         ("optimizer.nesterov", "optimizer.damped")),
        (cfg["early_stopping"]["criterion"] != "patience",
         f'early_stopping.criterion = "{cfg["early_stopping"]["criterion"]}"', "a baseline is for the patience criterion",
         ("early_stopping.baseline",)),
        (cfg["loss"]["name"] != "cross_entropy", f'loss.name = "{cfg["loss"]["name"]}"',
         "label smoothing is cross-entropy's", ("loss.label_smoothing",)),
    ]
    if not uses_shorthand(cfg):
        return rules
    kind = m["kind"]
    per_hidden = ("model.batchnorm", "model.dropout", "model.noise_std", "model.activity_l1", "model.layer")
    return rules + [
        (kind == "mlp" and not m["hidden"], "model.hidden = []", "there is no hidden layer", per_hidden),
        (kind != "mlp", f'model.kind = "{kind}"', "the recurrent cells and their read-out take only zoneout "
         "and dropout on the last hidden state", ("model.batchnorm", "model.layer", "model.noise_std",
                                                  "model.activity_l1", "model.input_dropout", "model.init",
                                                  "model.activation")),
        (kind == "rnn", 'model.kind = "rnn"', "an RNN has no cell state", ("model.zoneout_c",)),
        (kind == "mlp", 'model.kind = "mlp"', "zoneout is for recurrent nets", ("model.zoneout_h", "model.zoneout_c")),
    ]


def _check_momentum_ramp(cfg: dict) -> None:
    """schedule.momentum_end and schedule.momentum_epochs come together (the ramp needs both)."""
    s = cfg["schedule"]
    if (s["momentum_end"] > 0) != (s["momentum_epochs"] > 0):
        given, missing = (("schedule.momentum_end", "schedule.momentum_epochs") if s["momentum_end"] > 0
                          else ("schedule.momentum_epochs", "schedule.momentum_end"))
        raise ConfigError(f"{given} = {toml_literal(_get(cfg, given))} needs {missing} > 0 as well (the momentum "
                          f"rises from optimizer.momentum to schedule.momentum_end over schedule.momentum_epochs)")


def check_combinations(cfg: dict) -> None:
    """Refuse keys that would have no effect on the chosen model and settings that cannot work together."""
    for holds, choice, why, keys in _inapplicable_rules(cfg):
        for dotted in keys:
            if holds and _is_set(cfg, dotted):
                raise ConfigError(f"{dotted} = {toml_literal(_get(cfg, dotted))} does not apply with {choice} "
                                  f"({why}); remove it")
    o, m = cfg["optimizer"], cfg["model"]
    if o["name"] == "sgd" and o["nesterov"] and o["momentum"] == 0:
        raise ConfigError("optimizer.nesterov = true needs optimizer.momentum > 0 (Nesterov's look-ahead is "
                          "along the momentum), got optimizer.momentum = 0.0")
    if o["name"] == "sgd" and o["nesterov"] and o["damped"]:
        raise ConfigError("optimizer.nesterov = true does not go with optimizer.damped = true (torch's Nesterov "
                          "momentum is undamped); remove one of them")
    _check_momentum_ramp(cfg)
    e = cfg["early_stopping"]
    if e["enabled"] and cfg["data"]["val_fraction"] == 0:
        raise ConfigError("early_stopping.enabled = true needs a validation split to watch, but data.val_fraction = 0.0 "
                          "holds none out; set data.val_fraction > 0 or turn early stopping off")
    monitors = MONITORS[cfg["loss"]["name"]]
    if e["monitor"] not in monitors:
        raise ConfigError(f"early_stopping.monitor = {e['monitor']!r} is not reported with loss.name = "
                          f"{cfg['loss']['name']!r}; choose one of {list(monitors)}{_suggest(e['monitor'], monitors)}")
    low, high = e["stopping_threshold"], e["divergence_threshold"]
    if low is not None and high is not None and low >= high:
        raise ConfigError(f"early_stopping.stopping_threshold = {low!r} must be below early_stopping.divergence_threshold"
                          f" = {high!r}: otherwise every epoch stops training")
    if has_batchnorm(cfg) and cfg["train"]["batch_size"] == 1:
        raise ConfigError("batch norm (model.batchnorm, or a BatchNorm layer in model.layers) needs train.batch_size "
                          ">= 2 (the statistics of a batch of one example normalize every unit to 0), "
                          "got train.batch_size = 1")


def has_batchnorm(cfg: dict) -> bool:
    """Whether the model of a resolved configuration has a batch-norm layer."""
    return any(spec["type"].startswith("BatchNorm") for spec in cfg["model"]["layers"])


def load(path: str | Path, overrides: list[str] | tuple = ()) -> dict:
    """Read a TOML file, apply ``key=value`` overrides, validate, fill defaults."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return resolve(apply_overrides(doc, overrides))


def parse_value(text: str):
    """A TOML literal (1e-3, true, [64, 64], "adam"); a bare word is taken as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(doc: dict, overrides) -> dict:
    """``section.key=value`` assignments applied to a copy of ``doc``; ``model.layers.N.arg=value``
    sets one argument of layer N (a model in the shorthand is first expanded into its layer list)."""
    doc = copy.deepcopy(doc)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, text = item.split("=", 1)
        parts = dotted.strip().split(".")
        value = parse_value(text.strip())
        if parts[:2] == ["model", "layers"] and len(parts) > 2:
            _set_layer_argument(doc, parts[2:], value, dotted.strip())
            continue
        if len(parts) != 2:
            raise ConfigError(f"override key {dotted!r} must be section.key, e.g. optimizer.lr "
                              "(or model.layers.N.argument)")
        model = doc.get("model", {})
        if parts[0] == "model" and _is_shorthand_key(parts[1]) and model.get("layers"):
            if not any(_is_shorthand_key(k) for k in model):
                raise ConfigError(f"{dotted.strip()} is a key of the hidden = [...] shorthand, but this configuration "
                                  "lists model.layers: set model.layers.N.<argument> instead")
            del model["layers"]  # a resolved shorthand model: its list is expanded again from the new keys
        doc.setdefault(parts[0], {})[parts[1]] = value
    return doc


def _is_shorthand_key(name: str) -> bool:
    from .shorthand import SHORTHAND_KEYS

    return name in SHORTHAND_KEYS


def _set_layer_argument(doc: dict, path: list[str], value, dotted: str) -> None:
    """``model.layers.N.arg[.arg ...] = value``; a shorthand model becomes its explicit layer list."""
    from .shorthand import SHORTHAND_KEYS

    model = doc.setdefault("model", {})
    if not model.get("layers") or any(k in SHORTHAND_KEYS for k in model):
        layers = resolve(doc)["model"]["layers"]
        for key in SHORTHAND_KEYS:
            model.pop(key, None)
        model["layers"] = layers
    layers = model["layers"]
    if len(path) < 2 or not path[0].isdigit():
        raise ConfigError(f"override key {dotted!r} must be model.layers.N.argument, e.g. model.layers.3.p")
    index = int(path[0])
    if index >= len(layers):
        raise ConfigError(f"{dotted}: model.layers has no entry {index}; its {len(layers)} entries are numbered "
                          f"0 to {len(layers) - 1}")
    table = layers[index]
    for name in path[1:-1]:
        if not isinstance(table.get(name), dict):
            raise ConfigError(f"{dotted}: model.layers.{index} has no table {name!r}")
        table = table[name]
    table[path[-1]] = value


def set_key(config: dict, dotted: str, value) -> dict:
    """A validated copy of a resolved ``config`` with one ``section.key`` changed."""
    return resolve(apply_overrides(config, [f"{dotted}={toml_literal(value)}"]))


def toml_literal(value) -> str:
    """``value`` (bool, str, list, number) as TOML writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def dumps(config: dict) -> str:
    """The configuration as TOML text (sections in schema order; unset optional keys left out)."""
    lines = []
    for section, table in config.items():
        lines.append(f"[{section}]")
        tables = {name: v for name, v in table.items() if isinstance(v, list) and v and all(isinstance(e, dict) for e in v)}
        lines += [f"{name} = {toml_literal(value)}" for name, value in table.items()
                  if value is not None and name not in tables]
        lines.append("")
        for name, entries in tables.items():  # arrays of tables ([[model.layers]]) after the section's keys
            for entry in entries:
                lines.append(f"[[{section}.{name}]]")
                lines += [f"{k} = {toml_literal(v)}" for k, v in entry.items()]
                lines.append("")
    return "\n".join(lines)
