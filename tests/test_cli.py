"""The ``tricklab`` command: one-line errors for expected failures, help, version, did-you-mean."""

from __future__ import annotations

import argparse
import errno
import shutil
import socket
import tomllib
from pathlib import Path

import numpy as np
import pytest

import tricklab
from tricklab import config
from tricklab.cli import build_parser, main
from tricklab.data import mnist as mnist_mod
from tricklab.experiment import train_run

ROOT = Path(__file__).resolve().parents[1]
GZ_FILES = sorted(mnist_mod.SHA256["mnist"])
TINY = {"run": {"seed": 1}, "data": {"name": "mnist1d", "train_subset": 200}, "model": {"hidden": [8]},
        "train": {"epochs": 1, "batch_size": 50}}


def error_line(capsys, argv: list[str]) -> str:
    """Run ``main(argv)``; assert a non-zero exit and exactly one stderr line ``tricklab: error: ...``."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert rc not in (0, None), err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tricklab: error: "), err
    return lines[0]


# ---------------------------------------------------------------------------- data files
@pytest.fixture
def mnist_root(shared_data, tmp_path) -> Path:
    """A data root in tmp_path holding copies of the four MNIST gzip files."""
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for name in GZ_FILES:
        shutil.copyfile(shared_data / "mnist" / name, folder / name)
    return tmp_path / "data"


def mnist_config(tmp_path: Path, root: Path) -> str:
    path = tmp_path / "mnist.toml"
    path.write_text(f'[data]\nname = "mnist"\nroot = "{root}"\n[model]\nhidden = [8]\n[train]\nepochs = 1\n')
    return str(path)


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 3]


def _random(data: bytes) -> bytes:
    return np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()


def _flip(data: bytes) -> bytes:
    data = bytearray(data)
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize("corrupt", [_truncate, _random, _flip], ids=["truncated", "random", "flipped"])
def test_corrupt_data_file_is_one_line(mnist_root, tmp_path, capsys, corrupt):
    path = mnist_root / "mnist" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(corrupt(path.read_bytes()))
    line = error_line(capsys, ["train", mnist_config(tmp_path, mnist_root), "--out", str(tmp_path / "run")])
    assert str(path) in line and "SHA-256 mismatch" in line


def test_label_out_of_range_names_the_labels_file(mnist_root, tmp_path, capsys):
    gz = mnist_root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(mnist_mod.gzip.decompress(gz.read_bytes()))
    raw[8 + 17] = 42  # the 18th label, after the 8-byte header
    gz.unlink()
    path = mnist_root / "mnist" / "t10k-labels-idx1-ubyte"
    path.write_bytes(bytes(raw))
    line = error_line(capsys, ["train", mnist_config(tmp_path, mnist_root), "--out", str(tmp_path / "run")])
    assert str(path) in line and "label 42" in line


def test_missing_data_says_how_to_point_at_it(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TRICKLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist_mod, "checkout_data_root", lambda: None, raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    line = error_line(capsys, ["train", mnist_config(tmp_path, empty), "--out", str(tmp_path / "run")])
    assert str(empty) in line and "data.root" in line and "TRICKLAB_DATA" in line
    assert "tricklab data fetch mnist" in line


def test_fetch_without_network_is_one_line(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):  # what the resolver says on a machine without network
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    line = error_line(capsys, ["data", "fetch", "mnist", "--root", str(tmp_path / "dl")])
    assert "ossci-datasets.s3.amazonaws.com" in line and "storage.googleapis.com" in line
    assert "no network" in line


# ---------------------------------------------------------------------------- writing runs
def tiny_config(tmp_path: Path) -> str:
    path = tmp_path / "tiny.toml"
    path.write_text(config.dumps(config.resolve(TINY)))
    return str(path)


def test_out_on_a_full_disk_names_the_folder(tmp_path, monkeypatch, capsys):
    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")  # as f.write raises it: no file name

    monkeypatch.setattr("tricklab.experiment.atomic_write_bytes", full)
    out = tmp_path / "run"
    line = error_line(capsys, ["train", tiny_config(tmp_path), "--out", str(out)])
    assert "No space left on device" in line and str(out) in line


def test_out_on_a_read_only_disk_names_the_file(tmp_path, monkeypatch, capsys):
    def read_only(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))  # as open() raises it

    monkeypatch.setattr("tricklab.experiment.atomic_write_bytes", read_only)
    out = tmp_path / "run"
    line = error_line(capsys, ["train", tiny_config(tmp_path), "--out", str(out)])
    assert "Read-only file system" in line and str(out / "config.toml") in line


def test_out_below_a_file_names_the_path(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    line = error_line(capsys, ["train", tiny_config(tmp_path), "--out", str(tmp_path / "file" / "run")])
    assert str(tmp_path / "file" / "run") in line


# ---------------------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    train_run(config.resolve(TINY), run, progress=False, log=lambda msg: None, plots=False)
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def _npy_bytes(tmp_path: Path) -> bytes:
    np.save(tmp_path / "a.npy", np.zeros(3))
    return (tmp_path / "a.npy").read_bytes()


def _other_npz(tmp_path: Path) -> bytes:
    np.savez(tmp_path / "b.npz", weights=np.zeros(3))
    return (tmp_path / "b.npz").read_bytes()


@pytest.mark.parametrize("kind", ["truncated", "random", "empty", "npy", "other npz"])
def test_evaluate_a_corrupt_model_file(run_copy, tmp_path, capsys, kind):
    path = run_copy / "model.npz"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "random": _random(data), "empty": b"",
                      "npy": _npy_bytes(tmp_path), "other npz": _other_npz(tmp_path)}[kind])
    line = error_line(capsys, ["evaluate", str(run_copy)])
    assert str(path) in line and "not a tricklab model archive" in line
    assert "pickled" not in line


@pytest.mark.parametrize("change", [{"model": {"hidden": [16]}}, {"model": {"hidden": [8, 8]}},
                                    {"data": {"normalize": "none"}}, {"data": {"normalize": "global"}},
                                    {"data": {"name": "mnist"}}])
def test_evaluate_a_model_of_another_configuration(run_copy, capsys, change):
    cfg = config.load(run_copy / "config.toml")
    for section, table in change.items():
        for key, value in table.items():
            cfg = config.set_key(cfg, f"{section}.{key}", value)
    (run_copy / "config.toml").write_text(config.dumps(cfg))
    line = error_line(capsys, ["evaluate", str(run_copy)])
    assert str(run_copy / "model.npz") in line and "written with another configuration" in line


def test_evaluate_refuses_nan_weights(run_copy, capsys):
    path = run_copy / "model.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["model/0.weight"][0, 0] = np.nan
    np.savez(path, **arrays)
    line = error_line(capsys, ["evaluate", str(run_copy)])
    assert str(path) in line and "model/0.weight" in line and "NaN" in line


def test_evaluate_a_folder_without_a_run(tmp_path, capsys):
    line = error_line(capsys, ["evaluate", str(tmp_path)])
    assert str(tmp_path / "config.toml") in line


# ---------------------------------------------------------------------------- --debug
def test_debug_flag_and_variable_show_the_traceback(run_copy, monkeypatch, capsys):
    (run_copy / "model.npz").write_bytes(b"junk")
    with pytest.raises(Exception, match="not a tricklab model archive"):
        main(["--debug", "evaluate", str(run_copy)])
    monkeypatch.setenv("TRICKLAB_DEBUG", "1")
    with pytest.raises(Exception, match="not a tricklab model archive"):
        main(["evaluate", str(run_copy)])
    monkeypatch.setenv("TRICKLAB_DEBUG", "0")
    error_line(capsys, ["evaluate", str(run_copy)])


# ---------------------------------------------------------------------------- help a newcomer sees
def walk(parser: argparse.ArgumentParser, prefix: str = "tricklab"):
    """(command path, action) for every action of the parser and of all its subcommands."""
    for action in parser._actions:
        yield prefix, action
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", argparse.Action([], dest=name, help=helps.get(name))
                yield from walk(sub, f"{prefix} {name}")


def test_every_argument_has_a_help_line():
    missing = [f"{cmd}: {action.option_strings or action.dest}" for cmd, action in walk(build_parser())
               if not action.help or action.help == argparse.SUPPRESS]
    assert not missing, "arguments without help:\n" + "\n".join(missing)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out.strip() == f"tricklab {version}" == f"tricklab {tricklab.__version__}"


def test_python_dash_m_runs_the_command():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "tricklab", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == f"tricklab {tricklab.__version__}"
    bad = subprocess.run([sys.executable, "-m", "tricklab", "trian"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "train" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("argv, suggestion", [(["trian"], "train"), (["evalute", "x"], "evaluate"),
                                              (["data", "fecth"], "fetch"), (["demo", "--data", "mnist-1d"], "mnist1d")])
def test_mistyped_choice_gets_did_you_mean(capsys, argv, suggestion):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("tricklab") and f"did you mean '{suggestion}'?" in last


def test_data_fetch_help_says_where_files_go(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("TRICKLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(SystemExit):
        main(["data", "fetch", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert str(tmp_path / "cache" / "tricklab") in text and "TRICKLAB_DATA" in text and "mnist/" in text
