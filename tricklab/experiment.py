"""From a resolved configuration to a trained model: the lecture's "setting up a problem".

Obtain the data and hold out validation data; normalize the inputs with statistics of the
training split only; choose the architecture, the loss, the regularization and the heuristics
(batch norm, dropout, ...); choose the optimizer; train while evaluating on validation data and
stop early; only then score the test split, once.

A run folder holds::

    config.toml      the resolved configuration (every default written out)
    .lock            held by the process training in the folder (its PID), see train/runlock.py
    checkpoints/     crash-safe training state after every epoch
    history.csv      one row per epoch (also history.jsonl)
    model.npz        final weights and the input normalizer (NumPy archive, no pickle)
    metrics.json     final validation and test scores, wall time, batch-norm statistics used
    curves.png       loss and accuracy curves

:func:`run` is the one pipeline every command goes through: ``tricklab train``, the lab's trials,
ablations and reproductions.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import config as config_
from . import nn, optim
from .data import (Compose, DataLoader, ElasticDistortion, GaussianNoise, RandomRotation, RandomStretch,
                   RandomTranslation, Standardizer, load_mnist, load_mnist1d, train_val_split)
from .nn.summary import summary
from .train import Callback, EarlyStopping, Trainer, evaluate, metrics_for
from .fileio import atomic_write_bytes
from .train.checkpoint import CheckpointError, list_checkpoints, load_latest
from .train.runlock import hold_run_folder

N_CLASSES = 10  # the built-in data sets
N_FEATURES = {"mnist": 784, "fashion": 784, "mnist1d": 40}
SAMPLE_SHAPES = {"mnist": (1, 28, 28), "fashion": (1, 28, 28), "mnist1d": (40,)}  # (C, H, W) images


@dataclass
class Data:
    """Training, validation and test splits as float32 feature rows (N, F) with their targets
    (``val`` None when ``data.val_fraction = 0``: every training example is trained on).

    ``sample_shape`` is one example's own shape ((1, 28, 28) for an MNIST image, (C, H, W) from an
    npz archive); an explicit layer list sees examples of that shape, the ``hidden`` shorthand's
    MLP sees the rows. ``n_outputs`` is the width the model's last layer must have.
    """
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray] | None
    test: tuple[np.ndarray, np.ndarray]
    image_shape: tuple[int, ...] | None
    sample_shape: tuple[int, ...] = ()
    n_outputs: int = N_CLASSES
    note: str | None = None
    columns: list[str] | None = None  # a CSV file's feature columns, in the order of x's columns


def load_raw(cfg: dict) -> tuple[tuple, tuple, tuple[int, ...], str | None, list[str] | None]:
    """(train, test, sample shape, note, CSV columns) with x as float32 rows; built-in images scaled to [0, 1]."""
    d = cfg["data"]
    name, root = d["name"], d["root"] or None
    if name == "mnist1d":
        return load_mnist1d("train"), load_mnist1d("test"), SAMPLE_SHAPES[name], None, None
    if name in ("npz", "csv"):
        return _load_file(cfg)
    kind = "fashion" if name == "fashion" else "mnist"
    splits = []
    for split in ("train", "test"):
        X, y = load_mnist(split, root=root, kind=kind)
        splits.append(((X.reshape(len(X), -1) / np.float32(255.0)).astype(np.float32), y))
    return splits[0], splits[1], SAMPLE_SHAPES[name], None, None


def _load_file(cfg: dict) -> tuple[tuple, tuple, tuple[int, ...], str | None, list[str] | None]:
    """The user's npz archive or CSV table; targets checked against (and converted for) the loss."""
    from .data.files import load_csv, load_npz

    d, loss = cfg["data"], cfg["loss"]["name"]
    if not d["path"]:
        raise config_.ConfigError(f"data.name = {d['name']!r} needs data.path, the file to read")
    if d["name"] == "npz":
        for key in ("target", "test_path"):
            if d[key]:
                raise config_.ConfigError(f"data.{key} is for data.name = \"csv\"; an npz archive holds x_test, y_test")
        f = load_npz(d["path"], test_fraction=d["test_fraction"], seed=0, loss=loss)
    else:
        if not d["target"]:
            raise config_.ConfigError("data.name = \"csv\" needs data.target, the name of the target column")
        f = load_csv(d["path"], d["target"], test_path=d["test_path"] or None, test_fraction=d["test_fraction"], seed=0,
                     loss=loss)
    rows = lambda x: np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)
    columns = list(f.columns) if f.columns is not None else None
    return (rows(f.x_train), f.y_train), (rows(f.x_test), f.y_test), tuple(f.sample_shape), f.note, columns


def _targets_for_loss(y: np.ndarray, loss: str) -> np.ndarray:
    """MSE and BCE compare outputs of shape (N, k) with targets of that shape: (N,) becomes (N, 1)."""
    return y.reshape(len(y), 1) if loss != "cross_entropy" and y.ndim == 1 else y


def count_outputs(cfg: dict, y_train: np.ndarray, y_test: np.ndarray) -> int:
    """The last layer's width: the number of classes for cross-entropy, of targets otherwise.

    ``y_train`` holds every training label, before the validation split: a class may be among
    the validation examples only.
    """
    if cfg["loss"]["name"] != "cross_entropy":
        return int(y_train.shape[1])
    if cfg["data"]["name"] not in ("npz", "csv"):
        return N_CLASSES
    return int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1


