"""Loss and accuracy curves of a run (matplotlib, written as PNG without a display)."""

from __future__ import annotations

import io
from pathlib import Path

from ..train.checkpoint import atomic_write_bytes


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


def history_figure(history: list[dict], title: str = ""):
    """Two panels: training and validation loss, training and validation accuracy, per epoch."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "training"), ("val_loss", "validation")):
        if any(key in row for row in history):
            ax_loss.plot(epochs, [row.get(key) for row in history], marker="o", ms=3, label=label)
    for key, label in (("train_accuracy", "training"), ("val_accuracy", "validation")):
        if any(key in row for row in history):
            ax_acc.plot(epochs, [row.get(key) for row in history], marker="o", ms=3, label=label)
    ax_loss.set(ylabel="loss", title="loss")
    ax_acc.set(ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
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
