"""Where trials run: a local process pool, or Ray tasks on a cluster.

A backend pulls tasks (a trial function named "module:function" and its keyword arguments) from
``next_task()`` whenever a worker is free, so a sampler can choose each trial from the results
of those before it; ``next_task`` answers a Task, ``WAIT`` (nothing to start now: ask again in a
moment) or None (nothing more). The backend calls ``on_start``, ``on_done`` or ``on_fail`` in the
coordinating process as each task starts, finishes or fails.

Local: ``workers`` processes (spawned, not forked); when several trials share the machine each
gets one BLAS thread, since N trials with N threads each would fight over the cores. A worker
whose coordinator dies (``kill -9``) notices within half a second and exits, so a restarted
sweep does not race an orphan for a run folder (the folder's lock guards that too).

Ray: every trial is a task with ``num_cpus=1`` on an existing cluster (``address="auto"`` after
``ray start --head``, or ``ray://host:10001``), or on a local one started for the sweep. Run
folders are written by the workers, so on a multi-node cluster the sweep folder must be on a
file system every node shares. ``ray.init`` retries an unreachable cluster for minutes and has
no timeout of its own, so the address is first tried with a plain TCP connection that gives up
after ``connect_timeout`` seconds; a port that answers but is no Ray cluster is tried once by Ray
(about 40 s), not the 20 times it tries by default.
"""

from __future__ import annotations

import importlib
import os
import pickle
import socket
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


WAIT = "wait"  # next_task(): nothing to start now, ask again
POLL = 1.0     # seconds between two questions to next_task while it answers WAIT


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


class TaskError(Exception):
    """A task's exception that could not cross back from a pool worker as itself; holds its traceback."""


