"""The user's own data: a NumPy ``.npz`` archive or a CSV table; its targets checked against a loss.

An ``.npz`` archive holds ``x_train``, ``y_train`` and optionally ``x_test``, ``y_test``, the layout
of Keras' ``mnist.npz``. ``x`` keeps its sample shape: (N, F) rows, (N, H, W) or (N, C, H, W)
images. A CSV table has a header row naming its columns; every column is numeric, one (or several)
of them the target. Values are converted to float32 as they are, not rescaled (Keras' ``mnist.npz``
stays in 0..255): the run's standardizer normalizes them.

Without a test split, ``round(test_fraction * N)`` training rows are held out as the test set by a
seeded permutation (:func:`tricklab.data.split_indices`, not stratified); :attr:`FileData.note`
says so, for the run to print.

Archives are opened with ``allow_pickle=False``: an object array is refused, never unpickled.
"""

from __future__ import annotations

import csv
import difflib
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import TricklabError
from .split import split_indices

LOSSES = ("cross_entropy", "mse", "bce_with_logits")
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


class DataFileError(TricklabError, ValueError):
    """A data file is missing, of the wrong layout, or holds values a run cannot use."""


@dataclass(frozen=True, eq=False)
class FileData:
    """Train and test arrays read from one file (or a train and a test file).

    Attributes:
        x_train, x_test: float32 ndarrays of shape (N, *sample_shape).
        y_train, y_test: ndarrays of shape (N,) or (N, k); int64 where the file stores integers,
            else float32; read with a ``loss``, the dtype that loss needs (:func:`check_targets`).
        sample_shape: shape of one example, e.g. (F,), (H, W) or (C, H, W).
        test_held_out: True when the file had no test split and one was held out of the training rows.
        note: a sentence saying so (None when the file had a test split).
        columns: the CSV feature columns in the order of ``x``'s columns (None for ``.npz``).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    sample_shape: tuple[int, ...]
    test_held_out: bool
    note: str | None = None
    columns: tuple[str, ...] | None = None


def _did_you_mean(name: str, choices: Sequence[str]) -> str:
    """Suggest the closest choice, ignoring case ("Y" for "y", which difflib alone scores 0)."""
    by_lower = {choice.lower(): choice for choice in reversed(list(choices))}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
    return f"; did you mean {by_lower[close[0]]!r}?" if close else ""


def _existing_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    return path


def _hold_out(path: Path, x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    """``(x_train, y_train, x_test, y_test, note)``: ``round(test_fraction * N)`` rows held out."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n = len(x)
    n_test = int(round(n * test_fraction))
    if not 0 < n_test < n:
        raise DataFileError(f"{path}: {n} training rows are too few to hold out a test_fraction of "
                            f"{test_fraction}")
    train, test = split_indices(n, val_size=n_test, seed=seed)
    note = (f"{path} has no test split: held out {n_test} of its {n} training rows as the test set "
            f"(test_fraction={test_fraction}, seed={seed})")
    return x[train], y[train], x[test], y[test], note


def _with_test_split(path: Path, x_train, y_train, test, test_fraction: float, seed: int, **extra
                     ) -> FileData:
    sample_shape = tuple(int(d) for d in x_train.shape[1:])
    if test is not None:
        return FileData(x_train, y_train, *test, sample_shape, False, None, **extra)
    *arrays, note = _hold_out(path, x_train, y_train, test_fraction, seed)
    return FileData(*arrays, sample_shape, True, note, **extra)


# --- .npz archives -----------------------------------------------------------------------------

def _npz_array(path: Path, archive, name: str) -> np.ndarray:
    try:
        array = archive[name]
    except ValueError as exc:  # numpy refuses object arrays when allow_pickle=False
        raise DataFileError(f"{path}: array {name!r}: {exc}; store a numeric array") from exc
    if array.dtype.kind not in "biuf":
        raise DataFileError(f"{path}: array {name!r} has dtype {array.dtype}; expected a numeric "
                            "(bool, integer or float) array")
    return array


