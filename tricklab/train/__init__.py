"""Training: the loop with validation, metrics and early stopping, crash-safe checkpoints, exact resume."""

from .checkpoint import CheckpointError, load_checkpoint, load_latest, save_checkpoint
from .early_stopping import EarlyStopping
from .metrics import Accuracy, Regression, metrics_for
from .trainer import NonFiniteError, Trainer, model_generators, write_history

__all__ = ["Trainer", "EarlyStopping", "Accuracy", "Regression", "metrics_for", "NonFiniteError", "CheckpointError",
           "save_checkpoint", "load_checkpoint", "load_latest", "model_generators", "write_history"]