def prepare_data(cfg: dict, seeds: np.random.SeedSequence) -> Data:
    (X, y), (X_test, y_test), sample_shape, note, columns = load_raw(cfg)
    loss = cfg["loss"]["name"]
    if loss != "cross_entropy" and cfg["data"]["name"] not in ("npz", "csv"):
        raise config_.ConfigError(f"loss.name = {loss!r} needs float or 0/1 targets; the built-in data set "
                                  f"{cfg['data']['name']} has classes: use loss.name = \"cross_entropy\"")
    y, y_test = _targets_for_loss(y, loss), _targets_for_loss(y_test, loss)
    subset = cfg["data"]["train_subset"]
    if subset > len(X):
        raise config_.ConfigError(f"data.train_subset = {subset} is larger than the {len(X)} training examples of "
                                  f"{cfg['data']['name']}; use at most {len(X)} (or 0: all)")
    if subset:
        X, y = X[:subset], y[:subset]
    if cfg["data"]["test_subset"]:
        X_test, y_test = X_test[:cfg["data"]["test_subset"]], y_test[:cfg["data"]["test_subset"]]
    if cfg["data"]["val_fraction"] == 0:  # no validation split: train on all, as a paper scoring at the end
        train, val = (X, y), None
    else:
        Xtr, ytr, Xva, yva = train_val_split(X, y, val_fraction=cfg["data"]["val_fraction"],
                                             seed=np.random.default_rng(seeds))
        train, val = (Xtr, ytr), (Xva, yva)
    return Data(train, val, (X_test, y_test), _image_shape(sample_shape), sample_shape,
                count_outputs(cfg, y, y_test), note, columns)


