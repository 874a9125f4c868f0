"""``tricklab demo``: a plain MLP against the same MLP with the lecture's tricks.

Plain: raw inputs, plain SGD (no momentum; step size 0.1, the best of 0.01, 0.05 and 0.1 on
MNIST-1D validation data), no regularization, fixed epochs. With tricks: inputs normalized on
the training split, batch norm before each activation, dropout, Adam, gradient clipping, early
stopping on the validation split with the best weights restored, batch-norm statistics
recomputed by the lecture's rule; on MNIST-1D also Gaussian input noise as augmentation. Both
are scored once on the test split.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from . import config as config_

HIDDEN = [512, 512, 512]
PLAIN = {
    "data": {"normalize": "none"},
    "model": {"hidden": HIDDEN, "activation": "relu"},
    "optimizer": {"name": "sgd", "lr": 0.1},
}
TRICKS = {
    "data": {"normalize": "per_feature"},
    "model": {"hidden": HIDDEN, "activation": "relu", "batchnorm": True, "dropout": 0.3, "init": "kaiming_uniform"},
    "optimizer": {"name": "adam", "lr": 3e-3, "weight_decay": 1e-4},
    "schedule": {"name": "cosine"},
    "regularization": {"clip_norm": 5.0},
    "augmentation": {"noise": 0.1},
    "early_stopping": {"enabled": True, "patience": 20},
}
EPOCHS = {"mnist1d": 60, "mnist": 8, "fashion": 8}


def demo_configs(data: str = "mnist1d", epochs: int | None = None) -> dict[str, dict]:
    epochs = epochs or EPOCHS[data]
    out = {}
    for name, doc in (("plain", PLAIN), ("tricks", TRICKS)):
        doc = {**doc, "data": {**doc["data"], "name": data}, "run": {"name": f"demo-{name}", "seed": 0},
               "train": {"epochs": epochs, "batch_size": 128}}
        if data != "mnist1d":
            doc["augmentation"] = {}
        out[name] = config_.resolve(doc)
    return out


def run_demo(data: str = "mnist1d", epochs: int | None = None, out: str | None = None) -> dict[str, dict]:
    from .experiment import train_run

    root = Path(out) if out else Path(tempfile.mkdtemp(prefix="tricklab-demo-"))
    results = {}
    for name, cfg in demo_configs(data, epochs).items():
        print(f"== {name}: training on {data} ...", file=sys.stderr)
        start = time.perf_counter()
        metrics = train_run(cfg, root / name, progress=False, log=lambda msg: None)
        metrics["wall"] = time.perf_counter() - start
        results[name] = metrics
    print(f"\n{'model':8s} {'epochs':>6s} {'val acc':>8s} {'test acc':>9s} {'seconds':>8s}")
    for name, m in results.items():
        print(f"{name:8s} {m['epochs_run']:6d} {m['val_accuracy']:8.4f} {m['test_accuracy']:9.4f} {m['wall']:8.1f}")
    print(f"\nruns in {root}")
    return results
