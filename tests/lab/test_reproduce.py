"""Each reproduction's --quick size writes its paper-vs-ours table and its figures; the report embeds them."""

import base64
import json

import pytest

from tricklab.lab import reproduce
from tricklab.lab.report import write_report

MNIST = {"batchnorm-mnist", "dropout-mnist", "init-depth", "shuffle", "batchnorm-cnn", "elastic-mnist"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(reproduce.MODULES))
def test_quick_reproduction_and_its_report(name, tmp_path, request):
    root = request.getfixturevalue("mnist_root") if name in MNIST else None
    module = reproduce.get(name)
    out = tmp_path / name
    doc = module.run(out, size="quick", data_root=root, log=lambda msg: None)
    saved = json.loads((out / "reproduction.json").read_text())
    assert saved["name"] == name and saved["size"] == "quick" and saved["table"] and saved["verdict"]
    assert all(set(row) == {"quantity", "paper", "ours"} and row["paper"] and row["ours"] for row in saved["table"])
    assert 0 < saved["wall_seconds"] == doc["wall_seconds"]  # recorded, not timed: a test never asserts speed
    table = (out / "table.md").read_text()
    assert "| quantity | paper | ours |" in table
    assert saved["figures"]
    page = write_report(out).read_text()
    for fig in saved["figures"]:
        png = (out / fig).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert base64.b64encode(png).decode() in page  # embedded, not linked
        assert (out / "report" / fig).exists()
    for row in saved["table"]:
        assert row["ours"] in page


def test_unknown_reproduction_lists_the_known_ones():
    with pytest.raises(KeyError, match="batchnorm-mnist"):
        reproduce.get("nope")


TINY = {"data": {"name": "mnist1d", "train_subset": 600}, "model": {"hidden": [16], "dropout": 0.1},
        "optimizer": {"name": "sgd", "lr": 0.05}, "train": {"epochs": 2, "batch_size": 50, "max_steps": 17}}


def test_splits_are_the_pipelines_own():
    import numpy as np

    from tricklab.experiment import build
    from tricklab.lab.reproduce.common import configure, splits

    cfg = configure(TINY, seed=3)
    exp, ours = build(cfg, log=lambda msg: None), splits(cfg)
    for name, theirs in (("val", exp.val), ("test", exp.test)):
        assert np.array_equal(ours[name][0], theirs[0]) and np.array_equal(ours[name][1], theirs[1])
    assert np.array_equal(exp.normalizer.transform(exp.data.train[0]).astype(np.float32), ours["train"][0])


def test_evaluate_every_records_its_steps_and_keeps_training_mode():
    from tricklab.lab.reproduce.callbacks import EvaluateEvery, StepLoss
    from tricklab.lab.reproduce.common import configure, splits, train
    from tricklab.train import Callback

    modes = []

    class Mode(Callback):
        def on_batch_begin(self, batch, logs):
            modes.append(self.trainer.model.training)

    data = splits(configure(TINY))
    evals, losses = EvaluateEvery(5, {"test": data["test"]}), StepLoss()
    result = train(TINY, callbacks=[evals, losses, Mode()])
    assert evals.records["step"] == [0, 5, 10, 15, 17] and len(evals.records["test_accuracy"]) == 5
    assert evals.records["test_accuracy"][-1] == pytest.approx(result.metrics["test_accuracy"])
    assert len(losses.losses) == 17 and all(modes) and len(modes) == 17


@pytest.mark.slow
def test_batchnorm_mnist_rows_are_mean_std_over_its_seeds(tmp_path, mnist_root, monkeypatch):
    from tricklab.lab.reproduce import batchnorm_mnist as bnm

    assert bnm.SIZES["quick"]["seeds"] == 1 and bnm.SIZES["full"]["seeds"] == 3
    docs = {}
    for n in (1, 2):
        monkeypatch.setitem(bnm.SIZES, "tiny", {"steps": 100, "eval_every": 10, "train_subset": 1200,
                                                "test_subset": 500, "lr": 0.1, "seeds": n})
        docs[n] = bnm.run(tmp_path / str(n), size="tiny", seed=3, data_root=mnist_root, log=lambda msg: None)
    for n, doc in docs.items():
        assert doc["extra"]["seeds"] == list(range(3, 3 + n)) and len(doc["extra"]["reached"]) == n
        assert all(len(rs) == n for rs in doc["extra"]["runs"].values())
        numbers = [row["ours"] for row in doc["table"] if row["ours"] != "not reached"]
        assert len(numbers) >= 6 and all(("±" in t) == (n > 1) and ("(n=1)" in t) == (n == 1) for t in numbers)
    one, two = docs[1]["extra"]["runs"], docs[2]["extra"]["runs"]
    assert one["baseline"][0]["test_accuracy"] == two["baseline"][0]["test_accuracy"]  # the first seed is `seed`
    finals = [r["test_accuracy"][-1] for r in two["batch norm"]]
    assert finals[0] != finals[1]  # seed + 1 is another run, not a copy
    assert float(docs[2]["table"][1]["ours"].split()[0]) == pytest.approx(sum(finals) / 2, abs=5e-5)


def test_batchnorm_mnist_verdict_is_on_the_means_and_names_disagreeing_seeds():
    from tricklab.lab.reproduce.batchnorm_mnist import verdict

    def fake(accs, shifts, spreads):
        return [{"test_accuracy": [0.1, a], "median_shift": [m, 0, 0], "spread_change": [sp, 0, 0]}
                for a, m, sp in zip(accs, shifts, spreads)]

    runs = {"baseline": fake([0.96, 0.96, 0.97], [0.5] * 3, [0.3] * 3),
            "batch norm": fake([0.98, 0.98, 0.95], [0.1] * 3, [0.2, 0.6, 0.2])}
    text = verdict(runs, [4, 5, 6])
    assert text.startswith("Batch norm ends higher (mean 0.9700 against 0.9633 over 3 seeds; seed 6 disagrees).")
    assert "median moves less than the baseline's (0.10 against 0.50)." in text
    assert "spread moves MORE than the baseline's (0.33 against 0.30; seeds 4, 6 disagree)." in text
