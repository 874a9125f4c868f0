"""An ablation's results store: one SQLite database per ablation folder (``sweep.db``).

(A sweep keeps its trials in an Optuna study instead: see sweep.py. An ablation runs a fixed list
of variants, measured rather than searched; it keeps this store until it moves onto the study too.)

Each trial is one row, keyed by a hash of its full configuration (seed included), so the same
command started again finds its earlier rows: finished trials are skipped, unfinished ones run
again (resuming from their run folder's checkpoint), and no trial can appear twice. Every state
change is one committed transaction, and only the coordinating process writes, so a kill at any
moment (``kill -9`` included) leaves each row either as it was or fully updated::

    pending --start--> running --finish--> done      (metrics, per-epoch history, timing)
                               --fail----> failed    (the error; run again on the next start)

A row left ``running`` by a killed sweep is simply started again.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id        TEXT PRIMARY KEY,           -- hash of the resolved configuration (seed included)
    idx       INTEGER NOT NULL,           -- position in the expansion
    point     INTEGER NOT NULL,           -- which configuration of the search (seeds share it)
    label     TEXT NOT NULL,              -- 'optimizer.lr=0.01, ...' or an ablation variant
    params    TEXT NOT NULL,              -- JSON {section.key: value} of the searched keys
    seed      INTEGER NOT NULL,
    config    TEXT NOT NULL,              -- the resolved configuration as TOML
    run_dir   TEXT NOT NULL,              -- relative to the store's folder
    status    TEXT NOT NULL DEFAULT 'pending',
    attempts  INTEGER NOT NULL DEFAULT 0,
    worker    TEXT,
    started   REAL,
    finished  REAL,
    seconds   REAL,
    history   TEXT,                       -- JSON list, one object per epoch
    metrics   TEXT,                       -- JSON object of final scores
    error     TEXT
);
"""
STATUSES = ("pending", "running", "done", "failed")


@dataclass
class Trial:
    """One configuration at one seed, as the store and the backends see it."""

    id: str
    idx: int
    point: int
    label: str
    params: dict
    seed: int
    config: dict
    run_dir: str


def holds_study(path: str | Path) -> bool:
    """Whether the SQLite file ``path`` holds Optuna's tables (a sweep's study) rather than this store's."""
    if not Path(path).exists():
        return False
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
    try:
        return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'studies'").fetchone() is not None
    finally:
        db.close()


class Store:
    """Open (creating if needed) ``path``; use as a context manager or call ``close()``. A file
    holding a sweep's Optuna study is refused (ConfigError), and left as it is."""

    def __init__(self, path: str | Path):
        from .. import config as config_

        self.path = Path(path)
        if holds_study(self.path):
            raise config_.ConfigError(f"--out {self.path.parent} holds another sweep (an Optuna study); choose "
                                      "another --out")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def _tx(self, sql: str, args=()) -> sqlite3.Cursor:
        with self.db:  # BEGIN ... COMMIT, or ROLLBACK on an exception
            self.db.execute("BEGIN IMMEDIATE")
            return self.db.execute(sql, args)

    # ------------------------------------------------------------------ metadata
    def set_meta(self, **items) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for k, v in items.items():
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, json.dumps(v)))

    def meta(self) -> dict:
        return {r["key"]: json.loads(r["value"]) for r in self.db.execute("SELECT key, value FROM meta")}

    # ------------------------------------------------------------------ trials
    def add(self, trials: list[Trial]) -> int:
        """Insert trials not yet known (by id); returns how many were new.

        A known trial keeps its status, results and run folder; its place in the search (index,
        point, label, parameters) becomes that of the command now running.
        """
        from .. import config as config_

        before = self.count()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "INSERT INTO trials (id, idx, point, label, params, seed, config, run_dir) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET idx = excluded.idx, "
                "point = excluded.point, label = excluded.label, params = excluded.params",
                [(t.id, t.idx, t.point, t.label, json.dumps(t.params), t.seed, config_.dumps(t.config), t.run_dir)
                 for t in trials])
        return self.count() - before

    def count(self, status: str | None = None) -> int:
        if status is None:
            return self.db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM trials WHERE status = ?", (status,)).fetchone()[0]

    def status(self, ids) -> dict[str, str]:
        ids = list(ids)
        rows = self.db.execute(f"SELECT id, status FROM trials WHERE id IN ({','.join('?' * len(ids))})", ids)
        return {r["id"]: r["status"] for r in rows}

    def start(self, trial_id: str, worker: str | None = None) -> None:
        self._tx("UPDATE trials SET status = 'running', attempts = attempts + 1, worker = ?, started = ?, "
                 "error = NULL WHERE id = ? AND status != 'done'",
                 (worker or f"{socket.gethostname()}:{os.getpid()}", time.time(), trial_id))

    def finish(self, trial_id: str, history: list[dict], metrics: dict, seconds: float) -> bool:
        """Record a finished trial; False (and nothing written) if it was already done."""
        cur = self._tx("UPDATE trials SET status = 'done', finished = ?, seconds = ?, history = ?, metrics = ?, "
                       "error = NULL WHERE id = ? AND status != 'done'",
                       (time.time(), seconds, json.dumps(history), json.dumps(metrics), trial_id))
        return cur.rowcount == 1

    def fail(self, trial_id: str, error: str) -> None:
        self._tx("UPDATE trials SET status = 'failed', finished = ?, error = ? WHERE id = ? AND status != 'done'",
                 (time.time(), error, trial_id))

    def rows(self, ids=None, status: str | None = None) -> list[dict]:
        """Trials as dicts (params, history and metrics decoded), in expansion order."""
        sql, args = "SELECT * FROM trials", []
        where = []
        if ids is not None:
            ids = list(ids)
            where.append(f"id IN ({','.join('?' * len(ids))})")
            args += ids
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if where:
            sql += " WHERE " + " AND ".join(where)
        out = []
        for r in self.db.execute(sql + " ORDER BY idx", args):
            d = dict(r)
            for k in ("params", "history", "metrics"):
                d[k] = json.loads(d[k]) if d[k] is not None else None
            out.append(d)
        return out


