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
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import config as config_
from . import nn, optim
from .data import (Compose, DataLoader, ElasticDistortion, RandomRotation, RandomStretch,
                   RandomTranslation, Standardizer, load_mnist, load_mnist1d, train_val_split)
from .train import EarlyStopping, Trainer
from .train.checkpoint import CheckpointError, atomic_write_bytes, list_checkpoints, load_latest
from .train.runlock import hold_run_folder

N_CLASSES = 10


@dataclass
class Data:
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    image_shape: tuple[int, ...] | None


def load_raw(cfg: dict) -> tuple[tuple, tuple, tuple[int, ...] | None]:
    """(train, test, image shape) as float32 feature rows; images scaled to [0, 1]."""
    name, root = cfg["data"]["name"], cfg["data"]["root"] or None
    if name == "mnist1d":
        return load_mnist1d("train"), load_mnist1d("test"), None
    kind = "fashion" if name == "fashion" else "mnist"
    splits = []
    for split in ("train", "test"):
        X, y = load_mnist(split, root=root, kind=kind)
        splits.append(((X.reshape(len(X), -1) / np.float32(255.0)).astype(np.float32), y))
    return splits[0], splits[1], (28, 28)


def prepare_data(cfg: dict, seeds: np.random.SeedSequence) -> Data:
    (X, y), test, image_shape = load_raw(cfg)
    subset = cfg["data"]["train_subset"]
    if subset > len(X):
        raise config_.ConfigError(f"data.train_subset = {subset} is larger than the {len(X)} training examples of "
                                  f"{cfg['data']['name']}; use at most {len(X)} (or 0: all)")
    if subset:
        X, y = X[:subset], y[:subset]
    Xtr, ytr, Xva, yva = train_val_split(X, y, val_fraction=cfg["data"]["val_fraction"],
                                         seed=np.random.default_rng(seeds))
    return Data((Xtr, ytr), (Xva, yva), test, image_shape)


def fit_normalizer(cfg: dict, X_train: np.ndarray) -> Standardizer | None:
    """Zero mean, unit variance with statistics of the training split only (or None)."""
    mode = cfg["data"]["normalize"]
    if mode == "none":
        return None
    return Standardizer(per_feature=mode == "per_feature").fit(X_train)


def _activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[name]()


def _hidden_layer(m: dict, n_in: int, n_out: int, rng: np.random.Generator) -> nn.Module:
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


N_FEATURES = {"mnist": 784, "fashion": 784, "mnist1d": 40}


def time_steps(n_in: int) -> int:
    """A recurrent net reads an image row by row (28 steps), an MNIST-1D sequence value by value."""
    return 28 if n_in == 784 else n_in


