"""benchmarks/headline.py: the README's mean ± standard deviation over seeds (tricklab.stats), from run folders."""

import json
import tomllib

import pytest

from benchmarks import headline


def test_every_thread_variable_is_set_for_the_run():
    env = headline.thread_env(2)
    assert [env[name] for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")] == ["2"] * 3


def _fake_run(out, case, threads, seed, test, val, wall):
    folder = headline.run_folder(out, case, threads, seed)
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"test_accuracy": test, "val_accuracy": val, "epochs_run": 10 + seed,
                                                     "seconds_training": wall - 2}))
    (folder / "wall.json").write_text(json.dumps({"wall_seconds": wall, "blas_threads": threads, "load_average": 1.0}))


def test_case_row_aggregates_the_seeds_of_one_thread_count(tmp_path):
    for seed, (test, val, wall) in enumerate([(0.71, 0.70, 10.0), (0.73, 0.74, 12.0), (0.75, 0.72, 14.0)]):
        _fake_run(tmp_path, "mnist1d", 1, seed, test, val, wall)
    _fake_run(tmp_path, "mnist1d", 2, 0, 0.99, 0.99, 99.0)  # another thread count: not in the 1-thread row
    row = headline.case_row(tmp_path, "mnist1d", 1, seeds=3)
    assert row == "| `tricklab train configs/mnist1d_mlp.toml` | 1 | 3 | 73.00 ± 2.00 | 72.00 ± 2.00 | 11.0 | 10 | 12 |"
    one = headline.case_row(tmp_path, "mnist1d", 2, seeds=1)  # one seed: no spread, the value with n=1
    assert one == "| `tricklab train configs/mnist1d_mlp.toml` | 2 | 1 | 99.00 (n=1) | 99.00 (n=1) | 10.0 | 97 | 99 |"
    assert headline.case_row(tmp_path, "mnist", 1, seeds=3) is None


def test_demo_models_are_written_as_configs_that_resolve_to_the_demos_own(tmp_path):
    from tricklab import config as config_
    from tricklab.demo import demo_configs

    for case, name in (("demo-plain", "plain"), ("demo-tricks", "tricks")):
        path = headline.config_path(case, tmp_path)
        assert config_.resolve(tomllib.loads(path.read_text())) == demo_configs()[name]


@pytest.mark.parametrize("argv", [["--out", "x", "--cases", "mnist2"], ["--out", "x", "--seeds", "0"]])
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit):
        headline.parse_args(argv)
    assert "--" in capsys.readouterr().err
