"""Loggers: the epochs' numbers written where other tools read them (TensorBoard, a CSV file).

Both are writers that run after every other callback of an epoch (``last``), so a value another
callback adds to the epoch's logs is written too; both are safe across a crash and resume.
"""

from __future__ import annotations

import csv
import io
import itertools
import numbers
import os
from pathlib import Path

from ..fileio import atomic_write_bytes
from .callbacks import Callback

_WRITERS = itertools.count()  # event files of one log folder must not share a name


def summary_writer_class():
    """tensorboardX's ``SummaryWriter``, imported only when a TensorBoard callback starts."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ImportError('TensorBoard needs the tensorboard extra: pip install -e ".[tensorboard]"') from None
    return SummaryWriter


def scalar_tag(key: str) -> tuple[str, str]:
    """(run, tag) of a history key, laid out as Keras does so that training and validation curves
    share a chart: ``train_loss`` -> ("train", "epoch_loss"), ``val_accuracy`` -> ("validation",
    "epoch_accuracy"), anything else (``lr``, ``seconds``) -> ("train", "epoch_<key>")."""
    if key.startswith("train_"):
        return "train", "epoch_" + key[len("train_"):]
    if key.startswith("val_"):
        return "validation", "epoch_" + key[len("val_"):]
    return "train", "epoch_" + key


def is_scalar(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class TensorBoard(Callback):
    """Event files for ``tensorboard --logdir log_dir`` (Keras' ``TensorBoard``), written with tensorboardX.

    After every epoch each number of its logs (the history row: train_/val_ loss and metrics, lr,
    seconds; not the epoch itself) is a scalar at step = epoch (from 1) in the runs
    ``log_dir/train`` and ``log_dir/validation`` (tags of :func:`scalar_tag`), and every
    ``histograms_every`` epochs (0: never) each parameter's values are a histogram
    ``weights/<name>`` in ``train``. A run resumed from epoch k writes new event files that purge
    from TensorBoard's view whatever the interrupted run logged from epoch k + 1 on, so the view is
    that of an uninterrupted run. Needs ``pip install -e ".[tensorboard]"``.
    """

    last = True

    def __init__(self, log_dir: str | Path, histograms_every: int = 1):
        if isinstance(histograms_every, bool) or not isinstance(histograms_every, int) or histograms_every < 0:
            raise ValueError(f"TensorBoard: histograms_every must be a non-negative integer, got {histograms_every!r}")
        self.log_dir, self.histograms_every = Path(log_dir), histograms_every
        self.writers: dict = {}

    def on_train_begin(self, logs):
        self._writer_class = summary_writer_class()
        self.close()
        self._purge_step = self.trainer.epoch + 1 if self.trainer.epoch > 0 else None

    def writer(self, run: str):
        """The run's writer, opened when it first has something to write."""
        if run not in self.writers:
            suffix = f".{os.getpid()}.{next(_WRITERS)}"
            self.writers[run] = self._writer_class(str(self.log_dir / run), purge_step=self._purge_step,
                                                   filename_suffix=suffix)
        return self.writers[run]

    def on_epoch_end(self, epoch, logs):
        step = int(logs["epoch"])
        for key, value in logs.items():
            if key != "epoch" and is_scalar(value):
                run, tag = scalar_tag(key)
                self.writer(run).add_scalar(tag, float(value), step)
        if self.histograms_every and step % self.histograms_every == 0:
            for name, p in self.trainer.model.named_parameters():
                self.writer("train").add_histogram(f"weights/{name}", p.data, step)
        for w in self.writers.values():
            w.flush()

    def on_train_end(self, logs):
        self.close()

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.writers = {}


class CSVLogger(Callback):
    """One CSV row per epoch (Keras' ``CSVLogger``): the epoch's logs, columns in the order they first appear.

    The whole file is rewritten atomically after every epoch from the trainer's history, so a run
    killed at any moment leaves a whole file, and a resumed run's file is that of an uninterrupted
    run. ``append=False``: the file holds the trainer's history (a resumed run's earlier epochs
    included). ``append=True``: the rows the file held when training began come first, then this
    fit's epochs; when the trainer continues from epoch k (resumed, or a second ``fit``) only the
    old rows of epochs up to k are kept (those past k belong to the interrupted run and are
    written again).
    """

    last = True

    def __init__(self, filename: str | Path, separator: str = ",", append: bool = False):
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"CSVLogger: separator must be one character, got {separator!r}")
        self.filename, self.separator, self.append = Path(filename), separator, bool(append)
        self._kept: list[dict] = []
        self._start = 0

    def on_train_begin(self, logs):
        trainer = self.trainer
        self._start = len(trainer.history) if self.append else 0
        self._kept = self.old_rows(trainer.epoch) if self.append else []

    def old_rows(self, epoch: int) -> list[dict]:
        """The file's rows, those of epochs up to ``epoch`` only when ``epoch`` > 0; [] with no file."""
        if not self.filename.exists():
            return []
        with open(self.filename, newline="") as f:
            rows = list(csv.DictReader(f, delimiter=self.separator))
        if epoch > 0:
            rows = [row for row in rows if row.get("epoch", "").isdigit() and int(row["epoch"]) <= epoch]
        return rows

    def on_epoch_end(self, epoch, logs):
        rows = self._kept + self.trainer.history[self._start:]
        fields = list(dict.fromkeys(key for row in rows for key in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, delimiter=self.separator, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        self.filename.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.filename, buf.getvalue().encode())
