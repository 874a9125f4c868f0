"""Loss and metric curves of a run (matplotlib, written as PNG without a display)."""

from __future__ import annotations

import io
from pathlib import Path

from ..train.checkpoint import atomic_write_bytes

METRIC_LABELS = {"rmse": "RMSE", "r2": "R²"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def integer_epochs(ax) -> None:
    """Label the x axis "epoch" and put its ticks on whole epochs only (no 1.5 epoch)."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def history_metrics(history: list[dict]) -> list[str]:
    """The metrics the history reports, ``accuracy`` or ``rmse``, ``r2``, from its train_/val_ keys."""
    keys = dict.fromkeys(key for row in history for key in row)
    names = [key.split("_", 1)[1] for key in keys if key.startswith(("train_", "val_"))]
    return [name for name in dict.fromkeys(names) if name not in ("loss", "penalty")]


def history_figure(history: list[dict], title: str = ""):
    """One panel per curve pair, training and validation per epoch: the loss, then each metric
    the history has (accuracy for classification; RMSE and R² for regression)."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    names = ["loss", *history_metrics(history)]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for key, label in ((f"train_{name}", "training"), (f"val_{name}", "validation")):
            if any(key in row for row in history):
                ax.plot(epochs, [row.get(key) for row in history], marker="o", ms=3, label=label)
        label = METRIC_LABELS.get(name, name)
        ax.set(ylabel=label, title=label)
        integer_epochs(ax)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_history(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Write ``history_figure`` as a PNG at ``path``."""
    fig = history_figure(history, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
