"""Training: the loop with validation, metrics, callbacks (early stopping, checkpoints, logs), exact resume."""

from .checkpoint import CheckpointError, load_checkpoint, load_latest, save_checkpoint
from .early_stopping import EarlyStopping
from .metrics import Accuracy, Regression, metrics_for
from .callbacks import Callback, Checkpoint, EpochLog, HistoryFiles, LambdaCallback, ProgressBar, StepSchedulers
from .evaluate import evaluate
from .history import read_history, write_history
from .trainer import NonFiniteError, Trainer, model_generators

__all__ = ["Trainer", "Callback", "LambdaCallback", "StepSchedulers", "ProgressBar", "EpochLog", "HistoryFiles",
           "Checkpoint", "evaluate", "read_history", "EarlyStopping", "Accuracy", "Regression", "metrics_for", "NonFiniteError", "CheckpointError",
           "save_checkpoint", "load_checkpoint", "load_latest", "model_generators", "write_history"]

from .loggers import CSVLogger, TensorBoard  # noqa: E402
from .probe import Probe, read_probe  # noqa: E402

__all__ += ["Probe", "read_probe", "TensorBoard", "CSVLogger"]
