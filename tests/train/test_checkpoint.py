import json

import numpy as np
import pytest

from tricklab.train.checkpoint import (CheckpointError, list_checkpoints, load_checkpoint, load_latest,
                                       save_checkpoint)


def _state(rng):
    return {"epoch": 3, "model": {"0.weight": rng.standard_normal((3, 2)).astype(np.float32)},
            "optimizer": {"state": {0: {"momentum_buffer": rng.standard_normal(4)}}, "param_groups": [{"lr": 0.1}]},
            "generators": {"loader": np.random.default_rng(5).bit_generator.state}, "history": [{"epoch": 1}]}


def test_round_trip_keeps_arrays_dtypes_and_int_keys(tmp_path, rng):
    state = _state(rng)
    path = save_checkpoint(tmp_path, 3, state)
    back = load_checkpoint(path)
    np.testing.assert_array_equal(back["model"]["0.weight"], state["model"]["0.weight"])
    assert back["model"]["0.weight"].dtype == np.float32
    assert list(back["optimizer"]["state"]) == [0]
    assert back["generators"] == state["generators"]


def test_keeps_only_the_newest(tmp_path, rng):
    for step in range(1, 5):
        save_checkpoint(tmp_path, step, _state(rng), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-000003.json", "ckpt-000004.json"]


def test_no_pickle_in_archive(tmp_path, rng):
    path = save_checkpoint(tmp_path, 1, _state(rng))
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


@pytest.mark.parametrize("damage", ["flip", "truncate_npz", "truncate_json", "remove_npz", "edit_json"])
def test_damaged_checkpoint_is_reported_not_loaded(tmp_path, rng, damage):
    save_checkpoint(tmp_path, 1, _state(rng))
    good = _state(rng)
    path = save_checkpoint(tmp_path, 2, good)
    npz = path.with_suffix(".npz")
    if damage == "flip":
        data = bytearray(npz.read_bytes())
        data[len(data) // 2] ^= 0xFF
        npz.write_bytes(bytes(data))
    elif damage == "truncate_npz":
        npz.write_bytes(npz.read_bytes()[:100])
    elif damage == "truncate_json":
        path.write_text(path.read_text()[:20])
    elif damage == "edit_json":  # still valid JSON, one number changed
        path.write_text(path.read_text().replace('"epoch": 3', '"epoch": 4'))
    else:
        npz.unlink()
    with pytest.raises(CheckpointError, match="ckpt-000002"):
        load_checkpoint(path)
    warnings = []
    state, used = load_latest(tmp_path, warn=warnings.append)
    assert used.name == "ckpt-000001.json" and len(warnings) == 1 and "ckpt-000002" in warnings[0]


def test_json_is_plain_json(tmp_path, rng):
    path = save_checkpoint(tmp_path, 1, _state(rng))
    doc = json.loads(path.read_text())
    assert doc["format"] == 1 and len(doc["sha256"]) == 64


@pytest.mark.parametrize("failing", ["os.fsync", "os.replace"])
def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch, failing):
    import errno

    from tricklab.train import checkpoint

    (tmp_path / "f.json").write_bytes(b"old")

    def fail(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, failing.split(".")[1], fail)
    with pytest.raises(OSError, match="No space left on device"):
        checkpoint.atomic_write_bytes(tmp_path / "f.json", b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]
    assert (tmp_path / "f.json").read_bytes() == b"old"