def _finite(path: Path, name: str, array: np.ndarray) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise DataFileError(f"{path}: array {name!r} has the non-finite value {array[where]} at "
                            f"index {where}")


def _npz_pair(path: Path, archive, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one split, x float32 of shape (N, ...), y of shape (N,) or (N, k)."""
    x = _npz_array(path, archive, f"x_{split}")
    y = _npz_array(path, archive, f"y_{split}")
    if x.ndim < 2:
        raise DataFileError(f"{path}: array 'x_{split}' has shape {x.shape}; expected (N, features), "
                            "(N, H, W) or (N, C, H, W)")
    if y.ndim not in (1, 2):
        raise DataFileError(f"{path}: array 'y_{split}' has shape {y.shape}; expected (N,) or (N, k)")
    if len(x) != len(y):
        raise DataFileError(f"{path}: array 'x_{split}' has {len(x)} rows but 'y_{split}' has "
                            f"{len(y)}")
    if not len(x):
        raise DataFileError(f"{path}: array 'x_{split}' has no rows")
    with np.errstate(over="ignore"):  # an overflow is reported below, naming the array
        x, y = x.astype(np.float32), y.astype(np.float32 if y.dtype.kind == "f" else np.int64)
    _finite(path, f"x_{split}", x)  # after the cast, so float64 values beyond float32's range count
    _finite(path, f"y_{split}", y)
    return x, y


def _npz_keys(path: Path, keys: Sequence[str]) -> bool:
    """Check the archive's array names; True when it has a test split."""
    unexpected = [key for key in keys if key not in NPZ_ARRAYS]
    for name in NPZ_ARRAYS[:2]:
        if name not in keys:
            raise DataFileError(f"{path}: no array {name!r}; the archive has "
                                f"{sorted(keys)}{_did_you_mean(name, unexpected)} (expected "
                                "x_train, y_train and optionally x_test, y_test)")
    has_x, has_y = "x_test" in keys, "y_test" in keys
    if has_x != has_y:
        present, absent = ("x_test", "y_test") if has_x else ("y_test", "x_test")
        raise DataFileError(f"{path}: array {present!r} without {absent!r}; give both or neither")
    return has_x


def load_npz(path: str | os.PathLike, test_fraction: float = 0.2, seed: int = 0,
             loss: str | None = None) -> FileData:
    """Read an ``.npz`` archive with ``x_train``, ``y_train`` [, ``x_test``, ``y_test``].

    Args:
        path: the archive, read with ``np.load(path, allow_pickle=False)``.
        test_fraction, seed: hold-out share and permutation seed, used only when the archive has
            no test split.
        loss: if given, ``y_train`` and ``y_test`` are checked against it and converted
            (:func:`check_targets`) before a test split is held out, so an error names the
            archive's own row.

    Raises:
        DataFileError naming the file and the array: missing file, not an ``.npz`` archive, a
        missing array, an object or non-numeric array, x and y of different lengths, train and
        test samples of different shapes, NaN or inf values.
    """
    path = _existing_file(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataFileError(f"{path}: not a NumPy .npz archive (np.savez writes one)") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataFileError(f"{path}: a single .npy array; expected an .npz archive with x_train, "
                            "y_train (np.savez)")
    with archive:
        has_test = _npz_keys(path, archive.files)
        x_train, y_train = _npz_pair(path, archive, "train")
        test = _npz_pair(path, archive, "test") if has_test else None
    if test is not None and (test[0].shape[1:], test[1].shape[1:]) != (x_train.shape[1:],
                                                                       y_train.shape[1:]):
        raise DataFileError(f"{path}: x_test, y_test have shapes {test[0].shape}, {test[1].shape} "
                            f"but x_train, y_train have {x_train.shape}, {y_train.shape}; the "
                            "samples must have the same shape")
    if loss is not None:
        y_train = check_targets(y_train, loss, path, "y_train")
        if test is not None:
            test = (test[0], check_targets(test[1], loss, path, "y_test"))
    return _with_test_split(path, x_train, y_train, test, test_fraction, seed)


# --- CSV tables --------------------------------------------------------------------------------

def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """``(header, [(line, fields), ...])`` with 1-based line numbers (the header is line 1).

    ``utf-8-sig`` drops a UTF-8 byte-order mark; blank lines are skipped; a quoted field may hold
    commas or newlines, and its record is numbered by the line it starts on.
    """
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        rows, line = [], 1
        for fields in reader:
            if fields:
                rows.append((line, fields))
            line = reader.line_num + 1
    if not rows:
        raise DataFileError(f"{path}: empty file; expected a header row naming the columns")
    header = [name.strip() for name in rows[0][1]]
    for i, name in enumerate(header):
        if not name:
            raise DataFileError(f"{path}, line {rows[0][0]}: column {i + 1} of the header has no name")
        if name in header[:i]:
            raise DataFileError(f"{path}, line {rows[0][0]}: column {name!r} appears twice in the "
                                "header")
    return header, rows[1:]


def _parse_rows(path: Path, header: list[str], rows: list[tuple[int, list[str]]]) -> np.ndarray:
    """float64 ndarray of shape (N, len(header)); the first empty or non-numeric cell is an error."""
    values = np.empty((len(rows), len(header)), dtype=np.float64)
    for r, (line, fields) in enumerate(rows):
        if len(fields) != len(header):
            raise DataFileError(f"{path}, line {line}: {len(fields)} fields, but the header names "
                                f"{len(header)} columns")
        for c, field in enumerate(fields):
            values[r, c] = _parse_value(path, line, header[c], field)
    return values


def _parse_value(path: Path, line: int, column: str, field: str) -> float:
    text = field.strip()
    if not text:
        raise DataFileError(f"{path}, line {line}, column {column!r}: missing value")
    try:
        value = float(text)
    except ValueError:
        raise DataFileError(f"{path}, line {line}, column {column!r}: {field!r} is not a number "
                            "(every column must be numeric; encode class names as 0..K-1)") from None
    if not math.isfinite(value):
        raise DataFileError(f"{path}, line {line}, column {column!r}: {field!r} is not a finite "
                            "number (missing values are not allowed)")
    return value


def _is_integer_column(rows: list[tuple[int, list[str]]], c: int) -> bool:
    """True when every field of column ``c`` is written as an integer ("3", not "3.0" or "3e0")."""
    return all(fields[c].strip().lstrip("+-").isdigit() for _, fields in rows)


def _target_names(path: Path, header: list[str], targets: list[str]) -> None:
    for name in targets:
        if name not in header:
            raise DataFileError(f"{path}: no target column {name!r}{_did_you_mean(name, header)} "
                                f"(columns: {', '.join(header)})")
    if len(set(targets)) == len(header):
        raise DataFileError(f"{path}: every column is a target; no feature columns are left")


def _feature_names(path: Path, header: list[str], targets: list[str], features: list[str] | None
                   ) -> list[str]:
    """The header's non-target columns, or ``features`` if the header has exactly those."""
    if features is None:
        return [name for name in header if name not in targets]
    if set(header) != set(features) | set(targets):
        absent = [name for name in features if name not in header]
        extra = [name for name in header if name not in features and name not in targets]
        raise DataFileError(f"{path}: its columns differ from the training file's: missing "
                            f"{absent or 'none'}, extra {extra or 'none'}")
    return features


def _csv_split(path: Path, target: str | list[str], features: list[str] | None, loss: str | None = None
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(x, y, features)`` of one file: x (N, F) with columns in ``features``' order (default: the
    file's), y (N,) for one target name, (N, k) for a list of k; checked against ``loss`` if given."""
    targets = [target] if isinstance(target, str) else target
    header, rows = _read_rows(path)
    _target_names(path, header, targets)
    features = _feature_names(path, header, targets, features)
    if not rows:
        raise DataFileError(f"{path}: a header but no data rows")
    values = _parse_rows(path, header, rows)
    x = values[:, [header.index(name) for name in features]].astype(np.float32)
    t = [header.index(name) for name in targets]
    y = values[:, t[0] if isinstance(target, str) else t]
    integer = all(_is_integer_column(rows, c) for c in t)
    y = y.astype(np.int64 if integer else np.float32)
    if loss is not None:
        name = f"column {target!r}" if isinstance(target, str) else f"columns {', '.join(map(repr, targets))}"
        y = check_targets(y, loss, path, name, lines=[line for line, _ in rows])
    return x, y, features


def load_csv(path: str | os.PathLike, target: str | Sequence[str],
             test_path: str | os.PathLike | None = None, test_fraction: float = 0.2, seed: int = 0,
             loss: str | None = None) -> FileData:
    """Read a CSV table with a header row; ``target`` names the target column (or a list of them).

    Every other column is a feature: ``x`` is float32 of shape (N, F), its columns in the training
    file's order (:attr:`FileData.columns`). ``y`` has shape (N,) for ``target="name"`` and (N, k)
    for a list of k names; it is int64 when every target field is written as an integer ("3", not
    "3.0"), else float32.

    Args:
        path: the training table (comma-separated, UTF-8 with or without a byte-order mark,
            fields optionally quoted).
        target: the target column's name, or a list of names.
        test_path: a test table with the same columns in any order (matched by name). Without it,
            ``round(test_fraction * N)`` rows are held out with ``seed``.
        loss: if given, the targets are checked against it and converted (:func:`check_targets`)
            before a test split is held out, so an error names the file, the column and the line.

    Raises:
        DataFileError naming the file: missing file, no such target column (with a did-you-mean
        and the list of columns), a missing value or a non-numeric field (naming the column and
        the 1-based line, the header being line 1), a row with the wrong number of fields, a test
        table whose columns differ.
    """
    target = target if isinstance(target, str) else list(target)
    if not target:
        raise ValueError("target must name at least one column")
    path = _existing_file(path)
    x_train, y_train, features = _csv_split(path, target, None, loss)
    test = None
    if test_path is not None:
        test = _csv_split(_existing_file(test_path), target, features, loss)[:2]
    return _with_test_split(path, x_train, y_train, test, test_fraction, seed, columns=tuple(features))


# --- inputs to predict on ----------------------------------------------------------------------

def load_features(path: str | os.PathLike, columns: Sequence[str] | None = None) -> np.ndarray:
    """The inputs of a file to predict on, as float32 of shape (N, ...).

    An ``.npz`` archive gives its array ``x`` (else ``x_test``, else ``x_train``, else its only array). A CSV table
    gives the ``columns`` a model was trained on, by name and in that order (other columns, such as
    the target, are ignored), or every column when ``columns`` is None.
    """
    path = _existing_file(path)
    if path.suffix.lower() == ".csv":
        header, rows = _read_rows(path)
        if not rows:
            raise DataFileError(f"{path}: a header but no data rows")
        wanted = list(columns) if columns is not None else header
        missing = [name for name in wanted if name not in header]
        if missing:
            raise DataFileError(f"{path}: no column {missing[0]!r}{_did_you_mean(missing[0], header)}; the model "
                                f"reads the columns {', '.join(wanted)}")
        values = _parse_rows(path, header, rows)
        return values[:, [header.index(name) for name in wanted]].astype(np.float32)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataFileError(f"{path}: neither a .csv table nor a NumPy .npz archive") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataFileError(f"{path}: a single .npy array; save the inputs with np.savez(path, x=inputs)")
    with archive:
        names = list(archive.files)
        name = next((n for n in ("x", "x_test", "x_train") if n in names), names[0] if len(names) == 1 else None)
        if name is None:
            raise DataFileError(f"{path}: which array holds the inputs? name it 'x' (it holds {', '.join(names)})")
        x = _npz_array(path, archive, name)
    _finite(path, name, x)
    return x.astype(np.float32)


# --- targets against the loss ------------------------------------------------------------------

def _integer_valued(y: np.ndarray) -> bool:
    return y.dtype.kind in "biu" or bool(np.all(np.mod(y, 1) == 0))


def describe_targets(y: np.ndarray) -> tuple[str, int]:
    """``("classes", n_classes)`` or ``("regression", n_targets)``: what the targets look like.

    Class labels are a 1-D array of non-negative integers (an integer dtype, or floats that are all
    whole numbers), with ``n_classes = max(y) + 1``. Anything else is regression with
    ``n_targets = 1`` for shape (N,) and ``k`` for (N, k). Only a guess: whole-number regression
    targets look like classes, so :func:`check_targets` decides against the chosen loss.
    """
    y = np.asarray(y)
    if y.ndim == 1 and len(y) and _integer_valued(y) and y.min() >= 0:
        return "classes", int(y.max()) + 1
    return "regression", 1 if y.ndim == 1 else int(np.prod(y.shape[1:]))


def check_targets(y: np.ndarray, loss_name: str, path: str | os.PathLike, name: str = "y_train",
                  lines: Sequence[int] | None = None) -> np.ndarray:
    """Targets ``y`` in the dtype ``loss_name`` needs, or a DataFileError naming ``path`` and ``name``.

    A bad value is located by its row (its index) in ``y``, or by the file's line when ``lines``
    gives the line of each row (a CSV table's).

    - ``"cross_entropy"``: integer class labels >= 0 of shape (N,) (whole-number floats are
      accepted); returned as int64.
    - ``"mse"``: numeric targets of shape (N,) or (N, k); returned as float32. Integer targets are
      accepted and converted, as Keras casts ``y_true`` to the prediction's dtype (torch's
      ``MSELoss`` instead refuses a long target).
    - ``"bce_with_logits"``: values 0 or 1, any shape; returned as float32. torch's
      ``BCEWithLogitsLoss`` also takes probabilities in [0, 1]; a data file holds labels, so other
      values are taken for a wrong file or loss.
    """
    if loss_name not in LOSSES:
        raise ValueError(f"unknown loss {loss_name!r}{_did_you_mean(loss_name, LOSSES)} "
                         f"(expected one of {', '.join(LOSSES)})")
    y = np.asarray(y)
    where = f"{path}: {name}"
    if y.dtype.kind not in "biuf":
        raise DataFileError(f"{where} has dtype {y.dtype}; {loss_name} needs numeric targets")
    if loss_name == "cross_entropy":
        return _class_labels(y, where, lines)
    if loss_name == "mse":
        if y.ndim not in (1, 2):
            raise DataFileError(f"{where} has shape {y.shape}; mse needs (N,) or (N, k)")
        return y.astype(np.float32)
    bad = (y != 0) & (y != 1)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataFileError(f"{where} has the value {y[index]} {_at(index, lines)}; bce_with_logits "
                            "needs targets 0 or 1")
    return y.astype(np.float32)


def _at(index: tuple[int, ...], lines: Sequence[int] | None) -> str:
    """Where a value is: "at row 3" of a 1-D array, "at index (3, 1)", or "on line 5" of a CSV table."""
    if lines is not None:
        return f"on line {lines[index[0]]}"
    return f"at row {index[0]}" if len(index) == 1 else f"at index {index}"


def _class_labels(y: np.ndarray, where: str, lines: Sequence[int] | None) -> np.ndarray:
    if y.ndim != 1:
        raise DataFileError(f"{where} has shape {y.shape}; cross_entropy needs class labels of "
                            "shape (N,)")
    fractional = np.flatnonzero(np.mod(y, 1) != 0) if y.dtype.kind == "f" else ()
    if len(fractional):
        i = int(fractional[0])
        raise DataFileError(f"{where} has the non-integer value {y[i]} {_at((i,), lines)}; cross_entropy "
                            "needs integer class labels (use mse for regression)")
    if len(y) and y.min() < 0:
        i = int(np.argmin(y))
        raise DataFileError(f"{where} has the negative label {y[i]} {_at((i,), lines)}; class labels must "
                            "be 0..K-1")
    return y.astype(np.int64)
