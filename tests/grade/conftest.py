"""Helpers for grading submissions written as students write them."""

import json
import textwrap
from pathlib import Path

import pytest

from tricklab.cli import main
from tricklab.grade.core import grade

HEADER = "import numpy as np\nfrom tricklab.nn import Module, Parameter\n\n"


@pytest.fixture
def submit(tmp_path):
    """submit(source, assignment) -> Result of grading ``source`` written to a file."""
    counter = iter(range(1000))

    def _submit(source: str, assignment: str, **kwargs):
        path = Path(tmp_path) / f"submission_{next(counter)}.py"
        path.write_text(HEADER + textwrap.dedent(source))
        return grade(path, assignment, timeout=kwargs.pop("timeout", 20.0), **kwargs)

    return _submit


def edit(source: str, *pairs: str) -> str:
    """``source`` with each (old, new) of ``pairs`` replaced; each old occurs in it exactly once."""
    for old, new in zip(pairs[::2], pairs[1::2]):
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    return source


def failed(result) -> dict[str, str]:
    """{check name: output} of the failed checks."""
    return {c.name: c.output for c in result.checks if not c.passed}


def run_cli(argv, capsys):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def read_json(path):
    return json.loads(Path(path).read_text())
