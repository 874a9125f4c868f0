"""One process per run folder: an exclusive lock on ``RUN/.lock`` that the OS drops when its holder dies.

``fcntl.flock`` locks belong to the open file, so the kernel releases them when the process exits,
however it exits (``kill -9`` included): a lock file left behind by a crash is stale, and the next
run takes it at once. While held, the file holds the holder's PID, for the message of the process
that is refused. The lab's trials take the same file (blocking), so a sweep and a ``tricklab train``
never write one run folder at the same time either.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".lock"


class RunFolderBusy(FileExistsError):
    """Another live process holds the run folder."""


@contextmanager
def hold_run_folder(run_dir: str | Path, wait: bool = False):
    """Hold ``run_dir`` for the block; raise :class:`RunFolderBusy` at once if another process holds it,
    or with ``wait`` block until it lets go (a lab worker orphaned by a killed sweep may still hold it)."""
    path = Path(run_dir) / LOCK_NAME
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise RunFolderBusy(f"{run_dir} is in use by another tricklab process (PID {holder}, lock file {path}); "
                                "wait for it to end or choose another --out folder") from None
        _write_pid(f, str(os.getpid()))
        try:
            yield path
        finally:
            _write_pid(f, "")
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_pid(f, text: str) -> None:
    f.seek(0)
    f.truncate()
    f.write(text + "\n" if text else "")
    f.flush()
