"""dropout-mnist's schedule and its verdict over seeds, on made-up errors (no training)."""

import numpy as np
import pytest

from tricklab import optim
from tricklab.experiment import build_model, build_optimizer, build_scheduler
from tricklab.lab.reproduce import dropout_mnist as D
from tricklab.lab.reproduce.common import configure


@pytest.mark.parametrize("epochs", [3, 20, 80])
def test_config_ramps_damped_momentum_over_the_first_quarter(epochs):
    """The paper's schedule through the configuration: momentum 0.5 rising to 0.95 over the first
    quarter of the epochs, damped (dampening = momentum), the lr decaying to a tenth at the last epoch."""
    cfg = configure(D.config([8], "dropout", epochs, D.SIZES["quick"]))
    model = build_model(cfg, (784,), 10, np.random.SeedSequence(0))
    opt = build_optimizer(cfg, model)
    decay, ramp = build_scheduler(cfg, opt)
    assert isinstance(ramp, optim.lr_scheduler.MomentumRamp) and ramp.total_iters == max(1, epochs // 4)
    for epoch in range(epochs):
        group = opt.param_groups[0]
        p = D.MOMENTUM_START + (D.MOMENTUM_END - D.MOMENTUM_START) * min(1.0, epoch / max(1, epochs // 4))
        assert group["momentum"] == group["dampening"] == p
        if epoch < epochs - 1:
            decay.step()
            ramp.step()
    assert group["momentum"] == D.MOMENTUM_END and group["lr"] == pytest.approx(D.LR["dropout"] / 10, rel=1e-12)


def test_verdict_needs_the_order_and_gaps_above_the_spread():
    clear = {"standard": [0.0150, 0.0152, 0.0148], "dropout": [0.0130, 0.0131, 0.0129],
             "dropout + max-norm": [0.0110, 0.0112, 0.0111]}
    assert D.verdict(clear).startswith("Matches: ")
    noisy = dict(clear, dropout=[0.0155, 0.0105, 0.0130])  # mean in order, spread 0.25 points > the gaps
    assert D.verdict(noisy).startswith("Matches in direction")
    wrong = dict(clear, standard=[0.0120, 0.0121, 0.0119])
    text = D.verdict(wrong)
    assert text.startswith("Does not match") and "standard 1.20% -> dropout 1.30%: -0.10 points" in text
    assert "-0.10 points against a spread of 0.01, reversed" in text and "0.01, above the spread" in text


def test_equal_means_are_a_tie_not_a_step():
    """Errors are counts over the test set: equal sums of three seeds' errors are a tie even where
    the floats' means differ in the last bit."""
    errors = {"standard": [0.0147, 0.0164, 0.0152], "dropout": [0.0142, 0.0145, 0.0129],
              "dropout + max-norm": [0.0135, 0.0148, 0.0133]}
    text = D.verdict(errors)
    assert text.startswith("Does not match") and "+0.16 points against a spread of 0.09, above the spread" in text
    assert "+0.00 points against a spread of 0.09, tied" in text


def test_one_seed_never_clears_the_spread():
    one = {"standard": [0.015], "dropout": [0.013], "dropout + max-norm": [0.011]}
    assert D.verdict(one).startswith("Matches in direction")


def test_the_shipped_config_is_the_reproductions_dropout_max_norm_net():
    from pathlib import Path

    from tricklab import config
    shipped = config.load(Path(__file__).parents[2] / "configs" / "lab" / "dropout_mnist.toml")
    s = D.SIZES["full"]
    ours = configure(D.config(s["hidden"], "dropout + max-norm", s["epochs"]["dropout + max-norm"], s))
    assert shipped == {**ours, "run": {**ours["run"], "name": "dropout-mnist"}}


def _trained(logs: list[str]) -> set[str]:
    """The trainings a reproduction's log shows epochs of ('seed 0 dropout', ...)."""
    return {line.split(":")[0] for line in logs if ": epoch" in line}


def test_the_fingerprint_holds_what_changes_a_training_and_not_where_the_data_lies(monkeypatch):
    before = D.fingerprint("quick", "dropout", 0)
    assert before["config"]["data"]["root"] == "" and before == D.fingerprint("quick", "dropout", 0)
    assert before != D.fingerprint("quick", "dropout", 1) != D.fingerprint("quick", "standard", 1)
    monkeypatch.setattr(D, "TRAIN_SCORED", D.TRAIN_SCORED // 2)  # the training error is scored on fewer
    assert D.fingerprint("quick", "dropout", 0) != before
    monkeypatch.undo()
    capped = D.fingerprint("quick", "dropout + max-norm", 0)
    monkeypatch.setattr(D, "MAX_NORM", D.MAX_NORM + 1)
    assert D.fingerprint("quick", "dropout + max-norm", 0) != capped
    assert D.fingerprint("quick", "dropout", 0) == before  # the dropout net has no max-norm


@pytest.mark.slow
def test_a_rerun_reads_finished_trainings_and_trains_only_the_others(tmp_path, mnist_root, monkeypatch):
    first = D.run(tmp_path, size="quick", data_root=mnist_root, log=lambda msg: None)
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == [
        "dropout-max-norm-seed0.json", "dropout-seed0.json", "standard-seed0.json"]
    (runs / "dropout-max-norm-seed0.json").unlink()  # as if killed while training it
    (runs / "standard-seed0.json").write_text("[1]")  # not a saved training
    logs = []
    second = D.run(tmp_path, size="quick", data_root=mnist_root, log=logs.append)
    assert logs[0].startswith("1 of 3 trainings read from")
    assert _trained(logs) == {"seed 0 dropout + max-norm", "seed 0 standard"}
    assert second["extra"]["runs"] == first["extra"]["runs"] and second["table"] == first["table"]
    assert second["settings"]["trainings_read_from_earlier_runs"] == 1

    monkeypatch.setitem(D.LR, "dropout", D.LR["dropout"] / 2)  # a changed configuration is trained again
    logs.clear()
    third = D.run(tmp_path, size="quick", data_root=mnist_root, log=logs.append)
    assert _trained(logs) == {"seed 0 dropout"}
    assert third["extra"]["runs"]["standard"] == first["extra"]["runs"]["standard"]
    assert third["extra"]["runs"]["dropout"] != first["extra"]["runs"]["dropout"]


@pytest.mark.slow
def test_trainings_in_worker_processes_equal_those_in_one(tmp_path, mnist_root, monkeypatch):
    from threadpoolctl import threadpool_limits

    monkeypatch.setitem(D.SIZES["quick"], "seeds", 2)  # each seed's histories in its place
    with threadpool_limits(1):  # the workers' one BLAS thread each
        alone = D.run(tmp_path / "one", size="quick", data_root=mnist_root, log=lambda msg: None)
    logs = []
    pooled = D.run(tmp_path / "two", size="quick", data_root=mnist_root, log=logs.append, workers=2)
    assert pooled["extra"]["runs"] == alone["extra"]["runs"]
    assert alone["extra"]["runs"]["dropout"][0] != alone["extra"]["runs"]["dropout"][1]
    done = [line for line in logs if ": done (" in line]
    assert len(done) == 6 and done[-1].endswith(": done (6 of 6)")
    assert pooled["settings"]["workers_this_invocation"] == 2

    (tmp_path / "two" / "runs" / "dropout-seed1.json").unlink()
    logs.clear()
    again = D.run(tmp_path / "two", size="quick", data_root=mnist_root, log=logs.append, workers=2)
    assert [line for line in logs if line.endswith(": started")] == ["dropout, seed 1: started"]
    assert again["extra"]["runs"] == alone["extra"]["runs"]


@pytest.mark.slow
def test_failed_trainings_in_workers_are_one_line_and_their_tracebacks_are_kept(tmp_path, capsys):
    from tricklab.cli import main

    bad = tmp_path / "bad-mnist"
    (bad / "mnist").mkdir(parents=True)
    (bad / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"not MNIST")  # fails its checksum in every worker
    out = tmp_path / "out"
    args = ["reproduce", "dropout-mnist", "--quick", "--workers", "2", "--data-root", str(bad), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("tricklab: error: dropout-mnist: 3 training(s) failed (standard, seed 0; dropout, seed 0; "
                           "dropout + max-norm, seed 0), the first with ") and "ChecksumError" in last
    assert sorted(p.name for p in (out / "runs").glob("*.failed.txt")) == [
        "dropout-max-norm-seed0.failed.txt", "dropout-seed0.failed.txt", "standard-seed0.failed.txt"]
    assert "Traceback" in (out / "runs" / "standard-seed0.failed.txt").read_text()
