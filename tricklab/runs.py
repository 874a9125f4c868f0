"""Using a trained run: its model and input normalizer in Python, and predictions for new inputs.

    run = tricklab.load_run("runs/mnist")     # model (eval mode), normalizer, config, input shape
    y = run.predict(x)                          # raw inputs as in the training file -> outputs
    labels = run.predict_classes(x)             # classification: the class with the largest output

``tricklab predict RUN INPUT.npz|INPUT.csv --out predictions.npy|.csv`` does the same from the shell.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.normalize import Standardizer
from .errors import TricklabError
from .nn.activation import sigmoid
from .nn.loss import log_softmax
from .nn.module import Module
from .fileio import atomic_write_bytes


class PredictError(TricklabError, ValueError):
    """Inputs that do not fit the run's model, or an output file of an unknown kind."""


@dataclass
class Run:
    """A finished run: ``model`` in eval mode, the ``normalizer`` fitted on its training split (or None),
    its resolved ``config``, one example's ``input_shape`` and, for a CSV run, its feature ``columns``."""
    model: Module
    normalizer: Standardizer | None
    config: dict
    input_shape: tuple[int, ...]
    columns: list[str] | None = None

    @property
    def loss(self) -> str:
        return self.config["loss"]["name"]

    def prepare(self, x) -> np.ndarray:
        """Raw inputs (rows, or examples of their own shape) -> normalized examples the model reads.

        Raw means as the run read its data: the user's file as it is; for the built-in MNIST and
        Fashion-MNIST, pixels scaled to [0, 1] (``load_mnist(...)[0] / 255``), as training saw them.
        """
        x = np.asarray(x, dtype=np.float32)
        width = int(np.prod(self.input_shape))
        if x.ndim == 0 or int(np.prod(x.shape[1:])) != width:
            raise PredictError(f"the run's model reads examples of shape {self.input_shape} ({width} values); "
                               f"got inputs of shape {x.shape}")
        rows = x.reshape(len(x), width)
        if self.normalizer is not None:
            rows = self.normalizer.transform(rows).astype(np.float32)
        return rows.reshape(len(x), *self.input_shape)

    def predict(self, x, batch_size: int = 1024) -> np.ndarray:
        """The model's outputs (logits for classification) for raw inputs ``x``, in eval mode."""
        return self.model.predict(self.prepare(x), batch_size=batch_size)

    def predict_classes(self, x, batch_size: int = 1024) -> np.ndarray:
        """Class indices: the largest logit (cross-entropy), or logit > 0 per output (BCE)."""
        out = self.predict(x, batch_size)
        if self.loss == "mse":
            raise PredictError("a regression run (loss.name = \"mse\") has no classes; use predict")
        return out.argmax(axis=1) if self.loss == "cross_entropy" else (out > 0).astype(np.int64)

    def predict_proba(self, x, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities: softmax of the logits (cross-entropy), sigmoid (BCE)."""
        out = self.predict(x, batch_size).astype(np.float64)
        if self.loss == "mse":
            raise PredictError("a regression run (loss.name = \"mse\") has no probabilities; use predict")
        if self.loss == "bce_with_logits":
            return sigmoid(out)
        return np.exp(log_softmax(out))


def load_run(run_dir: str | Path) -> Run:
    """The model and input normalizer of the finished run in ``run_dir`` (see :class:`Run`)."""
    from .experiment import _model_archive, archived_shapes, load_model

    model, normalizer, cfg = load_model(run_dir)
    arrays = _model_archive(Path(run_dir) / "model.npz")
    shape, _ = archived_shapes(arrays, cfg)
    columns = [str(c) for c in arrays["data/columns"]] if "data/columns" in arrays else None
    return Run(model, normalizer, cfg, shape, columns)


OUTPUTS = ("auto", "class", "proba", "raw")


def predictions(run: Run, x, output: str = "auto", batch_size: int = 1024) -> np.ndarray:
    """``output``: class indices, probabilities or raw outputs; "auto": classes for a classification
    run, the predicted values for a regression run."""
    if output not in OUTPUTS:
        raise PredictError(f"--output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    if output == "auto":
        output = "raw" if run.loss == "mse" else "class"
    if output == "class":
        return run.predict_classes(x, batch_size)
    if output == "proba":
        return run.predict_proba(x, batch_size)
    return run.predict(x, batch_size)


def write_predictions(path: str | Path, values: np.ndarray, header: str = "prediction") -> Path:
    """``.npy`` (the array) or ``.csv`` (one row per example, a header naming the columns), atomically."""
    path = Path(path)
    values = np.asarray(values)
    if path.suffix.lower() == ".npy":
        buf = io.BytesIO()
        np.save(buf, values, allow_pickle=False)
        atomic_write_bytes(path, buf.getvalue())
        return path
    if path.suffix.lower() != ".csv":
        raise PredictError(f"--out {path}: write predictions to a .npy or a .csv file")
    table = values.reshape(len(values), -1)
    names = [header] if table.shape[1] == 1 else [f"{header}_{k}" for k in range(table.shape[1])]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(names)
    writer.writerows(table.tolist())
    atomic_write_bytes(path, text.getvalue().encode())
    return path


def predict_file(run_dir: str | Path, input_path: str | Path, out: str | Path, output: str = "auto",
                 batch_size: int = 1024) -> tuple[Path, int]:
    """Predict for the inputs in ``input_path`` (.npz or .csv) with the run in ``run_dir``; write ``out``.
    Returns (the file written, the number of examples)."""
    from .data.files import load_features

    if Path(out).suffix.lower() not in (".npy", ".csv"):
        raise PredictError(f"--out {out}: write predictions to a .npy or a .csv file")
    run = load_run(run_dir)
    x = load_features(input_path, run.columns)
    values = predictions(run, x, output, batch_size)
    kind = "probability" if output == "proba" else "prediction"
    return write_predictions(out, values, header=kind), len(x)
