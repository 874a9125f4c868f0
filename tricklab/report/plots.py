"""Loss and metric curves of a run (matplotlib, written as PNG without a display)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_bytes

METRIC_LABELS = {"rmse": "RMSE", "r2": "R²"}


def pyplot():
    """matplotlib.pyplot on the Agg backend (PNG files, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt




def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Lay out ``fig``, write it as a PNG at ``path`` (atomically; the folder is made if missing),
    close it, and return the path written."""
    path = Path(path)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


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
    plt = pyplot()
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
    return save_figure(history_figure(history, title), path, dpi=100)


def seed_band(ax, histories: list[list[dict]], value, label: str, color, ls="-") -> None:
    """Mean over seeds of ``value(row)`` (a number or None) per epoch, with the min-max band (seeds
    may stop at different epochs)."""
    length = max((len(h) for h in histories), default=0)
    if not length:
        return
    vals = np.full((len(histories), length), np.nan)
    for i, h in enumerate(histories):
        for j, row in enumerate(h):
            v = value(row)
            vals[i, j] = np.nan if v is None else v
    epochs = np.arange(1, length + 1)
    with np.errstate(all="ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, lo, hi = np.nanmean(vals, 0), np.nanmin(vals, 0), np.nanmax(vals, 0)
    ax.plot(epochs, mean, color=color, ls=ls, lw=1.4, label=f"{label} (n={len(histories)})")
    if len(histories) > 1:
        ax.fill_between(epochs, lo, hi, color=color, alpha=0.15)
