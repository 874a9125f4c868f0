"""The Ray backend on a local Ray (num_cpus=2) with a tiny grid, through the command line."""

import json

import pytest

from tricklab.cli import main

pytestmark = pytest.mark.slow


def test_ray_backend_runs_a_tiny_grid_into_the_same_store(tiny_config, tmp_path):
    import ray  # in the test extra: a missing ray is a failure, never a skip
    out = tmp_path / "sweep"
    argv = ["sweep", str(tiny_config), "--grid", "optimizer.lr=0.003,0.01", "--set", "train.epochs=2",
            "--backend", "ray", "--workers", "2", "--out", str(out)]
    assert main(argv) == 0
    assert not ray.is_initialized()  # the local Ray it started is shut down again
    import optuna

    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{out / 'sweep.db'}")
    assert study.user_attrs["kind"] == "sweep"
    trials = study.trials
    assert len(trials) == 2 and all(t.state.name == "COMPLETE" for t in trials)
    assert all(len(t.user_attrs["runs"][0]["history"]) == 2 for t in trials)
    assert all(sorted(t.intermediate_values) == [1, 2] for t in trials)  # reported from the Ray workers
    assert len({t.user_attrs["runs"][0]["metrics"]["pid"] for t in trials}) == 2  # two Ray workers
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == 0 and 0 <= summary["best"]["test_accuracy"] <= 1
    assert (out / "report.html").exists()
    # started again, the same command finds both trials done and starts no Ray at all
    assert main(argv) == 0
    again = optuna.load_study(study_name="sweep", storage=f"sqlite:///{out / 'sweep.db'}").trials
    assert [(t.number, t.state.name, t.datetime_complete) for t in again] == \
        [(t.number, t.state.name, t.datetime_complete) for t in trials]


def test_an_unreachable_cluster_is_a_clear_error_within_the_connect_timeout(tiny_config, tmp_path, capsys):
    import time

    import ray

    start = time.monotonic()
    code = main(["sweep", str(tiny_config), "--backend", "ray", "--address", "127.0.0.1:1", "--connect-timeout", "5",
                 "--out", str(tmp_path / "sweep"), "--no-report"])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2
    assert "tricklab: error: --address 127.0.0.1:1: nothing answers at 127.0.0.1:1 within 5 s" in err
    assert "--connect-timeout" in err.splitlines()[-1]
    assert elapsed < 120  # a guard against the hang (Ray alone retries for minutes), not a timing test
    assert not ray.is_initialized()


@pytest.mark.parametrize("address", ["nonsense", "ray://host", "127.0.0.1:port"])
def test_an_address_without_a_port_is_refused(tiny_config, tmp_path, capsys, address):
    assert main(["sweep", str(tiny_config), "--backend", "ray", "--address", address, "--out",
                 str(tmp_path / "sweep"), "--no-report"]) == 2
    assert f"tricklab: error: --address {address!r} must be auto, HOST:PORT or ray://HOST:PORT" in capsys.readouterr().err


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf"])
def test_the_connect_timeout_must_be_positive_and_finite(tiny_config, tmp_path, capsys, timeout):
    assert main(["sweep", str(tiny_config), "--backend", "ray", "--address", "127.0.0.1:1", "--connect-timeout",
                 timeout, "--out", str(tmp_path / "sweep")]) == 2
    assert capsys.readouterr().err.startswith("tricklab: error: --connect-timeout must be a positive number of seconds")
    assert not (tmp_path / "sweep").exists()


def test_a_port_that_answers_but_is_no_ray_cluster_fails_after_one_attempt(tiny_config, tmp_path, capsys):
    import os
    import socket
    import time

    import ray

    with socket.create_server(("127.0.0.1", 0)) as server:  # accepts TCP, never speaks Ray's protocol
        address = f"127.0.0.1:{server.getsockname()[1]}"
        start = time.monotonic()
        code = main(["sweep", str(tiny_config), "--backend", "ray", "--address", address, "--out",
                     str(tmp_path / "sweep"), "--no-report"])
        elapsed = time.monotonic() - start
    assert code == 2
    assert f"tricklab: error: --address {address}: no Ray cluster to join" in capsys.readouterr().err
    assert elapsed < 150  # a hang guard: Ray's default 20 attempts take over ten minutes
    assert not ray.is_initialized() and "RAY_gcs_server_port_wait_time_s" not in os.environ
