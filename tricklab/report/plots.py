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


def plot_history(history: list[dict], path: str | Path, title: str = "") -> Path:
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
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
