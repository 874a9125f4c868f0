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