def _image_shape(sample_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(H, W) of gray images, (H, W) or (1, H, W), for the augmentations; None for other data."""
    if len(sample_shape) == 3 and sample_shape[0] == 1:
        return sample_shape[1:]
    return sample_shape if len(sample_shape) == 2 else None


def model_input_shape(cfg: dict, data: Data) -> tuple[int, ...]:
    """Examples as the model sees them: rows for the shorthand's MLP, their own shape for a layer list."""
    if config_.uses_shorthand(cfg):
        return (int(np.prod(data.sample_shape)),)
    return data.sample_shape


def check_model(cfg: dict) -> None:
    """Build a configuration's model once on a built-in data set's known shapes, so that a value its
    layer refuses (``model.layers.3.p = 1.5``) or a width that does not fit is a ConfigError now, not
    when training starts. The user's files are checked when they are read.

    The lab checks every trial's configuration here: its sweeps rank and its ablations measure on
    the validation split, so ``data.val_fraction = 0`` (no validation split) is refused."""
    if cfg["data"]["val_fraction"] == 0:
        raise config_.ConfigError("data.val_fraction = 0.0 holds out no validation split, and the lab's sweeps and "
                                  "ablations rank and measure on it; set data.val_fraction > 0 (e.g. 0.1)")
    shape = builtin_input_shape(cfg)
    if shape is not None:
        check_fits_in_memory(cfg, shape, N_CLASSES)
        build_model(cfg, shape, N_CLASSES, np.random.SeedSequence(0))


def model_summary(cfg: dict) -> str:
    """The model of a configuration, layer by layer (built-in data sets are not read: their shapes are known)."""
    shape = builtin_input_shape(cfg)
    if shape is None:
        data = prepare_data(cfg, np.random.SeedSequence(cfg["run"]["seed"]).spawn(3)[0])
        shape, n_out = model_input_shape(cfg, data), data.n_outputs
    else:
        n_out = N_CLASSES
    return summary(build_model(cfg, shape, n_out, np.random.SeedSequence(0)), shape)


def fit_normalizer(cfg: dict, X_train: np.ndarray) -> Standardizer | None:
    """Zero mean, unit variance with statistics of the training split only (or None)."""
    mode = cfg["data"]["normalize"]
    if mode == "none":
        return None
    return Standardizer(per_feature=mode == "per_feature").fit(X_train)


def build_model(cfg: dict, input_shape: tuple[int, ...] | int, n_out: int,
                seeds: np.random.SeedSequence) -> nn.Sequential:
    """The layers of ``model.layers`` (the ``hidden`` shorthand's expansion, or the user's list) for
    examples of ``input_shape``, the last width ``n_out``; one generator per random layer from ``seeds``."""
    from .nn.spec import LayerSpecError, build_layers

    shape = (input_shape,) if isinstance(input_shape, (int, np.integer)) else tuple(input_shape)
    try:
        return build_layers(cfg["model"]["layers"], shape, n_out, seeds, dtype=cfg["train"]["dtype"])
    except LayerSpecError as exc:
        raise config_.ConfigError(str(exc)) from None


def _spec_parameters(spec: dict, shape: tuple[int, ...], width: int | None) -> tuple[int, tuple[int, ...]]:
    """(trainable values, output shape) of one layer specification, from the sizes alone."""
    kind = spec["type"]
    if kind == "Flatten":
        return 0, (int(np.prod(shape)),)
    if "out_features" in spec or (width is not None and kind in ("Linear", "DropConnect", "Shakeout", "Whiteout")):
        n_in, n_out = int(np.prod(shape)), int(spec.get("out_features", width))
        return n_in * n_out + n_out * bool(spec.get("bias", True)), (n_out,)
    if kind.startswith("BatchNorm"):
        return 2 * shape[0] * bool(spec.get("affine", True)), shape
    if kind == "Conv2d":
        return _conv_parameters(spec, shape)
    if kind in ("MaxPool2d", "AvgPool2d"):
        k = _pair(spec["kernel_size"])
        s = _pair(spec.get("stride") or spec["kernel_size"])
        return 0, (shape[0], *_window_output(shape[1:], k, s, _pair(spec.get("padding", 0)), (1, 1)))
    if kind == "AdaptiveAvgPool2d":
        size = _pair(spec["output_size"])
        return 0, (shape[0], *(o if o is not None else n for o, n in zip(size, shape[1:])))
    if kind == "SequenceEncoder":
        rnn, steps = spec["rnn"], spec["time_steps"]
        gates = 4 if rnn["type"] == "LSTM" else 1
        h, layers = rnn["hidden_size"], rnn.get("num_layers", 1)
        inputs = [int(np.prod(shape)) // steps] + [h] * (layers - 1)
        return sum(gates * h * (i + h + 2) for i in inputs), (h,)
    return 0, shape


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def _window_output(size, kernel, stride, padding, dilation) -> tuple[int, ...]:
    """floor((n + 2p - d (k - 1) - 1) / s) + 1 per axis, as torch's convolutions and poolings."""
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(size, kernel, stride, padding, dilation))


def _conv_parameters(spec: dict, shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """Conv2d: out (in / groups) kh kw + out values; output (out, H', W')."""
    out, k = int(spec["out_channels"]), _pair(spec["kernel_size"])
    n = out * (shape[0] // spec.get("groups", 1)) * k[0] * k[1] + out * bool(spec.get("bias", True))
    padding, stride, dilation = spec.get("padding", 0), _pair(spec.get("stride", 1)), _pair(spec.get("dilation", 1))
    if padding == "same":
        return n, (out, *shape[1:])
    padding = (0, 0) if padding == "valid" else _pair(padding)
    return n, (out, *_window_output(shape[1:], k, stride, padding, dilation))


def count_parameters(cfg: dict, input_shape: tuple[int, ...] | int, n_out: int) -> int:
    """The number of trainable values :func:`build_model` creates, from the sizes alone (nothing allocated)::

        Linear-like, n_in -> n_out:          n_in n_out + n_out (bias)
        Conv2d, C -> out channels, kh x kw:  out (C / groups) kh kw + out (bias)
        BatchNorm over C features:           2 C (gamma, beta)
        RNN (g = 1) / LSTM (g = 4) layer l:  g h (i_l + h + 2), i_1 = features per step, i_l = h after
    """
    shape = (input_shape,) if isinstance(input_shape, (int, np.integer)) else tuple(input_shape)
    specs, total = cfg["model"]["layers"], 0
    last = max((i for i, s in enumerate(specs) if s["type"] in ("Linear", "DropConnect", "Shakeout", "Whiteout")),
               default=None)
    for i, spec in enumerate(specs):
        n, shape = _spec_parameters(spec, shape, n_out if i == last else None)
        total += n
    return total


def optimizer_state_copies(cfg: dict) -> int:
    """Arrays of a parameter's size that the optimizer keeps per parameter (moments, momentum buffers)."""
    o = cfg["optimizer"]
    if o["name"] in ("adam", "adamw"):
        return 2
    return int(o["momentum"] > 0) + (o["name"] == "rmsprop")


def training_bytes(cfg: dict, input_shape: tuple[int, ...] | int | None = None, n_out: int = N_CLASSES) -> int:
    """Bytes of the arrays that training holds per parameter: weights, gradients, optimizer state,
    and the best weights kept for early stopping's restore; activations and data not counted.
    ``input_shape`` defaults to the built-in data set's rows."""
    e = cfg["early_stopping"]
    copies = 2 + optimizer_state_copies(cfg) + int(e["enabled"] and e["restore_best"])
    n = count_parameters(cfg, N_FEATURES[cfg["data"]["name"]] if input_shape is None else input_shape, n_out)
    return copies * n * np.dtype(cfg["train"]["dtype"]).itemsize


def physical_memory() -> int:
    """Bytes of memory of this machine."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits_in_memory(cfg: dict, input_shape: tuple[int, ...] | int | None = None, n_out: int = N_CLASSES) -> None:
    """Refuse a model whose training arrays alone would exceed the machine's memory, before allocating them."""
    need, have = training_bytes(cfg, input_shape, n_out), physical_memory()
    if need > have:
        n = count_parameters(cfg, N_FEATURES[cfg["data"]["name"]] if input_shape is None else input_shape, n_out)
        what = f"model.hidden = {cfg['model']['hidden']}" if config_.uses_shorthand(cfg) else "model.layers"
        raise config_.ConfigError(
            f"{what} needs about {need / 2**30:.1f} GiB for its {n:,} parameters "
            f"(weights, gradients and {cfg['optimizer']['name']} state in train.dtype = \"{cfg['train']['dtype']}\"), "
            f"more than the {have / 2**30:.1f} GiB of memory of this machine; choose smaller widths")


def input_pipeline(normalizer: Standardizer | None, shape: tuple[int, ...]):
    """Rows -> normalized float32 examples of the model's input ``shape``."""
    def prepare(X):
        X = normalizer.transform(X).astype(np.float32) if normalizer is not None else X
        return X.reshape(len(X), *shape)
    return prepare


def build_loss(cfg: dict, dtype) -> nn.Module:
    """The configured loss: cross-entropy (with label smoothing), MSE or binary cross-entropy on logits."""
    name = cfg["loss"]["name"]
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=cfg["loss"]["label_smoothing"], dtype=dtype)
    return nn.MSELoss(dtype=dtype) if name == "mse" else nn.BCEWithLogitsLoss(dtype=dtype)


def parameter_groups(cfg: dict, model: nn.Module) -> list[dict]:
    """Weight decay on weight matrices only, sparing biases and batch-norm parameters by default."""
    o = cfg["optimizer"]
    if o["decay_bn_and_bias"] or not o["weight_decay"]:
        return [{"params": list(model.parameters())}]
    decay = [p for p in model.parameters() if p.data.ndim >= 2]
    spare = [p for p in model.parameters() if p.data.ndim < 2]
    return [{"params": decay}, {"params": spare, "weight_decay": 0.0}]


def build_optimizer(cfg: dict, model: nn.Module):
    o = cfg["optimizer"]
    groups = parameter_groups(cfg, model)
    if o["name"] == "sgd":
        return optim.SGD(groups, lr=o["lr"], momentum=o["momentum"], nesterov=o["nesterov"],
                         dampening=o["momentum"] if o["damped"] else 0.0, weight_decay=o["weight_decay"])
    if o["name"] == "rmsprop":
        return optim.RMSprop(groups, lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"])
    cls = optim.Adam if o["name"] == "adam" else optim.AdamW
    return cls(groups, lr=o["lr"], betas=(o["beta1"], o["beta2"]), weight_decay=o["weight_decay"])


def build_scheduler(cfg: dict, optimizer) -> list:
    """The schedules, stepped once per epoch: an optional linear warm-up over ``warmup_epochs``
    chained with the named decay (their factors multiply, as in PyTorch), and an optional momentum
    ramp to ``momentum_end`` over ``momentum_epochs`` (damped with ``optimizer.damped``)."""
    s = cfg["schedule"]
    out = []
    if s["warmup_epochs"]:
        out.append(optim.lr_scheduler.LinearWarmup(optimizer, s["warmup_epochs"], start_factor=1.0 / (s["warmup_epochs"] + 1)))
    decay = _decay_schedule(cfg, optimizer)
    out += [decay] if decay is not None else []
    if s["momentum_end"]:
        out.append(optim.lr_scheduler.MomentumRamp(optimizer, s["momentum_end"], s["momentum_epochs"],
                                                   damped=cfg["optimizer"]["damped"]))
    return out


def _decay_schedule(cfg: dict, optimizer):
    s, epochs = cfg["schedule"], cfg["train"]["epochs"]
    sched = optim.lr_scheduler
    name = s["name"]
    if name == "none":
        return None
    if name == "step":
        return sched.StepLR(optimizer, step_size=s["step_size"], gamma=s["gamma"])
    if name == "exponential":
        return sched.ExponentialLR(optimizer, gamma=s["gamma"])
    if name == "inverse_time":
        return sched.InverseTimeLR(optimizer, k=s["k"])
    if name == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=s["min_lr"])
    return sched.ReduceLROnPlateau(optimizer, factor=s["gamma"], patience=s["patience"], min_lr=s["min_lr"])


def build_augmentation(cfg: dict, image_shape, normalizer: Standardizer | None):
    """The per-minibatch transform: distortions of the raw images, then input normalization."""
    a = cfg["augmentation"]
    augs = []
    if image_shape is None and any([a["rotation"], a["stretch"], a["translation"], a["elastic"]]):
        raise config_.ConfigError("augmentation.rotation/stretch/translation/elastic need image data "
                                  f"(mnist or fashion), not {cfg['data']['name']}")
    kw = {"image_shape": image_shape} if image_shape is not None else {}
    if a["rotation"]:
        augs.append(RandomRotation(a["rotation"], **kw))
    if a["stretch"]:
        augs.append(RandomStretch(a["stretch"], **kw))
    if a["translation"]:
        if a["translation"] < 1:
            raise config_.ConfigError(f"augmentation.translation is in pixels and must be >= 1 (or 0: off), "
                                      f"got {a['translation']}")
        augs.append(RandomTranslation(a["translation"], **kw))
    if a["elastic"]:
        augs.append(ElasticDistortion(alpha=a["elastic_alpha"], sigma=a["elastic_sigma"], **kw))
    if a["noise"]:
        augs.append(GaussianNoise(a["noise"]))
    if not augs:
        return None
    pipeline = Compose(augs)

    def transform(xb, rng):
        xb = pipeline(xb, rng).astype(np.float32, copy=False)
        return normalizer.transform(xb) if normalizer is not None else xb

    return transform


@dataclass
class Experiment:
    cfg: dict
    data: Data
    normalizer: Standardizer | None
    model: nn.Sequential
    trainer: Trainer
    train_loader: DataLoader
    bn_loader: DataLoader
    val: tuple
    test: tuple
    input_shape: tuple[int, ...] = ()


def build(cfg: dict, run_dir: Path | None = None, progress: bool | None = None, log=None) -> Experiment:
    """Data, model, optimizer and trainer of a configuration; nothing is written to ``run_dir`` yet."""
    if cfg["data"]["name"] not in ("npz", "csv"):
        check_fits_in_memory(cfg)  # before the data are read, when their sizes are known beforehand
    seeds = np.random.SeedSequence(cfg["run"]["seed"])
    s_split, s_model, s_loader = seeds.spawn(3)
    data = prepare_data(cfg, s_split)
    if data.note and log is not None:
        log(data.note)
    shape = model_input_shape(cfg, data)
    check_fits_in_memory(cfg, shape, data.n_outputs)
    normalizer = fit_normalizer(cfg, data.train[0])
    norm = input_pipeline(normalizer, shape)
    Xtr, ytr = data.train
    augment = build_augmentation(cfg, data.image_shape, normalizer)
    transform = (lambda xb, rng: augment(xb, rng).reshape(len(xb), *shape)) if augment is not None else None
    Xtr_in = Xtr if transform is not None else norm(Xtr)
    t = cfg["train"]
    # batch norm cannot train on a last batch of one example: drop such a tail (it changes every epoch)
    tail_of_one = config_.has_batchnorm(cfg) and len(Xtr) % t["batch_size"] == 1
    loader_rng = np.random.default_rng(s_loader)
    Xtr_in, ytr_in = training_order(cfg["data"]["order"], Xtr_in, ytr, loader_rng)
    loader = DataLoader(Xtr_in, ytr_in, t["batch_size"], shuffle=cfg["data"]["order"] == "reshuffle",
                        drop_last=tail_of_one, rng=loader_rng, transform=transform)
    bn_loader = DataLoader(norm(Xtr), ytr, t["batch_size"], shuffle=False, drop_last=tail_of_one)
    model = build_model(cfg, shape, data.n_outputs, s_model)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    r, e = cfg["regularization"], cfg["early_stopping"]
    stopper = None
    if e["enabled"]:
        stopper = EarlyStopping(e["criterion"], patience=e["patience"], min_delta=e["min_delta"], alpha=e["alpha"],
                                strip=e["strip"], s=e["s"], restore_best=e["restore_best"], monitor=e["monitor"],
                                baseline=e["baseline"], check_finite=e["check_finite"],
                                stopping_threshold=e["stopping_threshold"],
                                divergence_threshold=e["divergence_threshold"])
    constraints = [nn.MaxNorm(r["max_norm"])] if r["max_norm"] else []
    trainer = Trainer(model, build_loss(cfg, model.dtype), optimizer, scheduler=scheduler,
                      metrics=metrics_for(cfg["loss"]["name"]),
                      clip_value=r["clip_value"] or None, clip_norm=r["clip_norm"] or None, constraints=constraints,
                      early_stopping=stopper, bn_statistics=t["bn_statistics"], run_dir=run_dir,
                      generators={"loader": loader.rng}, progress=progress, log=log,
                      extra_state={"config": cfg, "normalizer": normalizer.state_dict() if normalizer else None})
    val = (norm(data.val[0]), data.val[1]) if data.val is not None else None
    test = (norm(data.test[0]), data.test[1])
    return Experiment(cfg, data, normalizer, model, trainer, loader, bn_loader, val, test, shape)


def training_order(order: str, X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple:
    """The training examples in the order the loader keeps (``data.order``): as stored for "reshuffle"
    (the loader draws a permutation every epoch) and "fixed", one permutation drawn now for "once",
    sorted by class (stable) for "sorted"."""
    if order == "once":
        perm = rng.permutation(len(X))
        return X[perm], y[perm]
    if order == "sorted":
        by_class = np.argsort(y if y.ndim == 1 else y.argmax(1), kind="stable")
        return X[by_class], y[by_class]
    return X, y


class MaxSteps(Callback):
    """Stop training after ``train.max_steps`` optimizer steps (Lightning's ``max_steps``)."""

    def __init__(self, steps: int):
        self.steps = int(steps)

    def on_train_begin(self, logs):
        if self.trainer.step_count >= self.steps:
            self.trainer.stop_training = True

    def on_batch_end(self, batch, logs):
        if self.trainer.step_count >= self.steps:
            self.trainer.stop_training = True


# ---------------------------------------------------------------------------- runs
def save_model(path: Path, model: nn.Module, normalizer: Standardizer | None,
               input_shape: tuple[int, ...] | None = None, n_outputs: int | None = None,
               columns: list[str] | None = None) -> None:
    """Weights (state_dict names as PyTorch's), the input normalizer, and what the model reads
    (one example's shape, the CSV feature columns) and writes (its width), in one archive."""
    import io

    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    if input_shape is not None:
        arrays["shape/input"] = np.asarray(input_shape, dtype=np.int64)
        arrays["shape/outputs"] = np.asarray(n_outputs, dtype=np.int64)
    if columns:
        arrays["data/columns"] = np.asarray(columns, dtype=str)
    if normalizer is not None:
        s = normalizer.state_dict()
        arrays["normalizer/mean"], arrays["normalizer/std"] = np.asarray(s["mean"]), np.asarray(s["std"])
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _model_archive(path: Path) -> dict[str, np.ndarray]:
    """Every array of a model.npz whose weights are all finite; else ModelFileError naming the file."""
    import io

    from .errors import ModelFileError

    data = path.read_bytes()  # an unreadable file stays an OSError naming it; the rest is parsing
    not_ours = f"{path} is not a tricklab model archive, or it is corrupt or truncated"
    if not data.startswith(b"PK"):  # np.load would guess a pickle and say so
        what = ("an empty file" if not data else "a single .npy array" if data.startswith(b"\x93NUMPY")
                else f"{len(data)} bytes that are no zip (.npz) archive")
        raise ModelFileError(f"{not_ours} ({what})")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    # The bytes are in memory, so whatever fails here means they are no whole .npz archive; numpy's
    # parser raises many kinds (BadZipFile, ValueError, EOFError, tokenize.TokenError, ...).
    except Exception as exc:
        raise ModelFileError(f"{not_ours} ({exc or type(exc).__name__})") from exc
    if not any(k.startswith("model/") for k in arrays):
        raise ModelFileError(f"{path} is not a tricklab model archive (no model/ arrays, it holds "
                             f"{', '.join(arrays) or 'nothing'})")
    for name, a in arrays.items():
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            raise ModelFileError(f"{path}: {name} holds NaN or inf; refusing to evaluate non-finite weights "
                                 "(did the training diverge?)")
    return arrays


def load_model(run_dir: Path) -> tuple[nn.Sequential, Standardizer | None, dict]:
    """Rebuild a run's model from its config.toml and model.npz.

    Raises ModelFileError naming model.npz when it is no tricklab model archive (corrupt,
    truncated, another file), holds NaN or inf, or was written with another configuration.
    """
    from .errors import ModelFileError

    run_dir = Path(run_dir)
    cfg = config_.load(run_dir / "config.toml")
    path = run_dir / "model.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: the run in {run_dir} has not finished")
    arrays = _model_archive(path)
    state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    shape, n_out = archived_shapes(arrays, cfg)
    other = f"{path} was written with another configuration than {run_dir / 'config.toml'}"
    expected = builtin_input_shape(cfg)
    if expected is not None and shape != expected:
        raise ModelFileError(f"{other} (its model reads examples of shape {shape}; data.name = "
                             f"{cfg['data']['name']!r} gives {expected})")
    try:
        model = build_model(cfg, shape, n_out, np.random.SeedSequence(0))
        model.load_state_dict(state)
    except (KeyError, ValueError) as exc:
        raise ModelFileError(f"{other} ({exc.args[0] if exc.args else exc})") from exc
    n_in = int(np.prod(shape))
    return model.eval(), _archived_normalizer(arrays, cfg["data"]["normalize"], n_in, other), cfg


def builtin_input_shape(cfg: dict) -> tuple[int, ...] | None:
    """The model's input shape on a built-in data set (None for the user's files: known once read)."""
    name = cfg["data"]["name"]
    if name not in SAMPLE_SHAPES:
        return None
    return (N_FEATURES[name],) if config_.uses_shorthand(cfg) else SAMPLE_SHAPES[name]


def archived_shapes(arrays: dict, cfg: dict) -> tuple[tuple[int, ...], int]:
    """(one example's input shape, the number of outputs) of a model archive; archives written before
    they recorded shapes hold a model of the built-in data set's rows and 10 classes."""
    if "shape/input" in arrays:
        return tuple(int(n) for n in arrays["shape/input"]), int(arrays["shape/outputs"])
    return (N_FEATURES[cfg["data"]["name"]],), N_CLASSES


def _archived_normalizer(arrays: dict, mode: str, n_in: int, other: str) -> Standardizer | None:
    """The archive's input normalizer, if it is the one ``data.normalize = mode`` would have fitted."""
    from .errors import ModelFileError

    mean, std = arrays.get("normalizer/mean"), arrays.get("normalizer/std")
    if (mode == "none") != (mean is None):
        raise ModelFileError(f"{other} (data.normalize = {mode!r}, the archive "
                             f"{'lacks' if mean is None else 'holds'} an input normalizer)")
    if mean is None:
        return None
    expected = (n_in,) if mode == "per_feature" else ()
    if std is None or mean.shape != expected or std.shape != expected:
        raise ModelFileError(f"{other} (normalizer of shape {mean.shape}, data.normalize = {mode!r} with "
                             f"{n_in} features needs {expected})")
    normalizer = Standardizer(per_feature=mode == "per_feature")
    normalizer.load_state_dict({"mean": mean, "std": std})
    return normalizer


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2) + "\n").encode())


