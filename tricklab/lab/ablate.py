"""Ablations: which of the lecture's tricks matter, measured over seeds.

For the tricks asked for, the variants are::

    baseline       every listed trick off (other keys as in the configuration)
    + T            the baseline with trick T alone switched on
    full           every listed trick on
    full - T       everything but T

Each variant runs with several seeds; the table gives the mean and standard deviation of the
validation accuracy, of the test accuracy (an ablation measures, it selects nothing, so every
trial is scored on the test split), and of the number of epochs to reach a target validation
accuracy (by default the best validation accuracy that every baseline seed reaches). Trials go
through the same results store and backends as a sweep, so an ablation
killed midway also resumes.

What "on" means for each trick is set in ``TRICKS`` (the values below), unless the configuration
already switches that trick on (then its own values are used), or ``on`` overrides a key.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .. import config as config_
from ..train.checkpoint import atomic_write_bytes
from .backends import make_backend
from .store import Store
from .sweep import TRIAL_FN, check_options, claim_folder, default_out, make_trials, run_trials

_AUG_OFF = {"augmentation.rotation": 0.0, "augmentation.stretch": 0.0, "augmentation.translation": 0.0,
            "augmentation.elastic": False, "augmentation.noise": 0.0}
# trick -> {key: (on value for image data, on value for MNIST-1D, off value)}
TRICKS: dict[str, dict[str, tuple]] = {
    "batchnorm": {"model.batchnorm": (True, True, False)},
    "dropout": {"model.dropout": (0.3, 0.3, 0.0), "model.input_dropout": (0.1, 0.0, 0.0)},
    "weight_decay": {"optimizer.weight_decay": (1e-4, 1e-4, 0.0)},
    "clipping": {"regularization.clip_norm": (5.0, 5.0, 0.0)},
    "augmentation": {"augmentation.rotation": (10.0, 0.0, 0.0), "augmentation.translation": (2.0, 0.0, 0.0),
                     "augmentation.noise": (0.0, 0.1, 0.0), "augmentation.stretch": (0.0, 0.0, 0.0),
                     "augmentation.elastic": (False, False, False)},
    "input_norm": {"data.normalize": ("global", "per_feature", "none")},
    "early_stopping": {"early_stopping.enabled": (True, True, False)},
}


def _get(cfg: dict, dotted: str):
    section, key = dotted.split(".")
    return cfg[section][key]


def trick_settings(cfg: dict, tricks: list[str], on: dict | None = None) -> dict[str, tuple[dict, dict]]:
    """trick -> (keys when on, keys when off) for this configuration."""
    if not tricks:
        raise config_.ConfigError(f"--tricks names no trick; give one or more of: {', '.join(TRICKS)}")
    for t in tricks:
        if t not in TRICKS:
            raise config_.ConfigError(f"--tricks: unknown trick {t!r}{config_._suggest(t, TRICKS)} "
                                      f"(known: {', '.join(TRICKS)})")
    if len(set(tricks)) != len(tricks):
        raise config_.ConfigError(f"a trick is listed twice in {tricks}")
    image = cfg["data"]["name"] != "mnist1d"
    on = dict(on or {})
    owners = {k: t for t, keys in TRICKS.items() for k in keys}
    for key in on:
        if key not in owners or owners[key] not in tricks:
            raise config_.ConfigError(f"--on {key}: not a key of the tricks being ablated "
                                      f"({', '.join(k for k, t in owners.items() if t in tricks)})")
    out = {}
    for t in tricks:
        keys = TRICKS[t]
        off = {k: v[2] for k, v in keys.items()}
        already_on = any(_get(cfg, k) != v[2] for k, v in keys.items())
        if already_on:  # the configuration's own strength of the trick
            on_vals = {k: _get(cfg, k) for k in keys}
        else:
            on_vals = {k: (v[0] if image else v[1]) for k, v in keys.items()}
        on_vals.update({k: v for k, v in on.items() if k in keys})
        out[t] = (on_vals, off)
    return out


def variants(cfg: dict, tricks: list[str], on: dict | None = None) -> dict[str, dict]:
    """Variant name -> the keys it sets (baseline, + each trick, full, full - each trick)."""
    settings = trick_settings(cfg, tricks, on)
    off_all = {k: v for t in tricks for k, v in settings[t][1].items()}
    on_all = {k: v for t in tricks for k, v in settings[t][0].items()}
    out = {"baseline": off_all}
    out.update({f"+ {t}": {**off_all, **settings[t][0]} for t in tricks})
    out["full"] = on_all
    if len(tricks) > 1:
        out.update({f"full - {t}": {**on_all, **settings[t][1]} for t in tricks})
    return out


def epochs_to(history: list[dict], target: float) -> int | None:
    return next((row["epoch"] for row in history if row.get("val_accuracy", -1) >= target), None)


def distinct_points(named: dict[str, dict]) -> tuple[list[dict], dict[str, int]]:
    """The distinct configurations among the variants, and which one each variant is.

    With two tricks "full - A" is "+ B"; such variants share their trials instead of running twice.
    """
    points: list[dict] = []
    index = {}
    for name, keys in named.items():
        if keys not in points:
            points.append(keys)
        index[name] = points.index(keys)
    return points, index


def summarize(rows: list[dict], names: list[str], index: dict[str, int] | None = None,
              target: float | None = None) -> tuple[list[dict], float]:
    """Per variant: mean and std over seeds of validation and test accuracy and epochs to ``target``."""
    index = index or {name: p for p, name in enumerate(names)}
    by_point: dict[int, list[dict]] = {}
    for r in rows:
        if r["status"] == "done":
            by_point.setdefault(r["point"], []).append(r)
    if target is None:  # what every baseline seed reaches: do the tricks get there sooner?
        base = by_point.get(index[names[0]], [])
        target = float(min(max(row["val_accuracy"] for row in r["history"]) for r in base)) if base else 1.0
    table = []
    for name in names:
        rs = by_point.get(index[name], [])
        entry = {"variant": name, "seeds": len(rs)}
        same = [n for n in names if index[n] == index[name] and n != name]
        if same:
            entry["same_as"] = same
        for key in ("val_accuracy", "test_accuracy", "epochs_run"):
            vals = [r["metrics"][key] for r in rs]
            entry[key] = float(np.mean(vals)) if vals else None
            entry[f"{key}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        reached = [e for e in (epochs_to(r["history"], target) for r in rs) if e is not None]
        entry["epochs_to_target"] = float(np.mean(reached)) if reached else None
        entry["epochs_to_target_std"] = float(np.std(reached, ddof=1)) if len(reached) > 1 else 0.0
        entry["reached_target"] = len(reached)
        table.append(entry)
    return table, target


def markdown(table: list[dict], target: float) -> str:
    from .report import mean_sd

    lines = [f"| variant | validation accuracy (%) | test accuracy (%) | epochs to {target:.2%} (reached) | epochs run |",
             "|---|---|---|---|---|"]
    for e in table:
        name = e["variant"] + (f" (= {', '.join(e['same_as'])})" if e.get("same_as") else "")
        n = e["seeds"]
        ep = mean_sd(e["epochs_to_target"], e["epochs_to_target_std"], e["reached_target"], False)
        lines.append(f"| {name} | {mean_sd(e['val_accuracy'], e['val_accuracy_std'], n)} | "
                     f"{mean_sd(e['test_accuracy'], e['test_accuracy_std'], n)} | {ep} ({e['reached_target']}/{n}) | "
                     f"{mean_sd(e['epochs_run'], e['epochs_run_std'], n, False)} |")
    return "\n".join(lines) + "\n"


def run_ablation(cfg: dict, tricks: list[str], seeds: int = 3, out: str | Path | None = None,
                 workers: int | None = None, backend: str = "local", address: str | None = None,
                 connect_timeout: float = 30.0, target: float | None = None, on: dict | None = None, trial_fn: str = TRIAL_FN,
                 command: str = "", log=None) -> dict:
    log = log or (lambda msg: print(msg, file=sys.stderr))
    check_options(seeds, workers, connect_timeout)
    if target is not None and not 0.0 <= target <= 1.0:  # written so that NaN is refused too
        raise config_.ConfigError(f"--target must be a validation accuracy in [0, 1] (a fraction: 0.97, not 97), "
                                  f"got {target}")
    named = variants(cfg, tricks, on)
    names = list(named)
    points, index = distinct_points(named)
    labels = [next(n for n in names if index[n] == p) for p in range(len(points))]
    seed_list = [cfg["run"]["seed"] + k for k in range(seeds)]
    trials = make_trials(cfg, points, seed_list, labels=labels)
    out = Path(out) if out else default_out("ablate", cfg, {"tricks": tricks, "on": on or {}, "seeds": seeds})
    out.mkdir(parents=True, exist_ok=True)
    log(f"ablation: {len(names)} variants ({len(points)} distinct) x {seeds} seeds = {len(trials)} trials -> {out}")
    with Store(out / "sweep.db") as store:
        claim_folder(store, "ablation", [t.id for t in trials])
        store.set_meta(kind="ablation", base_config=config_.dumps(cfg), tricks=tricks, variants=named,
                       variant_points=index, seeds=seed_list, command=command, trial_ids=[t.id for t in trials])
        run_trials(store, trials, make_backend(backend, workers, address, connect_timeout), fn=trial_fn, score_test=True,
                    log=log)
        rows = store.rows(ids=[t.id for t in trials])
    table, target = summarize(rows, names, index, target)
    summary = {"kind": "ablation", "tricks": tricks, "variants": named, "target": target, "table": table,
               "out": str(out)}
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    atomic_write_bytes(out / "ablation.md", markdown(table, target).encode())
    from .report import ablation_figures

    ablation_figures(out, rows, names, target, index)
    log("\n" + markdown(table, target))
    return summary
