"""A run's history files: one row per epoch as ``history.csv`` and ``history.jsonl``, rewritten atomically."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..fileio import atomic_write_bytes


def write_history(run_dir: str | Path, history: list[dict]) -> None:
    """history.csv and history.jsonl, one row per epoch, each rewritten atomically."""
    run_dir = Path(run_dir)
    buf = io.StringIO()
    fields = list(dict.fromkeys(key for row in history for key in row))  # every key, in the order rows have them
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_bytes(run_dir / "history.csv", buf.getvalue().encode())
    lines = "".join(json.dumps(row) + "\n" for row in history)
    atomic_write_bytes(run_dir / "history.jsonl", lines.encode())


def read_history(run_dir: str | Path) -> list[dict]:
    """The rows of ``run_dir/history.jsonl`` (OSError or ValueError if it is missing or damaged)."""
    text = (Path(run_dir) / "history.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line]
