"""Where trials run: a local process pool, or Ray tasks on a cluster.

A backend takes tasks (a trial function named "module:function" and its keyword arguments) and
calls ``on_start``, ``on_done`` or ``on_fail`` in the coordinating process as each one starts,
finishes or fails; only the coordinator writes to the results store.

Local: ``workers`` processes (spawned, not forked); when several trials share the machine each
gets one BLAS thread, since N trials with N threads each would fight over the cores. A worker
whose coordinator dies (``kill -9``) notices within half a second and exits, so a restarted
sweep does not race an orphan for a run folder (the folder's lock guards that too).

Ray: every trial is a task with ``num_cpus=1`` on an existing cluster (``address="auto"`` after
``ray start --head``, or ``ray://host:10001``), or on a local one started for the sweep. Run
folders are written by the workers, so on a multi-node cluster the sweep folder must be on a
file system every node shares.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class Task:
    key: str                     # the trial id
    fn: str                      # "module:function"
    kwargs: dict = field(default_factory=dict)


def resolve(fn: str) -> Callable:
    module, _, name = fn.partition(":")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def execute(fn: str, kwargs: dict, threads: int | None = None) -> dict:
    """Run one task where it lands (pool worker, Ray worker, or in-process); time it."""
    limit = None
    if threads:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(threads)
    try:
        start = time.perf_counter()
        result = resolve(fn)(**kwargs)
        return {"result": result, "seconds": time.perf_counter() - start,
                "worker": f"{socket.gethostname()}:{os.getpid()}"}
    finally:
        if limit is not None:
            limit.restore_original_limits()


def _orphan_watch(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(0.5)


def _init_worker(parent: int, threads: int | None) -> None:
    if threads:
        for var in THREAD_VARS:
            os.environ[var] = str(threads)
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class LocalBackend:
    """A pool of ``workers`` processes on this machine (one worker: run in this process)."""

    name = "local"

    def __init__(self, workers: int | None = None):
        self.workers = max(1, workers or cpu_count())

    def run(self, tasks: list[Task], on_start, on_done, on_fail) -> None:
        if self.workers == 1 or len(tasks) <= 1:
            for task in tasks:
                on_start(task, f"{socket.gethostname()}:{os.getpid()}")
                try:
                    out = execute(task.fn, task.kwargs)
                except Exception:
                    on_fail(task, traceback.format_exc())
                else:
                    on_done(task, out)
            return
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        threads = 1

        def new_pool():
            return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_init_worker, initargs=(os.getpid(), threads))

        pool = new_pool()
        try:
            queue = list(tasks)
            running: dict = {}
            while queue or running:
                while queue and len(running) < self.workers:  # submit only what can start now
                    task = queue.pop(0)
                    on_start(task, "local pool")
                    running[pool.submit(execute, task.fn, task.kwargs, threads)] = task
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                suspects = []
                for fut in done:
                    task = running.pop(fut)
                    try:
                        out = fut.result()
                    except BrokenProcessPool:
                        suspects.append(task)
                    except Exception as exc:
                        on_fail(task, "".join(traceback.format_exception(exc)))
                    else:
                        on_done(task, out)
                if suspects:
                    # A dead worker breaks the whole pool and every trial in it; which one died is
                    # unknown, so each is run again alone: the guilty one fails, the others finish.
                    suspects += list(running.values())
                    running.clear()
                    pool.shutdown(wait=True, cancel_futures=True)
                    for task in suspects:
                        self._run_alone(task, new_pool, on_start, on_done, on_fail)
                    pool = new_pool()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _run_alone(task: Task, new_pool, on_start, on_done, on_fail) -> None:
        from concurrent.futures.process import BrokenProcessPool

        pool = new_pool()
        try:
            on_start(task, "local pool (alone)")
            out = pool.submit(execute, task.fn, task.kwargs, 1).result()
        except BrokenProcessPool:
            on_fail(task, "a worker process died (killed, or out of memory) while running this trial")
        except Exception as exc:
            on_fail(task, "".join(traceback.format_exception(exc)))
        else:
            on_done(task, out)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class RayBackend:
    """Trials as Ray tasks; connects to ``address`` or starts a local Ray with ``num_cpus``."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        self.address, self.num_cpus = address, num_cpus

    def _init(self, ray) -> bool:
        if ray.is_initialized():
            return False
        here = str(Path(__file__).resolve().parents[2])  # so workers import this tricklab and its tests
        paths = os.pathsep.join(dict.fromkeys([here, os.getcwd(), *filter(None, [os.environ.get("PYTHONPATH")])]))
        env = {"runtime_env": {"env_vars": {"PYTHONPATH": paths, **{v: "1" for v in THREAD_VARS}}}}
        if self.address:
            try:
                ray.init(address=self.address, log_to_driver=False, **env)
            except ConnectionError as exc:
                raise RuntimeError(f"--address {self.address}: no Ray cluster to join ({exc}); start one with "
                                   "`ray start --head`, or leave out --address for a local Ray") from None
        else:
            ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False, **env)
        return True

    def run(self, tasks: list[Task], on_start, on_done, on_fail) -> None:
        try:
            import ray
        except ImportError:
            raise RuntimeError("--backend ray needs Ray: pip install 'ray>=2.9' (or tricklab[ray])") from None
        started = self._init(ray)
        try:
            remote = ray.remote(num_cpus=1, max_retries=0)(execute)
            refs = {}
            for task in tasks:
                on_start(task, "ray")
                refs[remote.remote(task.fn, task.kwargs, 1)] = task
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                for ref in ready:
                    task = refs.pop(ref)
                    try:
                        out = ray.get(ref)
                    except Exception as exc:  # RayTaskError wraps the trial's own exception
                        on_fail(task, str(exc))
                    else:
                        on_done(task, out)
        finally:
            if started:
                ray.shutdown()


def make_backend(name: str, workers: int | None = None, address: str | None = None):
    if name == "local":
        if address:
            print("tricklab: --address is for --backend ray; ignored", file=sys.stderr)
        return LocalBackend(workers)
    if name == "ray":
        return RayBackend(address, num_cpus=workers)
    raise ValueError(f"backend must be 'local' or 'ray', got {name!r}")