@dataclass
class Result:
    """What :func:`run` returns: the final scores, the history (one row per epoch) and the experiment
    (model, trainer, data) it trained."""
    metrics: dict
    history: list[dict]
    experiment: Experiment


RESUME = ("never", "always", "auto")


def run(cfg: dict, run_dir: str | Path | None = None, *, resume: str = "never", restart: bool = False,
        callbacks=(), score_test: bool = True, progress: bool | None = None, log=None, plots: bool = True,
        hold: bool = True) -> Result:
    """The one pipeline from a resolved configuration to a trained, scored and saved run.

    build (data, model, optimizer, trainer) -> resume -> fit -> evaluate (validation; test once,
    if ``score_test``) -> save (model.npz, metrics.json, curves.png). ``tricklab train``, the
    lab's trials and ablations and every reproduction call it; what they measure besides comes in
    as ``callbacks`` (:class:`tricklab.train.Callback`), which see every step and epoch.

    With ``run_dir=None`` nothing is written (a reproduction's runs in memory). Otherwise every
    check runs before the folder is touched; the folder is then held (one process per run folder;
    ``hold=False`` when the caller already holds it) until the run ends. ``resume``: "never"
    refuses a folder that holds checkpoints, "always" continues from the last one and refuses a
    folder without a usable one unless ``restart`` (then training starts over at epoch 1), "auto"
    continues if there is one. On resume the configuration must be the checkpoint's, except
    ``train.epochs``: more epochs extend a finished run.
    """
    if resume not in RESUME:
        raise ValueError(f"resume must be one of {RESUME}, got {resume!r}")
    log = log or (lambda msg: print(msg, file=sys.stderr))
    start = time.perf_counter()
    exp = build(cfg, run_dir=run_dir, progress=progress, log=log)
    callbacks = [*logging_callbacks(cfg, run_dir), *callbacks]
    if run_dir is None:
        return _fit_and_score(exp, None, start, callbacks, score_test, plots)
    run_dir = Path(run_dir)
    with _writing(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        with hold_run_folder(run_dir) if hold else nullcontext():
            _start_or_resume(exp, run_dir, resume, restart, log)
            atomic_write_bytes(run_dir / "config.toml", config_.dumps(cfg).encode())
            log(summary(exp.model, exp.input_shape))
            result = _fit_and_score(exp, run_dir, start, callbacks, score_test, plots)
    log(f"{headline(result.metrics)} -> {run_dir}")
    return result


def logging_callbacks(cfg: dict, run_dir: Path | None) -> list:
    """The callbacks a configuration asks for: ``train.max_steps``, and what ``[logging]`` switches on
    (probe, TensorBoard), writing into ``run_dir``."""
    section = cfg.get("logging") or {}
    out = [MaxSteps(cfg["train"]["max_steps"])] if cfg["train"].get("max_steps") else []
    if section.get("probe_every"):
        from .train.probe import Probe

        out.append(Probe(every=section["probe_every"]))
    if section.get("tensorboard"):
        if run_dir is None:
            raise config_.ConfigError("logging.tensorboard needs a run folder (tricklab train --out DIR)")
        from .train.loggers import TensorBoard

        out.append(TensorBoard(Path(run_dir) / "tensorboard"))
    return out


def train_run(cfg: dict, run_dir: str | Path, resume: bool = False, progress: bool | None = None,
              log=None, plots: bool = True, restart: bool = False, callbacks=()) -> dict:
    """``tricklab train``: :func:`run` in ``run_dir``, resuming from its last checkpoint if ``resume``;
    returns the final metrics."""
    return run(cfg, run_dir, resume="always" if resume else "never", restart=restart, callbacks=callbacks,
               progress=progress, log=log, plots=plots).metrics


def _start_or_resume(exp: Experiment, run_dir: Path, resume: str, restart: bool, log) -> None:
    has_checkpoints = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    if resume == "always" or (resume == "auto" and has_checkpoints):
        # "auto" (a lab trial): a folder whose only checkpoint was cut short by a kill starts over
        _resume(exp, run_dir, restart or resume == "auto", log)
    elif has_checkpoints:
        raise FileExistsError(f"{run_dir} already holds a run; use `tricklab train --resume {run_dir}` "
                              "or choose another --out folder")


@contextmanager
def _writing(run_dir: Path):
    """An operating-system error while writing names the run folder (read-only, full disk, not a folder).

    Errors of our own (no errno: a busy folder, a run already there) pass through unchanged.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno is None:
            raise
        raise type(exc)(exc.errno, f"cannot write the run folder {run_dir}: {exc.strerror}", exc.filename) from exc


def _resume(exp: Experiment, run_dir: Path, restart: bool, log) -> None:
    """Load the newest usable checkpoint; without one refuse, or start over if ``restart``."""
    folder, damaged = run_dir / "checkpoints", []
    found = load_latest(folder, warn=damaged.append)
    if found is not None:
        state, path = found
        for message in damaged:
            log(f"skipped a damaged checkpoint: {message}")
        _load_checkpoint(exp, state, path, log)
        log(f"resumed from {path} (epoch {exp.trainer.epoch})")
        return
    why = f" ({'; '.join(damaged)})" if damaged else ""
    if not restart:
        raise CheckpointError(f"{folder} holds no usable checkpoint{why}: nothing to resume; "
                              f"pass --restart to train {run_dir} again from epoch 1")
    for path in list_checkpoints(folder):  # unusable: they would shadow the new run's checkpoints
        path.unlink()
        path.with_suffix(".npz").unlink(missing_ok=True)
    log(f"no usable checkpoint in {folder}{why}; starting over at epoch 1 (--restart)")


def _fit_and_score(exp: Experiment, run_dir: Path | None, start: float, callbacks, score_test: bool,
                   plots: bool) -> Result:
    """Train to ``train.epochs`` (or early stopping), score validation (and test) once, write the results."""
    cfg = exp.cfg
    exp.trainer.fit(exp.train_loader, exp.val, epochs=cfg["train"]["epochs"], bn_batches=exp.bn_loader,
                    callbacks=callbacks)
    val = exp.trainer.evaluate(exp.val) if exp.val is not None else {}  # data.val_fraction = 0: no val_*
    test = exp.trainer.evaluate(exp.test) if score_test else {}
    es = exp.trainer.early_stopping
    metrics = {
        **scores(val, test),
        "epochs_run": exp.trainer.epoch,
        "best_epoch": es.best_epoch if es is not None else exp.trainer.epoch,
        "stopped_early": bool(es is not None and es.stopped_epoch is not None),
        "bn_statistics": cfg["train"]["bn_statistics"],
        "seconds_this_session": time.perf_counter() - start,
        "seconds_training": float(sum(row["seconds"] for row in exp.trainer.history)),
        "n_train": len(exp.data.train[1]), "n_val": len(exp.data.val[1]) if exp.data.val is not None else 0, "n_test": len(exp.data.test[1]),
        "threads": _threads(),
        "pid": os.getpid(),
    }
    if run_dir is not None:
        save_model(run_dir / "model.npz", exp.model, exp.normalizer, exp.input_shape, exp.data.n_outputs,
                   exp.data.columns)
        write_json(run_dir / "metrics.json", metrics)
        if plots:
            from .report.plots import plot_history
            plot_history(exp.trainer.history, run_dir / "curves.png", title=cfg["run"]["name"])
    return Result(metrics, exp.trainer.history, exp)


EXTENSIBLE = ("train.epochs",)  # the keys a resumed run may change


def _saved_value(saved: dict, section: str, name: str):
    """A key of the checkpoint's configuration; a key the checkpoint predates counts as its default."""
    return (saved.get(section) or {}).get(name, config_.SCHEMA[section][name].default)


def _config_differences(saved: dict, cfg: dict) -> list[str]:
    """``key: saved in the checkpoint, ours in config.toml`` for every key that differs.

    The checkpoint's configuration is resolved first, so one written before ``model.layers``
    existed gets its shorthand's expansion. A layer list has no shorthand keys: they are compared
    only when both models are written in the shorthand (``model.layers`` always is).
    """
    from .shorthand import SHORTHAND_KEYS

    try:
        saved = config_.resolve(saved)
    except config_.ConfigError:
        pass  # compared as it was saved: the keys it lacks count as their defaults
    both_shorthand = "hidden" in cfg["model"] and "hidden" in (saved.get("model") or {})
    out = []
    for section, keys in config_.SCHEMA.items():
        for name in keys:
            dotted = f"{section}.{name}"
            if section == "model" and name in SHORTHAND_KEYS and not both_shorthand:
                continue
            theirs = _saved_value(saved, section, name)
            if dotted not in EXTENSIBLE and theirs != cfg[section][name]:
                out.append(f"{dotted}: {config_.toml_literal(theirs)} in the checkpoint, "
                           f"{config_.toml_literal(cfg[section][name])} in config.toml")
    return out


def _load_checkpoint(exp: Experiment, state: dict, path: Path, log) -> None:
    """Load a checkpoint of this run: same configuration (but for more epochs), same input normalization."""
    saved = state.get("extra") or {}
    saved_cfg = saved.get("config") or {}
    differ = _config_differences(saved_cfg, exp.cfg)
    if differ:
        raise CheckpointError(f"the checkpoint {path} was written with another configuration than config.toml "
                              f"({'; '.join(differ)}); start a new run instead of resuming")
    try:
        exp.trainer.load_state_dict(state)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"the checkpoint {path} does not fit this run's model: {exc}") from exc
    exp.trainer.last_checkpoint = path
    if exp.normalizer is not None:
        ours = exp.normalizer.state_dict()
        if not all(np.array_equal(np.asarray(saved["normalizer"][k]), ours[k]) for k in ("mean", "std")):
            raise CheckpointError("the training data changed since the checkpoint: the input normalizer differs")
    _check_extension(exp, _saved_value(saved_cfg, "train", "epochs"), log)
    exp.trainer.extra_state["config"] = exp.cfg  # later checkpoints record the extended train.epochs


