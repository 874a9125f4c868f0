"""``tricklab demo``: a plain MLP against the same MLP with the lecture's tricks.

Plain: raw inputs, plain SGD (no momentum; step size 0.1, the best of 0.01, 0.05 and 0.1 on
MNIST-1D validation data), no regularization, fixed epochs. With tricks: inputs normalized on
the training split, batch norm before each activation, dropout, Adam, gradient clipping, early
stopping on the validation split with the best weights restored, batch-norm statistics
recomputed by the lecture's rule; on MNIST-1D also Gaussian input noise as augmentation. Both
are scored once on the test split.

The demo folder (``runs/demo`` unless ``--out``) holds both run folders, ``comparison.png`` (their
validation curves on shared axes) and ``reproduction.json`` / ``table.md``, the layout that
``tricklab report`` renders; the demo writes that ``report.html`` itself.
"""

from __future__ import annotations

import sys
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
ACTIVATION_NAMES = {"relu": "ReLU", "leaky_relu": "leaky ReLU", "sigmoid": "sigmoid", "tanh": "tanh"}
OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}


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


def describe(cfg: dict) -> str:
    """The model and every trick the configuration turns on, in words (one line)."""
    m, o, d = cfg["model"], cfg["optimizer"], cfg["data"]
    parts = [f"MLP {'-'.join(map(str, m['hidden']))} {ACTIVATION_NAMES[m['activation']]}"]
    parts.append("raw inputs" if d["normalize"] == "none" else
                 f"inputs standardized {d['normalize'].replace('_', ' ')} on the training split")
    if m["batchnorm"]:
        recomputed = " (statistics recomputed after training)" if cfg["train"]["bn_statistics"] == "recompute" else ""
        parts.append(f"batch norm before each activation{recomputed}")
    if m["dropout"]:
        parts.append(f"dropout {m['dropout']}")
    if m["init"] != "default":
        parts.append(f"{m['init'].replace('_', '-').capitalize()} init")
    parts.append(_optimizer_words(o))
    if cfg["schedule"]["name"] != "none":
        parts.append(f"{cfg['schedule']['name']} schedule")
    parts += _regularization_words(cfg)
    e = cfg["early_stopping"]
    if e["enabled"]:
        restored = ", best weights restored" if e["restore_best"] else ""
        parts.append(f"early stopping (patience {e['patience']}{restored})")
        parts.append(f"at most {cfg['train']['epochs']} epochs")
    else:
        parts.append(f"{cfg['train']['epochs']} epochs")
    return ", ".join(parts)


def _optimizer_words(o: dict) -> str:
    details = [f"step size {o['lr']:g}"]
    if o["name"] in ("sgd", "rmsprop"):
        details.append(f"momentum {o['momentum']:g}" if o["momentum"] else "no momentum")
    if o["weight_decay"]:
        details.append(f"weight decay {o['weight_decay']:g}")
    return f"{OPTIMIZER_NAMES[o['name']]} ({', '.join(details)})"


def _regularization_words(cfg: dict) -> list[str]:
    r, a = cfg["regularization"], cfg["augmentation"]
    words = [f"gradient clipping at norm {r['clip_norm']}"] if r["clip_norm"] else []
    words += [f"gradient clipping at value {r['clip_value']}"] if r["clip_value"] else []
    words += [f"max-norm {r['max_norm']}"] if r["max_norm"] else []
    words += [f"Gaussian input noise {a['noise']}"] if a["noise"] else []
    if not words and not cfg["model"]["dropout"] and not cfg["optimizer"]["weight_decay"]:
        words.append("no regularization")
    return words


def winner_line(plain: float, tricks: float) -> str:
    """Who won on the test split and by how many accuracy points."""
    if plain == tricks:
        return f"no winner: both reach {100 * plain:.1f}% on the test split"
    (won, a), (_, b) = sorted((("plain", plain), ("tricks", tricks)), key=lambda item: -item[1])
    digits = 1 if a - b >= 0.001 else 2  # 10,000 test examples resolve 0.01 points
    return (f"winner: {won}, by {100 * (a - b):.{digits}f} accuracy points on the test split "
            f"({100 * a:.{digits}f}% against {100 * b:.{digits}f}%)")


