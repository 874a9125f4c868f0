import json

from tricklab.cli import main


def test_sweep_command_random_search(tiny_config, tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["sweep", str(tiny_config), "--grid", "model.hidden=[8],[16]", "--random", "3",
                 "--range", "optimizer.lr=1e-3:1e-1:log", "--set", "train.epochs=1", "--workers", "1",
                 "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == 3 and summary["keys"] == ["model.hidden", "optimizer.lr"]
    assert (out / "report.html").exists()
    assert "best:" in capsys.readouterr().err


def test_bad_key_is_a_clear_error(tiny_config, capsys):
    assert main(["sweep", str(tiny_config), "--grid", "optimizer.lrr=0.1"]) == 2
    assert "did you mean 'optimizer.lr'" in capsys.readouterr().err


def test_reproduce_list(capsys):
    assert main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out
    for name in ("batchnorm-mnist", "dropout-mnist", "init-depth", "symmetry", "shuffle", "depth-width", "mnist1d"):
        assert name in listed


def test_reproduce_quick_through_the_command(tmp_path, capsys):
    out = tmp_path / "sym"
    assert main(["reproduce", "symmetry", "--quick", "--out", str(out)]) == 0
    assert "| quantity | paper | ours |" in capsys.readouterr().out
    assert (out / "report.html").exists()


def test_report_command(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run, sweep" in capsys.readouterr().err


def test_a_seed_grid_is_refused_with_the_option_to_use(tiny_config, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", str(tiny_config), "--grid", "run.seed=1,2,3,4", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tricklab: error: --grid run.seed") and "use --seeds K" in err
    assert err.count("\n") == 1 and not out.exists()


def test_every_argument_of_the_lab_commands_has_a_help_line():
    import argparse

    from tricklab.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("sweep", "ablate", "reproduce", "report"):
        parser = sub.choices[command]
        missing = [a.option_strings[-1] if a.option_strings else a.dest for a in parser._actions
                   if not a.help or a.help == argparse.SUPPRESS]
        assert not missing, f"tricklab {command}: no help for {missing}"
        assert parser.description or any(c.dest == command and c.help for c in sub._choices_actions)


def test_metric_and_layer_class_tricks_through_the_commands(regression_config, tmp_path, capsys):
    out = tmp_path / "a"
    for argv, error in ((["sweep", "--metric", "val_accuracy"], "--metric val_accuracy is not reported"),
                        (["ablate", "--tricks", "Dropout", "--metric", "val_accuracy"], "--metric val_accuracy is not")):
        assert main([argv[0], str(regression_config), *argv[1:], "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"tricklab: error: {error}") and err.count("\n") == 1, err
    assert not out.exists()
    assert main(["ablate", str(regression_config), "--tricks", "Dropout", "--metric", "val_r2", "--seeds", "1",
                 "--workers", "1", "--no-report", "--out", str(out)]) == 0
    table = (out / "ablation.md").read_text()
    assert table.startswith("| variant | validation R² | test R² | epochs to R² >= ")
    assert "| full (= + Dropout) |" in table


def test_reproduce_workers_are_refused_where_the_trainings_run_in_one_process(capsys):
    assert main(["reproduce", "symmetry", "--quick", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert err == "tricklab: error: --workers: symmetry runs its trainings in one process (--workers is for dropout-mnist)\n"
    assert main(["reproduce", "dropout-mnist", "--quick", "--workers", "0"]) == 2
    assert capsys.readouterr().err == "tricklab: error: --workers must be at least 1, got 0\n"
