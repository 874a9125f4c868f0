"""Ablations: which of the lecture's tricks matter, measured over seeds.

For the tricks asked for, the variants are::

    baseline       every listed trick off (other keys as in the configuration)
    + T            the baseline with trick T alone switched on
    full           every listed trick on
    full - T       everything but T

Each variant runs with several seeds; the table gives the mean and standard deviation of a
validation metric (``--metric``, see metric.py: accuracy for classification, RMSE for
regression), of the same metric on the test split (an ablation measures, it selects nothing, so
every trial is scored on the test split), and of the number of epochs for the validation metric
to reach a target (by default the best value that every baseline seed reaches). Trials go
through the same results store and backends as a sweep, so an ablation
killed midway also resumes.

What "on" means for each trick is set in ``TRICKS`` (the values below), unless the configuration
already switches that trick on (then its own values are used), or ``on`` overrides a key.

With a model written as a layer list (``[[model.layers]]``, a CNN for instance), the
shorthand's tricks batchnorm and dropout set keys such a configuration does not have; there they
act on the layers instead (``LAYER_TRICKS``): on is the list as written, off is the list without
its batch-norm (BatchNorm1d, BatchNorm2d) or dropout (Dropout, Dropout2d) layers. A trick may also
be any layer class of that list (``Dropout2d``, ``BatchNorm1d``, ...), removed in the same way, so
a new layer class is ablated with nothing added here; classes that set widths (Linear, Conv2d)
cannot be removed. The other tricks set configuration keys and work on every model. Where a batch
norm is removed, the layer right before it gets its bias back if the list turned it off (bias =
false, "batch norm's shift replaces the bias"): the network without batch norm is the one a
practitioner would write, not one that lost its shifts too.
"""

from __future__ import annotations

import inspect
import json
import math
import sys
from pathlib import Path

from .. import config as config_
from ..fileio import atomic_write_bytes
from .ablation_figures import ablation_figures
from ..stats import format_pm, mean_std
from .backends import make_backend
from .metric import Metric, choose
from .store import Store
from .sweep import TRIAL_FN, check_options, claim_folder, default_out, make_trials, mean_and_std, run_trials

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
# trick -> the layer classes it removes from a model written as a layer list, when off
LAYER_TRICKS: dict[str, tuple[str, ...]] = {"batchnorm": ("BatchNorm1d", "BatchNorm2d"),
                                            "dropout": ("Dropout", "Dropout2d")}
BATCHNORMS = LAYER_TRICKS["batchnorm"]


def _get(cfg: dict, dotted: str):
    section, key = dotted.split(".")
    return cfg[section][key]


def _acts_on_layers(cfg: dict, trick: str) -> bool:
    """Whether ``trick`` removes layers of this configuration's list rather than setting keys."""
    return not config_.uses_shorthand(cfg) and (trick in LAYER_TRICKS or trick not in TRICKS)


def removed_classes(trick: str) -> tuple[str, ...]:
    """The layer classes a layer-acting ``trick`` removes when off: its LAYER_TRICKS entry, or itself."""
    return LAYER_TRICKS.get(trick, (trick,))


