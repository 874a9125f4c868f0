"""What every reproduction shares: training a configuration through the one pipeline, the splits its
callbacks score, and the paper-vs-ours record.

Each variant of a reproduction is a configuration document trained in memory by
:func:`tricklab.experiment.run` (:func:`train`); what it measures besides the final scores comes in
as callbacks (:mod:`.callbacks`). A reproduction folder holds::

    reproduction.json   name, reference, claim, size, settings, the paper-vs-ours table, figures
    table.md            the same table as Markdown
    *.png               the figures
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import config as config_
from ... import experiment
from ...fileio import atomic_write_bytes
from ...report.plots import pyplot, save_figure  # noqa: F401  (the reproductions' figures)


def configure(doc: dict, seed: int = 0) -> dict:
    """The resolved configuration of a partial document, ``run.seed`` set to ``seed``."""
    return config_.resolve({**doc, "run": {**doc.get("run", {}), "seed": seed}})


def train(doc: dict, seed: int = 0, callbacks=(), log=None) -> experiment.Result:
    """Train a configuration document in memory (nothing written) through :func:`experiment.run`;
    the test split is scored once, after training."""
    return experiment.run(configure(doc, seed), None, callbacks=callbacks, progress=False,
                          log=log or (lambda msg: None), plots=False)


def outcome(result: experiment.Result) -> dict:
    """What a reproduction keeps of a run: the history and the final validation and test scores."""
    m = result.metrics
    return {"history": result.history, "val_accuracy": m["val_accuracy"], "test_accuracy": m["test_accuracy"],
            "epochs_run": m["epochs_run"], "seconds": m["seconds_training"]}


def splits(cfg: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train", "val", "test"}: ``(X, y)`` as the model of ``cfg`` reads them, the very splits
    :func:`experiment.build` makes (same seed, subsets, validation split and input normalization),
    for callbacks that score them during training."""
    data = experiment.prepare_data(cfg, np.random.SeedSequence(cfg["run"]["seed"]).spawn(3)[0])
    normalizer = experiment.fit_normalizer(cfg, data.train[0])
    prepare = experiment.input_pipeline(normalizer, experiment.model_input_shape(cfg, data))
    return {name: (prepare(X), y) for name, (X, y) in (("train", data.train), ("val", data.val), ("test", data.test))}


def seeds_of(seed: int, size: dict) -> list[int]:
    """The seeds a reproduction of ``size`` runs: ``seed``, ``seed + 1``, ... (``size["seeds"]`` of them)."""
    return [seed + k for k in range(size["seeds"])]


def named_seeds(seeds: list[int]) -> str:
    """'seeds 0-2', or 'seed 0' for one."""
    return f"seeds {seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"seed {seeds[0]}"


def over_seeds(seeds: list[int]) -> str:
    """How a table row names what it summarizes: 'mean ± sd over seeds 0-2', or 'seed 0' for one."""
    return f"mean ± sd over {named_seeds(seeds)}" if len(seeds) > 1 else named_seeds(seeds)


def figure(fig, path: Path) -> str:
    """Save a figure (PNG, atomically) and return its file name for ``Reproduction.figures``."""
    return save_figure(fig, path).name


@dataclass
class Reproduction:
    """The record a reproduction writes: the paper's numbers beside ours, and the figures."""

    name: str
    title: str
    reference: str
    claim: str
    size: str
    settings: dict
    table: list[dict] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    verdict: str = ""
    extra: dict = field(default_factory=dict)
    wall_seconds: float = 0.0

    def row(self, quantity: str, paper: str, ours: str) -> None:
        self.table.append({"quantity": quantity, "paper": paper, "ours": ours})

    def markdown(self) -> str:
        lines = [f"# {self.title}", "", f"*{self.reference}*", "", f"Claim: {self.claim}", "",
                 f"Size: `{self.size}`, wall time {self.wall_seconds:.0f} s", "",
                 "| quantity | paper | ours |", "|---|---|---|"]
        lines += [f"| {r['quantity']} | {r['paper']} | {r['ours']} |" for r in self.table]
        if self.verdict:
            lines += ["", self.verdict]
        return "\n".join(lines) + "\n"

    def save(self, out: Path) -> dict:
        out = Path(out)
        doc = {"kind": "reproduction", **self.__dict__}
        atomic_write_bytes(out / "reproduction.json", (json.dumps(doc, indent=2, default=_json) + "\n").encode())
        atomic_write_bytes(out / "table.md", self.markdown().encode())
        return doc


def _json(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