# ---------------------------------------------------------------------- an ablation's trials
def make_trials(cfg: dict, points: list[dict], seeds: list[int], labels: list[str] | None = None) -> list[Trial]:
    """One trial per (point, seed), with a validated configuration and a stable id."""
    from .. import config as config_
    from ..experiment import check_model
    from . import grid as grid_

    out = []
    for p, point in enumerate(points):
        for k, seed in enumerate(seeds):
            trial_cfg = grid_.apply(cfg, point, seed)
            if k == 0:
                try:
                    check_model(trial_cfg)
                except config_.ConfigError as exc:
                    label = labels[p] if labels else grid_.label(point)
                    raise config_.ConfigError(f"configuration {label}: {exc}") from None
            tid = grid_.digest(trial_cfg)
            out.append(Trial(id=tid, idx=len(out), point=p, label=labels[p] if labels else grid_.label(point),
                             params=point, seed=seed, config=trial_cfg, run_dir=f"runs/{p:04d}-s{seed}-{tid[:8]}"))
    ids = [t.id for t in out]
    if len(set(ids)) != len(ids):
        raise config_.ConfigError("two trials of this search have the same configuration; "
                                  "check for repeated grid values")
    return out


def claim_folder(store: Store, kind: str, trial_ids: list[str], metric=None) -> None:
    """Refuse a store that holds another search, whose trials and summary this one would mix with its own.

    A search is its kind and the ids of its trials, in order (base configuration, points and seeds);
    the same command again has the same ones, and resumes.
    """
    from .. import config as config_

    meta = store.meta()
    if "trial_ids" in meta and (meta.get("kind"), meta["trial_ids"]) != (kind, trial_ids):
        raise config_.ConfigError(
            f"--out {store.path.parent} holds another {meta.get('kind', 'search')} "
            f"({meta.get('command') or 'started from Python'}); choose another --out for this {kind}, "
            "or run that command again to resume it")


def run_trials(store: Store, trials: list[Trial], backend, fn: str, score_test: bool = False, log=print,
               metric=None) -> dict:
    """Run every trial of ``trials`` that is not done yet; record each as it finishes (logging ``metric``)."""
    from .backends import Task, from_list
    from .metric import Metric

    metric = metric or Metric()
    store.add(trials)
    stored = {r["id"]: r for r in store.rows(ids=[t.id for t in trials])}
    todo = [t for t in trials if stored[t.id]["status"] != "done"]
    root = store.path.parent
    log(f"{len(trials) - len(todo)} of {len(trials)} trials already done; running {len(todo)} "
        f"on the {backend.name} backend")
    by_id = {t.id: t for t in trials}
    counts = {"done": 0, "failed": 0}

    def on_start(task: Task, worker: str):
        store.start(task.key, worker)

    def on_done(task: Task, out: dict):
        res = out["result"]
        store.finish(task.key, res["history"], {**res["metrics"], "worker": out["worker"]}, out["seconds"])
        counts["done"] += 1
        t = by_id[task.key]
        value = metric.value(res["metrics"])
        log(f"[{counts['done'] + counts['failed']}/{len(todo)}] {t.label} seed {t.seed}: "
            f"{metric.name.replace('_', ' ')} {'—' if value is None else f'{value:.4f}'} ({out['seconds']:.1f}s)")

    def on_fail(task: Task, error: str):
        store.fail(task.key, error)
        counts["failed"] += 1
        t = by_id[task.key]
        log(f"[{counts['done'] + counts['failed']}/{len(todo)}] {t.label} seed {t.seed}: FAILED\n{error}")

    # an earlier command may have run this very trial under another point number: keep its folder
    tasks = [Task(t.id, fn, {"cfg": t.config, "run_dir": str(root / stored[t.id]["run_dir"]), "score_test": score_test})
             for t in todo]
    if tasks:  # nothing left: do not even start the workers (or a Ray cluster)
        backend.run(from_list(tasks), on_start, on_done, on_fail)
    return counts