def check_tricks(cfg: dict, tricks: list[str]) -> None:
    """Refuse no trick, an unknown or repeated one, a layer trick (batchnorm, dropout, a layer
    class) whose layers the configuration's list does not have, a layer class whose layers set
    widths, and two tricks that remove the same layers."""
    from ..nn.spec import WIDTHS, layer_classes

    listed = not config_.uses_shorthand(cfg)
    present = list(dict.fromkeys(spec["type"] for spec in cfg["model"]["layers"])) if listed else []
    known = list(TRICKS) + present
    if not tricks:
        raise config_.ConfigError(f"--tricks names no trick; give one or more of: {', '.join(known)}")
    for t in tricks:
        if t in LAYER_TRICKS and listed:
            if not set(LAYER_TRICKS[t]) & set(present):
                raise config_.ConfigError(f"--tricks {t}: on a layer list it removes the {' and '.join(LAYER_TRICKS[t])}"
                                          f" layers, but model.layers has none (its layers: {', '.join(present)})")
            continue
        if t in TRICKS:
            continue
        if t in layer_classes() and not listed:
            raise config_.ConfigError(f"--tricks {t}: a layer class is ablated by removing its layers from "
                                      "model.layers, but this configuration uses the hidden = [...] shorthand; write "
                                      f"the model as [[model.layers]], or ablate one of: {', '.join(TRICKS)}")
        if t not in present:
            raise config_.ConfigError(f"--tricks: unknown trick {t!r}{config_._suggest(t, known)} "
                                      f"(known: {', '.join(known)})")
        if any(w in inspect.signature(layer_classes()[t]).parameters for w in WIDTHS):
            raise config_.ConfigError(f"--tricks {t}: {t} layers set the widths of the network, so removing them "
                                      "is not an ablation; name layers that keep the shape (Dropout, BatchNorm1d, ...)")
    if len(set(tricks)) != len(tricks):
        raise config_.ConfigError(f"a trick is listed twice in {tricks}")
    owner: dict[str, str] = {}
    for t in (t for t in tricks if _acts_on_layers(cfg, t)):
        for cls in removed_classes(t):
            if cls in owner and cls in present:
                raise config_.ConfigError(f"--tricks {owner[cls]} and {t} both remove the {cls} layers; name one")
            owner[cls] = t


def trick_settings(cfg: dict, tricks: list[str], on: dict | None = None) -> dict[str, tuple[dict, dict]]:
    """trick -> (keys when on, keys when off) for this configuration, for the tricks of ``TRICKS``
    (a layer class has no keys: its layers are removed by ``variants``)."""
    check_tricks(cfg, tricks)
    tricks = [t for t in tricks if not _acts_on_layers(cfg, t)]
    image = cfg["data"]["name"] != "mnist1d"
    on = dict(on or {})
    owners = {k: t for t, keys in TRICKS.items() for k in keys}
    for key in on:
        if key in owners and not config_.uses_shorthand(cfg) and owners[key] in LAYER_TRICKS:
            raise config_.ConfigError(f"--on {key}: on a layer list the {owners[key]} trick removes its "
                                      f"{' and '.join(LAYER_TRICKS[owners[key]])} layers; set their arguments in "
                                      "model.layers instead")
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
    """Variant name -> the keys it sets (baseline, + each trick, full, full - each trick); with
    tricks that act on layers, ``model.layers``: the list without the layers of the tricks that are off."""
    settings = trick_settings(cfg, tricks, on)
    layered = [t for t in tricks if t not in settings]

    def variant(switched_on: set[str]) -> dict:
        keys = {k: v for t in settings for k, v in settings[t][0 if t in switched_on else 1].items()}
        if layered:
            off = {cls for t in layered if t not in switched_on for cls in removed_classes(t)}
            keys["model.layers"] = without_layers(cfg["model"]["layers"], off)
        return keys

    out = {"baseline": variant(set())}
    out.update({f"+ {t}": variant({t}) for t in tricks})
    out["full"] = variant(set(tricks))
    if len(tricks) > 1:
        out.update({f"full - {t}": variant(set(tricks) - {t}) for t in tricks})
    return out


def without_layers(specs: list[dict], classes: set[str]) -> list[dict]:
    """``specs`` without its (top-level) layers of ``classes``; the layer right before a removed
    batch norm gets its bias back (its ``bias = false`` dropped) when the list had turned it off."""
    out: list[dict] = []
    for spec in specs:
        if spec["type"] not in classes:
            out.append(spec)
        elif spec["type"] in BATCHNORMS and out and out[-1].get("bias") is False:
            out[-1] = {k: v for k, v in out[-1].items() if k != "bias"}
    return out


def epochs_to(history: list[dict], target: float | None, metric: Metric = Metric()) -> int | None:
    """The first epoch whose validation ``metric`` is at least as good as ``target``."""
    if target is None:
        return None
    return next((row["epoch"] for row in history if metric.reached(metric.value(row), target)), None)


