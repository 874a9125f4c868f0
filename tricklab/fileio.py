"""Crash-safe file writing: a file is replaced whole or not at all, and the rename is made durable.

Every file tricklab writes for later (checkpoints, histories, models, figures, reports, downloads)
goes through :func:`atomic_write_bytes` or, for a file written elsewhere first, :func:`fsync_dir`
after its rename.
"""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, whole.

    The bytes go to a temporary file beside ``path``, are flushed and fsync'ed, then renamed over
    ``path`` (``os.replace`` is atomic), then the folder is fsync'ed so the rename survives a power
    cut. A write that fails (full disk, read-only folder) removes its temporary file and raises.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # a folder that refuses even this: the original error says why
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable; platforms and file systems that cannot fsync a folder are let be."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
