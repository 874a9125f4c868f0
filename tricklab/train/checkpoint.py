"""Crash-safe checkpoints: a NumPy archive (no pickle) plus JSON metadata, written atomically.

A checkpoint ``ckpt-000007`` is two files::

    ckpt-000007.npz    every array of the training state (weights, optimizer moments, ...)
    ckpt-000007.json   everything else (epoch, random generator states, history, config) and
                       the SHA-256 of the .npz

Each file is written to a temporary name, flushed and fsync'ed, then renamed over its final name,
so a kill at any moment leaves either the old or the new file, never half of one. The JSON is
written last and carries the digests of the archive and of its own state, so a checkpoint counts
only once both are whole; a truncated or corrupted checkpoint (either half) fails a digest check
and is reported, never loaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_bytes

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{6})\.json$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or corrupted."""


# ---------------------------------------------------------------------------- codec
def split_arrays(obj, arrays: dict, prefix: str = "s"):
    """Replace every ndarray inside nested dicts/lists by a reference; collect the arrays.

    Dicts whose keys are not all strings (optimizer state is keyed by parameter index) are
    stored as item lists so that the keys come back with their types.
    """
    if isinstance(obj, np.ndarray):
        key = f"{prefix}"
        arrays[key] = obj
        return {"__array__": key}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: split_arrays(v, arrays, f"{prefix}/{k}") for k, v in obj.items()}
        return {"__items__": [[k, split_arrays(v, arrays, f"{prefix}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [split_arrays(v, arrays, f"{prefix}/{i}") for i, v in enumerate(obj)]
    return obj


def join_arrays(obj, arrays):
    """Inverse of :func:`split_arrays`."""
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return np.array(arrays[obj["__array__"]])
        if set(obj) == {"__items__"}:
            return {_key(k): join_arrays(v, arrays) for k, v in obj["__items__"]}
        return {k: join_arrays(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_arrays(v, arrays) for v in obj]
    return obj


def _key(k):
    return tuple(k) if isinstance(k, list) else k


# ---------------------------------------------------------------------------- files
def save_checkpoint(directory: Path, step: int, state: dict, keep: int = 2) -> Path:
    """Write ``state`` as checkpoint number ``step`` in ``directory``; keep the newest ``keep``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays: dict = {}
    meta = split_arrays(state, arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    blob = buf.getvalue()
    stem = f"ckpt-{step:06d}"
    atomic_write_bytes(directory / f"{stem}.npz", blob)
    doc = {"format": FORMAT_VERSION, "sha256": hashlib.sha256(blob).hexdigest(), "state_sha256": _digest(meta),
           "state": meta}
    atomic_write_bytes(directory / f"{stem}.json", json.dumps(doc).encode())
    for old in list_checkpoints(directory)[:-keep] if keep else []:
        for suffix in (".json", ".npz"):
            old.with_suffix(suffix).unlink(missing_ok=True)
    return directory / f"{stem}.json"


def _digest(meta) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def list_checkpoints(directory: Path) -> list[Path]:
    """The checkpoints' JSON files in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def load_checkpoint(path: Path) -> dict:
    """Load and verify one checkpoint (its .json path); raise CheckpointError if it is not whole."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable or truncated: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_VERSION or "sha256" not in doc:
        raise CheckpointError(f"checkpoint {path} has an unknown format")
    if _digest(doc.get("state")) != doc.get("state_sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupted: its state does not match its digest")
    npz = path.with_suffix(".npz")
    try:
        blob = npz.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint archive {npz} is missing: {exc}") from exc
    digest = hashlib.sha256(blob).hexdigest()
    if digest != doc["sha256"]:
        raise CheckpointError(f"checkpoint archive {npz} is corrupted: sha256 {digest}, expected {doc['sha256']}")
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return join_arrays(doc["state"], arrays)


def load_latest(directory: Path, warn=print) -> tuple[dict, Path] | None:
    """The newest checkpoint that verifies; damaged newer ones are reported through ``warn``."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return load_checkpoint(path), path
        except CheckpointError as exc:
            warn(f"skipping damaged checkpoint: {exc}")
    return None
