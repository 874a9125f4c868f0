"""The Optuna study a sweep or an ablation keeps its trials in, and the coordinator that runs them.

A lab folder's trials live in an Optuna study (by default ``sqlite:///FOLDER/sweep.db``, under the
folder's name). The command that runs them is a ``Coordinator``: it hands the backend one trial at
a time (``next_task``) as workers free up, records a heartbeat every ``HEARTBEAT`` seconds and its
owner (host:pid) for each trial it runs, and records each result as it arrives. Started again
after a kill (``kill -9`` included), it fails the trials a dead coordinator left RUNNING (at once
when that coordinator was on this machine, otherwise once its heartbeat is ``GRACE`` seconds old)
and retries them with Optuna's ``RetryHeartbeatStaleTrialCallback``: a WAITING copy with the same
parameters and attributes (so the same run folders, which resume from their checkpoints), whose
system attribute ``failed_trial`` names the attempt it replaces. A trial's *lineage* is its first
attempt and every retry; ``lineages`` gives the latest attempt of each, so every trial of a
search is counted once however often it was retried.

What a trial is (a sampled point of a search, a fixed variant and seed of an ablation) is the
subclass's: ``more`` (whether to ask the sampler for another), ``ask`` and ``task``.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from .. import config as config_
from .backends import WAIT, Task

HEARTBEAT = 5   # seconds between two heartbeats of a running trial
GRACE = 30      # a RUNNING trial without a heartbeat for this long is failed and retried
STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
          TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}


# ---------------------------------------------------------------------- storage
def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'sweep.db').resolve()}"


def open_storage(url: str, heartbeat: bool = False, attempts: int = 5) -> optuna.storages.RDBStorage:
    """The study's database; SQLite waits up to a minute for a lock (workers report into it too).
    ``heartbeat``: the coordinator's, which fails stale trials and retries them.

    Two processes opening a new database at once (workers starting together, or a reader such as
    ``optuna.load_study`` beside the coordinator) race to create Optuna's tables and stamp its schema
    version: the loser gets an IntegrityError (``UNIQUE constraint failed: alembic_version``) or a
    lock error. Opening again then finds the winner's tables, so it is retried ``attempts`` times."""
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return _rdb_storage(url, heartbeat)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


def _rdb_storage(url: str, heartbeat: bool) -> optuna.storages.RDBStorage:
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    if not heartbeat:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT, grace_period=GRACE,
                                          heartbeat_stale_trial_callback=retry())


def retry() -> RetryHeartbeatStaleTrialCallback:
    """Optuna's retry: a WAITING copy of a failed trial (parameters, attributes, reported values)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)


def holds_study(path: str | Path) -> bool:
    """Whether the SQLite file ``path`` holds Optuna's tables (a study)."""
    if not Path(path).exists():
        return False
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
    try:
        return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'studies'").fetchone() is not None
    finally:
        db.close()


def check_folder(out: Path, kind: str) -> None:
    """Refuse a folder whose ``sweep.db`` is not an Optuna study (the results store of a search from
    before the lab moved onto Optuna), before anything is written into it."""
    if (out / "sweep.db").exists() and not holds_study(out / "sweep.db"):
        raise config_.ConfigError(f"--out {out} holds a search of the results store from before Optuna; choose "
                                  f"another --out for this {kind}")


def claim_study(study: optuna.Study, out: Path, identity: dict) -> None:
    """Refuse a study that holds another search than ``identity`` (its ``kind``, sweep or
    ablation, and what makes it that search), or this sweep ranked by another metric; the same
    command again resumes it."""
    held = study.user_attrs.get("search")
    if held is None or held == identity:
        return
    kind, held_kind = identity["kind"], held.get("kind", "sweep")
    if kind == "sweep" and {**held, "metric": identity.get("metric")} == identity:
        raise config_.ConfigError(
            f"--out {out} holds this sweep ranked by {held['metric']}; ranking it by {identity['metric']} needs "
            "another --out (the test split is scored once, for the configuration one metric chooses)")
    if kind == "sweep" and held_kind == "ablation":
        raise config_.ConfigError(f"--out {out} holds an ablation; choose another --out for this sweep")
    command = study.user_attrs.get("command") or "started from Python"
    raise config_.ConfigError(f"--out {out} holds another {held_kind} ({command}); choose another --out for this "
                              f"{kind}, or run that command again to resume it")


# ---------------------------------------------------------------------- lineages
def root(trial) -> int:
    """The trial a (retried) trial stands for: its first attempt's number."""
    return trial.system_attrs.get("failed_trial", trial.number)


def lineages(trials) -> dict[int, object]:
    """``{root: its latest attempt}`` over ``trials`` (FrozenTrials)."""
    out: dict[int, object] = {}
    for t in sorted(trials, key=lambda t: t.number):
        out[root(t)] = t
    return out


def _alive(owner: str | None) -> bool | None:
    """Whether the coordinator ``owner`` (host:pid) lives; None when it is not on this machine."""
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