def comparison_figure(histories: dict[str, list[dict]], test_accuracy: dict[str, float]):
    """Validation loss and validation accuracy per epoch of both runs, on shared epoch axes."""
    from .report.plots import integer_epochs, pyplot

    fig, (ax_loss, ax_acc) = pyplot().subplots(1, 2, figsize=(10, 4), sharex=True)
    for color, (name, history) in zip(("C7", "C3"), histories.items()):
        epochs = [row["epoch"] for row in history]
        ax_loss.plot(epochs, [row["val_loss"] for row in history], color=color, label=name)
        ax_acc.plot(epochs, [row["val_accuracy"] for row in history], color=color,
                    label=f"{name} (test {100 * test_accuracy[name]:.1f}%)")
    ax_loss.set(ylabel="validation loss", title="validation loss")
    ax_acc.set(ylabel="validation accuracy", title="validation accuracy")
    for ax in (ax_loss, ax_acc):
        integer_epochs(ax)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def _holds_demo(root: Path) -> bool:
    return (root / "reproduction.json").exists() or any((root / n / "checkpoints").is_dir() for n in ("plain", "tricks"))


def _check_fresh(root: Path) -> None:
    if _holds_demo(root):
        raise FileExistsError(f"{root} already holds a demo; pass --out DIR for a new one, or delete {root}")


def default_root() -> Path:
    """runs/demo, or runs/demo-2, -3, ... when earlier demos are there (they are kept)."""
    root, n = Path("runs") / "demo", 1
    while _holds_demo(root):
        n += 1
        root = Path("runs") / f"demo-{n}"
    return root


def run_demo(data: str = "mnist1d", epochs: int | None = None, out: str | None = None,
             progress: bool | None = None) -> dict[str, dict]:
    """Train both models into ``out`` (default ``runs/demo``), print who won, write the figure and
    report. ``progress``: a bar per epoch (default: when stderr is a terminal)."""
    from .experiment import train_run

    root = Path(out) if out else default_root()
    _check_fresh(root)
    configs = demo_configs(data, epochs)
    for name, cfg in configs.items():
        print(f"{name}: {describe(cfg)}")
    results = {}
    start = time.perf_counter()
    for i, (name, cfg) in enumerate(configs.items()):
        print(f"== {name} ({i + 1}/{len(configs)}): training on {data} ...", file=sys.stderr, flush=True)
        begin = time.perf_counter()
        metrics = train_run(cfg, root / name, progress=progress, log=lambda msg: None)
        metrics["wall"] = time.perf_counter() - begin
        results[name] = metrics
    print(f"\n{'model':8s} {'epochs':>6s} {'val acc':>8s} {'test acc':>9s} {'seconds':>8s}")
    for name, m in results.items():
        print(f"{name:8s} {m['epochs_run']:6d} {m['val_accuracy']:8.4f} {m['test_accuracy']:9.4f} {m['wall']:8.1f}")
    verdict = winner_line(results["plain"]["test_accuracy"], results["tricks"]["test_accuracy"])
    print(f"\n{verdict}")
    page = write_demo_report(root, configs, results, verdict, time.perf_counter() - start)
    print(f"runs in {root}; comparison figure {root / 'comparison.png'}; report {page}")
    return results


def write_demo_report(root: Path, configs: dict[str, dict], results: dict[str, dict], verdict: str,
                      seconds: float) -> Path:
    """comparison.png, reproduction.json and table.md in ``root`` (the layout ``tricklab report``
    renders), then report.html; returns the page's path."""
    from .lab.reproduce.common import Reproduction
    from .lab.report import write_report
    from .report.plots import save_figure
    from .train.history import read_history

    histories = {name: read_history(root / name) for name in configs}
    tests = {name: m["test_accuracy"] for name, m in results.items()}
    data, epochs = configs["plain"]["data"]["name"], configs["plain"]["train"]["epochs"]
    record = Reproduction(
        name="demo", title=f"Demo: a plain MLP against the same MLP with the lecture's tricks ({data})",
        reference=f"plain: {describe(configs['plain'])}. tricks: {describe(configs['tricks'])}.",
        claim="the same MLP generalizes better with the lecture's tricks of the trade than trained plain",
        size=f"{epochs} epochs per model", settings=configs, figures=[save_figure(
            comparison_figure(histories, tests), root / "comparison.png").name],
        verdict=verdict, wall_seconds=seconds)
    p, t = results["plain"], results["tricks"]
    record.row("test accuracy", "higher with the tricks",
               f"plain {100 * p['test_accuracy']:.1f}%, tricks {100 * t['test_accuracy']:.1f}%")
    record.row("validation accuracy", "higher with the tricks",
               f"plain {100 * p['val_accuracy']:.1f}%, tricks {100 * t['val_accuracy']:.1f}%")
    record.row("epochs trained (best epoch)", "—", f"plain {p['epochs_run']} ({p['best_epoch']}), "
                                                   f"tricks {t['epochs_run']} ({t['best_epoch']})")
    record.row("training seconds", "—", f"plain {p['wall']:.1f}, tricks {t['wall']:.1f}")
    record.save(root)
    return write_report(root)
