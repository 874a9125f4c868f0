"""The Ray backend on a local Ray (num_cpus=2) with a tiny grid, through the command line."""

import json

import pytest

from tricklab.cli import main
from tricklab.lab.store import Store

pytestmark = pytest.mark.slow


def test_ray_backend_runs_a_tiny_grid_into_the_same_store(tiny_config, tmp_path):
    import ray  # in the test extra: a missing ray is a failure, never a skip
    out = tmp_path / "sweep"
    argv = ["sweep", str(tiny_config), "--grid", "optimizer.lr=0.003,0.01", "--set", "train.epochs=2",
            "--backend", "ray", "--workers", "2", "--out", str(out)]
    assert main(argv) == 0
    assert not ray.is_initialized()  # the local Ray it started is shut down again
    with Store(out / "sweep.db") as store:
        rows = store.rows()
        assert store.meta()["kind"] == "sweep"
    assert len(rows) == 2 and all(r["status"] == "done" and len(r["history"]) == 2 for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == 0 and 0 <= summary["best"]["test_accuracy"] <= 1
    assert (out / "report.html").exists()
    # started again, the same command finds both trials done and starts no Ray at all
    assert main(argv) == 0
    with Store(out / "sweep.db") as store:
        assert [r["attempts"] for r in store.rows()] == [1, 1]