# ---------------------------------------------------------------------- the coordinator
class Coordinator:
    """The coordinator of one command on ``study``: hands out its trials as workers free up
    (``next_task``), records heartbeats while they run and their results (``tell``, ``fail``), and
    takes back the trials of a dead coordinator (``reclaim``). Use as a context manager around the
    backend's run (the heartbeats run meanwhile)."""

    def __init__(self, study: optuna.Study, storage: optuna.storages.RDBStorage, log):
        self.study, self.storage, self.log = study, storage, log
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.running: dict[str, optuna.Trial] = {}
        self.failed_here: set[int] = set()
        self.finished = 0
        self._stop = threading.Event()

    # ------------------------------------------------------------------ what a trial is: the subclass's
    def more(self, latest: dict) -> bool:
        """Whether to ask the sampler for a new trial, given the ``latest`` attempt of each lineage."""
        return False

    def ask(self, latest: dict) -> optuna.Trial:
        """The next trial, from the study (a WAITING one first: a retry, an enqueued one)."""
        raise NotImplementedError

    def task(self, trial: optuna.Trial) -> Task | None:
        """The backend's task for ``trial`` (entered in ``running``); None when it failed instead."""
        raise NotImplementedError

    def describe(self, trial: optuna.Trial) -> str:
        """How the log names ``trial``."""
        return f"trial {trial.number}"

    def progress(self) -> str:
        """The log's count of finished trials."""
        return f"[{self.finished}]"

    # ------------------------------------------------------------------ heartbeats and takeover
    def beat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            for trial in list(self.running.values()):
                try:
                    self.storage.record_heartbeat(trial._trial_id)
                except Exception:  # a missed beat is retried; the trial is failed only after GRACE
                    pass

    def __enter__(self):
        self._thread = threading.Thread(target=self.beat, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def fail_and_retry(self, trial) -> None:
        try:
            if not self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                return
        except optuna.exceptions.UpdateFinishedTrialError:
            return
        retry()(self.study, self.storage.get_trial(trial._trial_id))

    def reclaim(self) -> int:
        """Fail and retry the RUNNING trials of a dead coordinator on this machine, those that never
        had a heartbeat for GRACE seconds, and (Optuna's heartbeat check) any with a stale heartbeat."""
        mine = {t._trial_id for t in self.running.values()}
        old = datetime.now() - timedelta(seconds=GRACE)
        n = 0
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t._trial_id in mine:
                continue
            owner = t.user_attrs.get("owner")
            if _alive(owner) is False or (owner is None and t.datetime_start and t.datetime_start < old):
                self.fail_and_retry(t)
                n += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)
        return n

    def retry_failed(self) -> int:
        """Queue again every trial whose latest attempt failed in an earlier command."""
        failed = [t for t in lineages(self.study.get_trials(deepcopy=False)).values() if t.state == TrialState.FAIL]
        for t in failed:
            retry()(self.study, t)
        return len(failed)

    # ------------------------------------------------------------------ the backend's side
    def next_task(self):
        """The next trial to run, WAIT while trials of another coordinator are still RUNNING, or None."""
        self.reclaim()
        while True:
            latest = lineages(self.study.get_trials(deepcopy=False))
            waiting = any(t.state == TrialState.WAITING for t in latest.values())
            if not waiting and not self.more(latest):
                foreign = [t for t in latest.values() if t.state == TrialState.RUNNING and str(t.number)
                           not in self.running]
                return WAIT if foreign else None
            trial = self.ask(latest)
            trial.set_user_attr("owner", self.owner)
            self.storage.record_heartbeat(trial._trial_id)
            task = self.task(trial)
            if task is not None:
                return task

    def on_start(self, task: Task, worker: str) -> None:
        self.running[task.key].set_user_attr("worker", worker)

    def on_fail(self, task: Task, error: str) -> None:
        self.fail(self.running.pop(task.key), error)

    def tell(self, trial: optuna.Trial, value: float | None = None, state: TrialState | None = None,
             label: str = "") -> bool:
        """Finish ``trial`` (its value, or its state); False (and a line in the log) when another
        coordinator took it over meanwhile: its retry records the result instead."""
        try:
            self.study.tell(trial, value, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:
            self.log(f"{label or self.describe(trial)}: taken over by another coordinator (its heartbeat was late); "
                     "its retry records it")
            return False
        self.finished += 1
        return True

    def fail(self, trial: optuna.Trial, error: str) -> None:
        """Record ``trial`` as failed with ``error`` (its user attribute 'error'); retried the next
        time the command runs."""
        self.running.pop(str(trial.number), None)
        try:
            trial.set_user_attr("error", error[-4000:])
            self.study.tell(trial, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return
        self.failed_here.add(trial.number)
        self.finished += 1
        self.log(f"{self.progress()} {self.describe(trial)}: FAILED\n{error}")
