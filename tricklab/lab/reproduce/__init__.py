"""Paper reproductions, one module each; every one states the paper's figure beside ours.

Each module has ``NAME``, ``TITLE``, ``REFERENCE``, ``SIZES`` ("quick": under two minutes, used by
the tests; "full": the size whose numbers the README reports) and
``run(out, size, seed, data_root, log) -> dict`` writing ``reproduction.json``, ``table.md`` and
its figures into ``out``.
"""

from __future__ import annotations

import importlib

MODULES = {
    "batchnorm-mnist": "batchnorm_mnist",
    "dropout-mnist": "dropout_mnist",
    "init-depth": "init_depth",
    "symmetry": "symmetry",
    "shuffle": "shuffle",
    "depth-width": "depth_width",
    "mnist1d": "mnist1d",
    "batchnorm-cnn": "batchnorm_cnn",
    "elastic-mnist": "elastic_mnist",
}


def get(name: str):
    if name not in MODULES:
        raise KeyError(f"unknown reproduction {name!r}; known: {', '.join(MODULES)}")
    return importlib.import_module(f"{__name__}.{MODULES[name]}")
