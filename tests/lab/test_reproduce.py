"""Each reproduction's --quick size writes its paper-vs-ours table and its figures; the report embeds them."""

import base64
import json

import pytest

from tricklab.lab import reproduce
from tricklab.lab.report import write_report

MNIST = {"batchnorm-mnist", "dropout-mnist", "init-depth", "shuffle"}


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
    assert doc["wall_seconds"] < 120
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
