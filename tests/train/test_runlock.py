import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tricklab.train.runlock import LOCK_NAME, RunFolderBusy, hold_run_folder

ROOT = Path(__file__).resolve().parents[2]
HOLDER = ("import sys, time\n"
          "from tricklab.train.runlock import hold_run_folder\n"
          "with hold_run_folder(sys.argv[1]):\n"
          "    print('held', flush=True)\n"
          "    time.sleep(600)\n")


def _holder(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline() == "held\n"
    return proc


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    proc = _holder(tmp_path)
    try:
        assert (tmp_path / LOCK_NAME).read_text() == f"{proc.pid}\n"
        with pytest.raises(RunFolderBusy, match=rf"^{tmp_path} is in use by another tricklab process \(PID {proc.pid},"):
            with hold_run_folder(tmp_path):
                pass
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_of_a_killed_process_is_stale(tmp_path):
    proc = _holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / LOCK_NAME).read_text() == f"{proc.pid}\n"  # left behind by the crash
    with hold_run_folder(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_released_on_exit_of_the_block(tmp_path):
    with hold_run_folder(tmp_path):
        with pytest.raises(RunFolderBusy):  # flock locks belong to the open file: one process can conflict with itself
            with hold_run_folder(tmp_path):
                pass
    assert (tmp_path / LOCK_NAME).read_text() == ""
    with hold_run_folder(tmp_path):
        pass
