from tricklab import config as config_
from tricklab.lab.store import Store, Trial


def _trial(i, seed=0):
    cfg = config_.resolve({"run": {"seed": seed}, "optimizer": {"lr": 0.1 * (i + 1)}})
    return Trial(id=f"t{i}-{seed}", idx=i, point=i, label=f"lr={0.1 * (i + 1)}", params={"optimizer.lr": 0.1 * (i + 1)},
                 seed=seed, config=cfg, run_dir=f"runs/{i:04d}-s{seed}")


def test_add_is_idempotent_and_records_each_transition(tmp_path):
    with Store(tmp_path / "sweep.db") as store:
        trials = [_trial(0), _trial(1)]
        assert store.add(trials) == 2
        assert store.add(trials) == 0
        assert store.status(["t0-0", "t1-0"]) == {"t0-0": "pending", "t1-0": "pending"}
        store.start("t0-0", "here")
        assert store.status(["t0-0"]) == {"t0-0": "running"}
        history = [{"epoch": 1, "val_accuracy": 0.5}, {"epoch": 2, "val_accuracy": 0.6}]
        assert store.finish("t0-0", history, {"val_accuracy": 0.6}, 1.5)
        assert not store.finish("t0-0", history, {"val_accuracy": 0.9}, 9.0)  # never counted twice
        store.start("t0-0")  # a done trial is not started again
        store.start("t1-0")
        store.fail("t1-0", "boom")
    with Store(tmp_path / "sweep.db") as store:  # everything survived closing
        rows = {r["id"]: r for r in store.rows()}
        assert rows["t0-0"]["status"] == "done" and rows["t0-0"]["attempts"] == 1
        assert rows["t0-0"]["metrics"] == {"val_accuracy": 0.6} and rows["t0-0"]["history"] == history
        assert rows["t0-0"]["seconds"] == 1.5
        assert rows["t1-0"]["status"] == "failed" and rows["t1-0"]["error"] == "boom"
        assert "lr = 0.2" in rows["t1-0"]["config"]


def test_meta_round_trips(tmp_path):
    with Store(tmp_path / "s.db") as store:
        store.set_meta(kind="sweep", seeds=[0, 1], space={"grid": {"optimizer.lr": [0.1]}})
        assert store.meta() == {"kind": "sweep", "seeds": [0, 1], "space": {"grid": {"optimizer.lr": [0.1]}}}