def default_target(rows: list[dict], metric: Metric = Metric()) -> float | None:
    """The best value of ``metric`` that every one of ``rows`` (the baseline's seeds) reaches: the
    best epoch of the worst seed. None without a finished seed with a finite value."""
    bests = [min((metric.rank(metric.value(row)) for row in r["history"]), default=math.inf) for r in rows]
    if not bests or max(bests) == math.inf:
        return None
    return float(-max(bests) if metric.maximize else max(bests))


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
              target: float | None = None, metric: Metric = Metric()) -> tuple[list[dict], float | None]:
    """Per variant: mean and std over seeds of the validation and test ``metric`` (and the other
    scores) and of the epochs to ``target``."""
    index = index or {name: p for p, name in enumerate(names)}
    by_point: dict[int, list[dict]] = {}
    for r in rows:
        if r["status"] == "done":
            by_point.setdefault(r["point"], []).append(r)
    if target is None:  # what every baseline seed reaches: do the tricks get there sooner?
        target = default_target(by_point.get(index[names[0]], []), metric)
    table = []
    for name in names:
        rs = by_point.get(index[name], [])
        entry = {"variant": name, "seeds": len(rs)}
        same = [n for n in names if index[n] == index[name] and n != name]
        if same:
            entry["same_as"] = same
        entry.update(mean_and_std([r["metrics"] for r in rs], metric))
        for key in (metric.key("val"), metric.key("test"), "epochs_run"):
            entry.setdefault(key, None)
            entry.setdefault(f"{key}_std", 0.0)
        reached = [e for e in (epochs_to(r["history"], target, metric) for r in rs) if e is not None]
        entry["epochs_to_target"], entry["epochs_to_target_std"] = mean_std(reached) if reached else (None, 0.0)
        entry["reached_target"] = len(reached)
        table.append(entry)
    return table, target


def epochs_text(mean: float | None, sd: float, n: int) -> str:
    """Epochs over n seeds with one decimal: '12.3 ± 1.5', '12.0 (n=1)', '—' for none."""
    return format_pm(mean, sd, n, scale=1.0, digits=1, unit="")


def markdown(table: list[dict], target: float | None, metric: Metric = Metric()) -> str:
    val, test = metric.key("val"), metric.key("test")
    lines = [f"| variant | {metric.header('validation')} | {metric.header('test')} | "
             f"epochs to {metric.target_text(target)} (reached) | epochs run |",
             "|---|---|---|---|---|"]
    for e in table:
        name = e["variant"] + (f" (= {', '.join(e['same_as'])})" if e.get("same_as") else "")
        n = e["seeds"]
        ep = epochs_text(e["epochs_to_target"], e["epochs_to_target_std"], e["reached_target"])
        lines.append(f"| {name} | {metric.format(e[val], e[val + '_std'], n)} | "
                     f"{metric.format(e[test], e[test + '_std'], n)} | {ep} ({e['reached_target']}/{n}) | "
                     f"{epochs_text(e['epochs_run'], e['epochs_run_std'], n)} |")
    return "\n".join(lines) + "\n"


def run_ablation(cfg: dict, tricks: list[str], seeds: int = 3, out: str | Path | None = None,
                 workers: int | None = None, backend: str = "local", address: str | None = None,
                 connect_timeout: float = 30.0, target: float | None = None, on: dict | None = None, trial_fn: str = TRIAL_FN,
                 command: str = "", metric: str | None = None, log=None) -> dict:
    log = log or (lambda msg: print(msg, file=sys.stderr))
    check_options(seeds, workers, connect_timeout)
    measured = choose(metric, [cfg["loss"]["name"]])  # no trick changes the loss
    if target is not None:
        measured.check_target(target)
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
                       variant_points=index, seeds=seed_list, command=command, trial_ids=[t.id for t in trials],
                       metric=measured.name)
        run_trials(store, trials, make_backend(backend, workers, address, connect_timeout), fn=trial_fn, score_test=True,
                   log=log, metric=measured)
        rows = store.rows(ids=[t.id for t in trials])
    table, target = summarize(rows, names, index, target, measured)
    summary = {"kind": "ablation", "tricks": tricks, "variants": named, "metric": measured.name, "target": target,
               "table": table, "out": str(out)}
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    atomic_write_bytes(out / "ablation.md", markdown(table, target, measured).encode())
    ablation_figures(out, rows, names, target, index, measured)
    log("\n" + markdown(table, target, measured))
    return summary