def _check_extension(exp: Experiment, planned: int, log) -> None:
    """More epochs continue the run; fewer than it has trained cannot be undone."""
    done, epochs = exp.trainer.epoch, exp.cfg["train"]["epochs"]
    if epochs < done:
        raise config_.ConfigError(f"train.epochs = {epochs} is fewer than the {done} epochs the run has trained; "
                                  "a resumed run can only be extended")
    es = exp.trainer.early_stopping
    if epochs > planned and es is not None and es.stopped_epoch is not None:
        log(f"the run stopped early at epoch {es.stopped_epoch}: train.epochs = {epochs} trains no further")
    if epochs != planned and exp.cfg["schedule"]["name"] == "cosine":
        log(f"schedule.name = \"cosine\" anneals over the {planned} epochs the run was started with and rises again "
            f"after them (it is periodic): this run differs from one of {epochs} epochs from the start")


def scores(val: dict, test: dict) -> dict:
    """{"val_loss": ..., "val_accuracy": ..., "test_loss": ..., ...}: every metric of both splits."""
    return {**{f"val_{k}": v for k, v in val.items()}, **{f"test_{k}": v for k, v in test.items()}}


def headline(metrics: dict) -> str:
    """'validation accuracy 0.9812, test accuracy 0.9790' (RMSE and R² for regression)."""
    split = "val" if "val_loss" in metrics else "test"  # data.val_fraction = 0: test scores only
    names = [k[len(split) + 1:] for k in metrics if k.startswith(f"{split}_") and k != f"{split}_loss"] or ["loss"]
    splits = [(split, key) for split, key in (("validation", "val"), ("test", "test")) if f"{key}_loss" in metrics]
    return ", ".join(f"{split} {name} {metrics[f'{key}_{name}']:.4f}" for split, key in splits for name in names)


def evaluate_run(run_dir: str | Path) -> dict:
    """Score a finished run's saved model on its validation and test splits."""
    model, normalizer, cfg = load_model(run_dir)
    seeds = np.random.SeedSequence(cfg["run"]["seed"])
    data = prepare_data(cfg, seeds.spawn(3)[0])
    norm = input_pipeline(normalizer, model_input_shape(cfg, data))
    loss, metrics = build_loss(cfg, model.dtype), metrics_for(cfg["loss"]["name"])
    val = evaluate(model, loss, (norm(data.val[0]), data.val[1]), metrics) if data.val is not None else {}
    test = evaluate(model, loss, (norm(data.test[0]), data.test[1]), metrics)
    return scores(val, test)


def _threads() -> int | None:
    try:
        from threadpoolctl import threadpool_info
        return max((i.get("num_threads") or 0 for i in threadpool_info()), default=None)
    except ImportError:
        return os.cpu_count()