def execute_in_worker(fn: str, kwargs: dict, threads: int | None = None) -> dict:
    """:func:`execute` in a pool worker. An exception that pickling cannot carry back intact (one
    whose ``__init__`` takes other arguments than its message) would break the whole pool, and every
    task in it would be run again alone; it is raised as a :class:`TaskError` holding its traceback."""
    try:
        return execute(fn, kwargs, threads)
    except Exception as exc:
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:
            raise TaskError("".join(traceback.format_exception(exc)).rstrip()) from None
        raise


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

    def run(self, next_task, on_start, on_done, on_fail) -> None:
        if self.workers == 1:
            self._run_here(next_task, on_start, on_done, on_fail)
            return
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        threads = 1

        def new_pool():
            return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_init_worker, initargs=(os.getpid(), threads))

        pool = None
        try:
            running: dict = {}
            finished = False
            while True:
                while not finished and len(running) < self.workers:  # start only what can start now
                    task = next_task()
                    if task is None:
                        finished = True
                    elif task == WAIT:
                        break
                    else:
                        pool = pool or new_pool()  # nothing to run: no worker started at all
                        on_start(task, "local pool")
                        running[pool.submit(execute_in_worker, task.fn, task.kwargs, threads)] = task
                if not running:
                    if finished:
                        return
                    time.sleep(POLL)
                    continue
                done, _ = wait(running, timeout=POLL, return_when=FIRST_COMPLETED)
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
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _run_here(next_task, on_start, on_done, on_fail) -> None:
        """One worker: every task in this process, one after the other."""
        while (task := next_task()) is not None:
            if task == WAIT:
                time.sleep(POLL)
                continue
            on_start(task, f"{socket.gethostname()}:{os.getpid()}")
            try:
                out = execute(task.fn, task.kwargs)
            except Exception:
                on_fail(task, traceback.format_exc())
            else:
                on_done(task, out)

    @staticmethod
    def _run_alone(task: Task, new_pool, on_start, on_done, on_fail) -> None:
        from concurrent.futures.process import BrokenProcessPool

        pool = new_pool()
        try:
            on_start(task, "local pool (alone)")
            out = pool.submit(execute_in_worker, task.fn, task.kwargs, 1).result()
        except BrokenProcessPool:
            on_fail(task, "a worker process died (killed, or out of memory) while running this trial")
        except Exception as exc:
            on_fail(task, "".join(traceback.format_exception(exc)))
        else:
            on_done(task, out)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def ray_endpoint(address: str) -> tuple[str, int]:
    """(host, port) of a Ray address: HOST:PORT, ray://HOST:PORT, or "auto", resolved by Ray's own
    lookup (RAY_ADDRESS, else the cluster the last ``ray start`` on this machine recorded)."""
    given = address
    if address == "auto":
        from ray._private.services import get_ray_address_from_environment

        try:
            address = get_ray_address_from_environment("auto", None)
        except ConnectionError as exc:
            raise RuntimeError(f"--address auto: {exc}") from None
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        shown = given if given == address else f"{given} (= {address})"
        raise RuntimeError(f"--address {shown!r} must be auto, HOST:PORT or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float) -> None:
    """Fail within ``timeout`` seconds when nothing accepts a TCP connection at ``address``."""
    host, port = ray_endpoint(address)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise RuntimeError(f"--address {address}: nothing answers at {host}:{port} within {timeout:g} s ({reason}); "
                           "start a cluster with `ray start --head`, leave out --address for a local Ray, "
                           "or give a slow network more time with --connect-timeout SECONDS") from None


@contextmanager
def _one_gcs_attempt():
    """Let ray.init try the GCS once (about 40 s in Ray 2.60) instead of 20 times, unless the user set
    RAY_gcs_server_port_wait_time_s (the number of attempts Ray reads when it connects)."""
    var = "RAY_gcs_server_port_wait_time_s"
    if var in os.environ:
        yield
        return
    os.environ[var] = "1"
    try:
        yield
    finally:
        del os.environ[var]


class RayBackend:
    """Trials as Ray tasks; connects to ``address`` (giving up after ``connect_timeout`` seconds
    if nothing answers there) or starts a local Ray with ``num_cpus``."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, connect_timeout: float = 30.0):
        self.address, self.num_cpus, self.connect_timeout = address, num_cpus, connect_timeout

    def _init(self, ray) -> bool:
        if ray.is_initialized():
            return False
        here = str(Path(__file__).resolve().parents[2])  # so workers import this tricklab and its tests
        paths = os.pathsep.join(dict.fromkeys([here, os.getcwd(), *filter(None, [os.environ.get("PYTHONPATH")])]))
        env = {"runtime_env": {"env_vars": {"PYTHONPATH": paths, **{v: "1" for v in THREAD_VARS}}}}
        if self.address:
            check_reachable(self.address, self.connect_timeout)
            try:
                with _one_gcs_attempt():
                    ray.init(address=self.address, log_to_driver=False, **env)
            except ConnectionError as exc:
                raise RuntimeError(f"--address {self.address}: no Ray cluster to join ({exc}); start one with "
                                   "`ray start --head`, or leave out --address for a local Ray") from None
        else:
            ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False, **env)
        return True

    def run(self, next_task, on_start, on_done, on_fail) -> None:
        try:
            import ray
        except ImportError:
            raise RuntimeError("--backend ray needs Ray: pip install 'ray>=2.9' (or tricklab[ray])") from None
        task = next_task()
        while task == WAIT:
            time.sleep(POLL)
            task = next_task()
        if task is None:  # nothing to run: no cluster joined, no local Ray started
            return
        started = self._init(ray)
        try:
            remote = ray.remote(num_cpus=1, max_retries=0)(execute)
            slots = self.num_cpus or int(ray.cluster_resources().get("CPU", 1))
            refs, finished = {}, False
            while True:
                while not finished and len(refs) < slots:
                    if task is None:
                        task = next_task()
                    if task is None:
                        finished = True
                    elif task == WAIT:
                        task = None
                        break
                    else:
                        on_start(task, "ray")
                        refs[remote.remote(task.fn, task.kwargs, 1)] = task
                        task = None
                if not refs:
                    if finished:
                        return
                    time.sleep(POLL)
                    continue
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL)
                for ref in ready:
                    done = refs.pop(ref)
                    try:
                        out = ray.get(ref)
                    except Exception as exc:  # RayTaskError wraps the trial's own exception
                        on_fail(done, str(exc))
                    else:
                        on_done(done, out)
        finally:
            if started:
                ray.shutdown()


def from_list(tasks: list[Task]):
    """``next_task`` for a fixed list of tasks: each in turn, then None."""
    queue = list(tasks)
    return lambda: queue.pop(0) if queue else None


def make_backend(name: str, workers: int | None = None, address: str | None = None, connect_timeout: float = 30.0):
    if name == "local":
        if address:
            print("tricklab: --address is for --backend ray; ignored", file=sys.stderr)
        return LocalBackend(workers)
    if name == "ray":
        return RayBackend(address, num_cpus=workers, connect_timeout=connect_timeout)
    raise ValueError(f"backend must be 'local' or 'ray', got {name!r}")