def build_recurrent(cfg: dict, n_in: int, n_out: int, gens) -> nn.Sequential:
    """Each input read as a sequence (28 image rows of 28 pixels, or MNIST-1D's 40 steps of 1 value),
    a stacked RNN/LSTM with zoneout, [dropout] on the last hidden state, a Linear read-out."""
    m = cfg["model"]
    if len(set(m["hidden"])) != 1:
        raise config_.ConfigError(f"model.hidden must list one width per stacked recurrent layer, all equal; got {m['hidden']}")
    steps = time_steps(n_in)
    size, layers = m["hidden"][0], len(m["hidden"])
    if m["kind"] == "lstm":
        rnn = nn.LSTM(n_in // steps, size, layers, zoneout_h=m["zoneout_h"], zoneout_c=m["zoneout_c"], rng=next(gens))
    else:
        rnn = nn.RNN(n_in // steps, size, layers, zoneout=m["zoneout_h"], rng=next(gens))
    out: list[nn.Module] = [nn.SequenceEncoder(rnn, steps)]
    if m["dropout"]:
        out.append(nn.Dropout(m["dropout"], scaling=m["dropout_scaling"], rng=next(gens)))
    out.append(nn.Linear(size, n_out, rng=next(gens)))
    return nn.Sequential(*out)


def build_model(cfg: dict, n_in: int, n_out: int, seeds: np.random.SeedSequence) -> nn.Sequential:
    """Input dropout, then per hidden layer: layer, [batch norm], activation, [noise], [L1], [dropout].
    With ``model.kind`` rnn or lstm: :func:`build_recurrent`."""
    m = cfg["model"]
    gens = iter(np.random.default_rng(s) for s in seeds.spawn(4 * len(m["hidden"]) + 4))
    if m["kind"] != "mlp":
        return build_recurrent(cfg, n_in, n_out, gens).to(np.dtype(cfg["train"]["dtype"]))
    layers: list[nn.Module] = []
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
    model = nn.Sequential(*layers)
    return model.to(np.dtype(cfg["train"]["dtype"]))


def count_parameters(cfg: dict, n_in: int, n_out: int) -> int:
    """The number of trainable values :func:`build_model` creates, from the widths alone::

        MLP, widths w_0 = n_in, w_1..w_L = hidden, w_{L+1} = n_out:
            sum_l (w_l w_{l+1} + w_{l+1})  +  2 sum_{l=1..L} w_l  with batch norm
        RNN (g = 1) / LSTM (g = 4) gates, layer inputs i_l, widths h_l:
            sum_l g h_l (i_l + h_l + 2)  +  h_L n_out + n_out
    """
    m = cfg["model"]
    hidden = m["hidden"]
    if m["kind"] != "mlp":
        gates = 4 if m["kind"] == "lstm" else 1
        inputs = [n_in // time_steps(n_in), *hidden[:-1]]
        return sum(gates * h * (i + h + 2) for i, h in zip(inputs, hidden)) + hidden[-1] * n_out + n_out
    widths = [n_in, *hidden, n_out]
    affine = sum(a * b + b for a, b in zip(widths, widths[1:]))
    return affine + (2 * sum(hidden) if m["batchnorm"] else 0)


def optimizer_state_copies(cfg: dict) -> int:
    """Arrays of a parameter's size that the optimizer keeps per parameter (moments, momentum buffers)."""
    o = cfg["optimizer"]
    if o["name"] in ("adam", "adamw"):
        return 2
    return int(o["momentum"] > 0) + (o["name"] == "rmsprop")


def training_bytes(cfg: dict) -> int:
    """Bytes of the arrays that training holds per parameter: weights, gradients, optimizer state,
    and the best weights kept for early stopping's restore; activations and data not counted."""
    e = cfg["early_stopping"]
    copies = 2 + optimizer_state_copies(cfg) + int(e["enabled"] and e["restore_best"])
    n = count_parameters(cfg, N_FEATURES[cfg["data"]["name"]], N_CLASSES)
    return copies * n * np.dtype(cfg["train"]["dtype"]).itemsize


def physical_memory() -> int:
    """Bytes of memory of this machine."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits_in_memory(cfg: dict) -> None:
    """Refuse a model whose training arrays alone would exceed the machine's memory, before allocating them."""
    need, have = training_bytes(cfg), physical_memory()
    if need > have:
        n = count_parameters(cfg, N_FEATURES[cfg["data"]["name"]], N_CLASSES)
        raise config_.ConfigError(
            f"model.hidden = {cfg['model']['hidden']} needs about {need / 2**30:.1f} GiB for its {n:,} parameters "
            f"(weights, gradients and {cfg['optimizer']['name']} state in train.dtype = \"{cfg['train']['dtype']}\"), "
            f"more than the {have / 2**30:.1f} GiB of memory of this machine; choose smaller widths")


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
                         weight_decay=o["weight_decay"])
    if o["name"] == "rmsprop":
        return optim.RMSprop(groups, lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"])
    cls = optim.Adam if o["name"] == "adam" else optim.AdamW
    return cls(groups, lr=o["lr"], betas=(o["beta1"], o["beta2"]), weight_decay=o["weight_decay"])


def build_scheduler(cfg: dict, optimizer) -> list:
    """The step-size schedules, stepped once per epoch: an optional linear warm-up over
    ``warmup_epochs`` chained with the named decay (their factors multiply, as in PyTorch)."""
    s = cfg["schedule"]
    out = []
    if s["warmup_epochs"]:
        out.append(optim.lr_scheduler.LinearWarmup(optimizer, s["warmup_epochs"], start_factor=1.0 / (s["warmup_epochs"] + 1)))
    decay = _decay_schedule(cfg, optimizer)
    return out + ([decay] if decay is not None else [])


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
        augs.append(_Noise(a["noise"]))
    if not augs:
        return None
    pipeline = Compose(augs)

    def transform(xb, rng):
        xb = pipeline(xb, rng).astype(np.float32, copy=False)
        return normalizer.transform(xb) if normalizer is not None else xb

    return transform


class _Noise:
    """Additive Gaussian noise on feature rows of any shape (images or MNIST-1D sequences)."""

    def __init__(self, std: float):
        self.std = float(std)

    def __call__(self, xb, rng):
        return xb + rng.standard_normal(xb.shape, dtype=np.float32) * np.float32(self.std)


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


def build(cfg: dict, run_dir: Path | None = None, progress: bool | None = None, log=None) -> Experiment:
    """Data, model, optimizer and trainer of a configuration; nothing is written to ``run_dir`` yet."""
    check_fits_in_memory(cfg)
    seeds = np.random.SeedSequence(cfg["run"]["seed"])
    s_split, s_model, s_loader = seeds.spawn(3)
    data = prepare_data(cfg, s_split)
    normalizer = fit_normalizer(cfg, data.train[0])
    norm = (lambda X: normalizer.transform(X).astype(np.float32)) if normalizer else (lambda X: X)
    Xtr, ytr = data.train
    transform = build_augmentation(cfg, data.image_shape, normalizer)
    Xtr_in = Xtr if transform is not None else norm(Xtr)
    t = cfg["train"]
    # batch norm cannot train on a last batch of one example: drop such a tail (it changes every epoch)
    tail_of_one = cfg["model"]["batchnorm"] and len(Xtr) % t["batch_size"] == 1
    loader = DataLoader(Xtr_in, ytr, t["batch_size"], shuffle=True, drop_last=tail_of_one,
                        rng=np.random.default_rng(s_loader), transform=transform)
    bn_loader = DataLoader(norm(Xtr), ytr, t["batch_size"], shuffle=False, drop_last=tail_of_one)
    model = build_model(cfg, Xtr.shape[1], N_CLASSES, s_model)
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
    trainer = Trainer(model, nn.CrossEntropyLoss(dtype=model.dtype), optimizer, scheduler=scheduler,
                      clip_value=r["clip_value"] or None, clip_norm=r["clip_norm"] or None, constraints=constraints,
                      early_stopping=stopper, bn_statistics=t["bn_statistics"], run_dir=run_dir,
                      generators={"loader": loader.rng}, progress=progress, log=log,
                      extra_state={"config": cfg, "normalizer": normalizer.state_dict() if normalizer else None})
    val = (norm(data.val[0]), data.val[1])
    test = (norm(data.test[0]), data.test[1])
    return Experiment(cfg, data, normalizer, model, trainer, loader, bn_loader, val, test)


# ---------------------------------------------------------------------------- runs
def save_model(path: Path, model: nn.Module, normalizer: Standardizer | None) -> None:
    """Weights (state_dict names as PyTorch's) and the input normalizer in one archive."""
    import io

    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
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
    n_in = N_FEATURES[cfg["data"]["name"]]
    model = build_model(cfg, n_in, N_CLASSES, np.random.SeedSequence(0))
    other = f"{path} was written with another configuration than {run_dir / 'config.toml'}"
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError) as exc:
        raise ModelFileError(f"{other} ({exc.args[0] if exc.args else exc})") from exc
    return model.eval(), _archived_normalizer(arrays, cfg["data"]["normalize"], n_in, other), cfg


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


def train_run(cfg: dict, run_dir: str | Path, resume: bool = False, progress: bool | None = None,
              log=None, plots: bool = True, restart: bool = False) -> dict:
    """Train one configuration in ``run_dir``; with ``resume`` continue from its last checkpoint.

    Every check runs before the folder is touched; the folder is then held (one process per run
    folder) until the run ends. ``resume`` refuses a folder without a usable checkpoint unless
    ``restart`` (then training starts over at epoch 1). On resume the configuration must be the
    checkpoint's, except ``train.epochs``: more epochs extend a finished run.
    """
    run_dir = Path(run_dir)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    start = time.perf_counter()
    exp = build(cfg, run_dir=run_dir, progress=progress, log=log)
    with _writing(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        with hold_run_folder(run_dir):
            if resume:
                _resume(exp, run_dir, restart, log)
            elif (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
                raise FileExistsError(f"{run_dir} already holds a run; use `tricklab train --resume {run_dir}` "
                                      "or choose another --out folder")
            atomic_write_bytes(run_dir / "config.toml", config_.dumps(cfg).encode())
            metrics = _fit_and_save(exp, run_dir, start, plots)
    log(f"validation accuracy {metrics['val_accuracy']:.4f}, test accuracy {metrics['test_accuracy']:.4f} -> {run_dir}")
    return metrics


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


def _fit_and_save(exp: Experiment, run_dir: Path, start: float, plots: bool) -> dict:
    """Train to ``train.epochs`` (or early stopping), score validation and test once, write the results."""
    cfg = exp.cfg
    exp.trainer.fit(exp.train_loader, exp.val, epochs=cfg["train"]["epochs"], bn_batches=exp.bn_loader)
    val = exp.trainer.evaluate(exp.val)
    test = exp.trainer.evaluate(exp.test)
    es = exp.trainer.early_stopping
    metrics = {
        "val_loss": val["loss"], "val_accuracy": val["accuracy"],
        "test_loss": test["loss"], "test_accuracy": test["accuracy"],
        "epochs_run": exp.trainer.epoch,
        "best_epoch": es.best_epoch if es is not None else exp.trainer.epoch,
        "stopped_early": bool(es is not None and es.stopped_epoch is not None),
        "bn_statistics": cfg["train"]["bn_statistics"],
        "seconds_this_session": time.perf_counter() - start,
        "seconds_training": float(sum(row["seconds"] for row in exp.trainer.history)),
        "n_train": len(exp.data.train[1]), "n_val": len(exp.data.val[1]), "n_test": len(exp.data.test[1]),
        "threads": _threads(),
    }
    save_model(run_dir / "model.npz", exp.model, exp.normalizer)
    write_json(run_dir / "metrics.json", metrics)
    if plots:
        from .report.plots import plot_history
        plot_history(exp.trainer.history, run_dir / "curves.png", title=cfg["run"]["name"])
    return metrics


EXTENSIBLE = ("train.epochs",)  # the keys a resumed run may change


def _saved_value(saved: dict, section: str, name: str):
    """A key of the checkpoint's configuration; a key the checkpoint predates counts as its default."""
    return (saved.get(section) or {}).get(name, config_.SCHEMA[section][name].default)


def _config_differences(saved: dict, cfg: dict) -> list[str]:
    """``key: saved in the checkpoint, ours in config.toml`` for every key that differs."""
    out = []
    for section, keys in config_.SCHEMA.items():
        for name in keys:
            dotted = f"{section}.{name}"
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


def evaluate_run(run_dir: str | Path) -> dict:
    """Score a finished run's saved model on its validation and test splits."""
    model, normalizer, cfg = load_model(run_dir)
    seeds = np.random.SeedSequence(cfg["run"]["seed"])
    data = prepare_data(cfg, seeds.spawn(3)[0])
    norm = (lambda X: normalizer.transform(X).astype(np.float32)) if normalizer else (lambda X: X)
    trainer = Trainer(model, nn.CrossEntropyLoss(dtype=model.dtype), optim.SGD(model.parameters(), lr=0.1))
    val = trainer.evaluate((norm(data.val[0]), data.val[1]))
    test = trainer.evaluate((norm(data.test[0]), data.test[1]))
    return {"val_loss": val["loss"], "val_accuracy": val["accuracy"],
            "test_loss": test["loss"], "test_accuracy": test["accuracy"]}


def _threads() -> int | None:
    try:
        from threadpoolctl import threadpool_info
        return max((i.get("num_threads") or 0 for i in threadpool_info()), default=None)
    except ImportError:
        return os.cpu_count()
