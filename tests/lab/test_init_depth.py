"""init-depth's measurements and verdict over seeds, on made-up runs (no training)."""

import pytest

from tricklab.lab.reproduce import init_depth as D


def fake(gradient_std, val=(0.1, 0.9)):
    return {"init": {"gradient_std": gradient_std, "activation_std": [1.0, 0.5]}, "epoch": list(range(1, len(val) + 1)),
            "val_accuracy": list(val), "test_accuracy": [0.1, 0.97]}


def results(sigmoid_standard, sigmoid_normalized, tanh_standard=(0.1, 1.0), tanh_normalized=(0.7, 1.0)):
    out = {f"{a}/{s}": [fake([1.0, 1.0])] for a in D.ACTIVATIONS for s in D.SCHEMES}
    out["tanh/standard"] = [fake(list(tanh_standard))] * 3
    out["tanh/normalized"] = [fake(list(tanh_normalized))] * 3
    out["sigmoid/standard"] = [fake([1.0, 1.0], v) for v in sigmoid_standard]
    out["sigmoid/normalized"] = [fake([1.0, 1.0], v) for v in sigmoid_normalized]
    return out


STALLED, LATE, EARLY = (0.1, 0.1, 0.1, 0.1), (0.1, 0.1, 0.1, 0.6), (0.1, 0.11, 0.7, 0.9)


def test_measurements():
    run = fake([0.2, 0.5, 2.0], (0.1, 0.5, 0.51))
    assert D.gradient_ratio(run) == pytest.approx(0.1) and D.activation_ratio(run) == pytest.approx(0.5)
    assert D.final_test_error(run) == pytest.approx(0.03)
    assert D.plateau_epochs(run) == 3 and D.plateau_epochs(fake([1.0], STALLED)) is None  # above 0.5, not at it
    assert D.show_epochs([3, None], 10) == "3, not in 10"


def test_verdict_matches_when_normalized_leaves_the_plateau_sooner_in_every_seed():
    text = D.verdict(results([STALLED, LATE, LATE], [EARLY, EARLY, LATE[:3] + (0.1,) + (0.9,)]))
    assert "closer to 1, as in the paper" in text
    assert "sooner than the standard one in 2 of 3 seeds" in text and "NOT in every seed" in text
    text = D.verdict(results([STALLED, LATE, LATE], [EARLY, EARLY, EARLY]))
    assert "in 3 of 3 seeds (epochs: standard never, 4, 4; normalized 3, 3, 3): as in the paper." in text


def test_verdict_when_both_stall():
    assert "in 0 of 1 seeds" in D.verdict(results([STALLED], [STALLED]))


def test_verdict_says_when_the_tanh_gradients_do_not_follow_the_paper():
    assert "NOT closer to 1" in D.verdict(results([STALLED], [EARLY], tanh_standard=(0.9, 1.0), tanh_normalized=(0.1, 1.0)))


def full_fake(gradient_top, val):
    grads = [gradient_top * 10.0 ** -k for k in range(D.DEPTH)][::-1]  # 10x smaller per layer going down
    stats = {"gradient_std": grads, "activation_std": [0.5] * D.DEPTH, "activation_mean": [0.1] * D.DEPTH}
    return {"init": stats, "trained": stats, "epoch": list(range(1, len(val) + 1)), "val_accuracy": list(val),
            "train_loss": [1.0] * len(val), "test_accuracy": list(val)}


def test_write_rebuilds_the_report_from_measured_results(tmp_path):
    results = {f"{a}/{s}": [full_fake(1.0, EARLY), full_fake(2.0, EARLY)] for a in D.ACTIVATIONS for s in D.SCHEMES}
    results["sigmoid/standard"] = [full_fake(1.0, LATE), full_fake(1.0, STALLED)]
    settings = {**D.SIZES["quick"], "epochs": 4, "seeds": [0, 1], "n_train": 10, "n_test": 10}
    doc = D.write(tmp_path, "quick", settings, results, wall_seconds=1.0)
    rows = {row["quantity"]: row["ours"] for row in doc["table"]}
    ratio = next(v for k, v in rows.items() if k.startswith("sigmoid, standard: gradient std"))
    assert ratio == "0.0001 ± 0"  # 1e-4 in both seeds: 3 significant digits, not 0.000
    assert rows[next(k for k in rows if k.startswith("sigmoid, standard: epochs until"))] == "4, not in 4"
    assert "in 2 of 2 seeds" in doc["verdict"] and (tmp_path / "init_depth.png").exists()
