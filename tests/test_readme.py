"""The README's examples and quick start stay true."""

import re
from pathlib import Path

import numpy as np

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_training_loop_in_readme_runs_and_learns():
    code = re.search(r"## The API in use.*?```python\n(.*?)```", README, re.S).group(1)
    assert len(code.strip().splitlines()) <= 20
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    model, X, y = namespace["model"], namespace["X"], namespace["y"]
    assert (model.eval()(X).argmax(1) == y).mean() > 0.9
    assert not np.allclose(model[1].running_var, 1.0)  # recomputed statistics are in place


def test_ci_runs_exactly_the_readme_test_command():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    command = re.search(r"^(pip install -e \"\.\[test\]\" && python -m pytest[^\n#]*?)\s*#", README, re.M).group(1)
    assert command.strip() in ci.splitlines()


def test_own_problem_toml_in_readme_builds_the_model_it_describes():
    import tomllib

    from tricklab import config
    from tricklab.experiment import build_model

    text = re.search(r"## Your own problem.*?```toml\n(.*?)```", README, re.S).group(1)
    cfg = config.resolve(tomllib.loads(text))
    model = build_model(cfg, (2,), 3, np.random.SeedSequence(0))
    assert [type(m).__name__ for m in model] == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert model[0].bias is None and model[3].p == 0.2 and model[4].out_features == 3


def test_own_problem_commands_in_readme_name_real_configs_and_layers(tmp_path):
    from tricklab import config

    root = Path(__file__).resolve().parents[1]
    for name in re.findall(r"tricklab (?:train|summary) (configs/own_\w+\.toml)", README):
        assert (root / name).exists(), name
    index, arg = re.search(r"--set model\.layers\.(\d+)\.(\w+)=", README).groups()
    cfg = config.load(root / "configs/own_npz.toml", [f"model.layers.{index}.{arg}=0.5"])
    assert cfg["model"]["layers"][int(index)] == {"type": "Dropout", "p": 0.5}


def test_the_grading_example_in_readme_is_what_the_grader_prints():
    from tricklab.grade import grade

    text = re.search(r"## Teaching.*?```text\n\$ tricklab grade (\S+) --assignment (\S+)\n(.*?)```", README, re.S)
    path, assignment, shown = text.groups()
    result = grade(Path(__file__).resolve().parents[1] / path, assignment)
    report = result.report().replace(str(Path(__file__).resolve().parents[1]) + "/", "")
    assert report.strip() == shown.strip()


def test_callback_example_in_readme_prints_every_epoch_and_probes(capsys):
    loop = re.search(r"## The API in use.*?```python\n(.*?)```", README, re.S).group(1)
    code = re.search(r"## Callbacks.*?```python\n(.*?)```", README, re.S).group(1)
    callback = code.split("class PrintEpoch")[1].split("\n\n")[0]
    assert len(("class PrintEpoch" + callback).strip().splitlines()) <= 10
    namespace = {}
    exec(compile(loop, "README.md", "exec"), namespace)
    capsys.readouterr()
    exec(compile(code, "README.md", "exec"), namespace)
    lines = capsys.readouterr().out.splitlines()
    history = namespace["trainer"].history
    assert lines == [f"epoch {row['epoch']}: val_loss {row['val_loss']:.3f}, lr {row['lr']:g}" for row in history]
    assert len(lines) == 3
    records, steps_done = namespace["probe"].records, namespace["trainer"].step_count
    assert sorted(set(records["step"])) == list(range(0, steps_done, 10))
    assert len(records["layer"]) == len(set(records["step"])) * len(namespace["model"])  # every layer probed
