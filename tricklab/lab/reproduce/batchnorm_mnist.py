"""Batch norm on MNIST (Ioffe & Szegedy 2015, section 4.1, Figure 1).

The paper's set-up: 784-100-100-100-10, sigmoid hidden units, weights from a small Gaussian,
minibatches of 60, 50,000 training steps, with and without batch norm before each sigmoid.
Figure 1(a) plots test accuracy against steps; 1(b, c) plot the 15th, 50th and 85th percentiles
of the input to one sigmoid of the last hidden layer over training.

Here both networks are trained through the one pipeline (``experiment.run``) with the same seed:
the same split, the same initial weights (set by a callback: the configuration's ``init`` names
have no N(0, 0.1^2)) and the same minibatches; the only difference is the BatchNorm1d layers.
Test accuracy is taken every ``eval_every`` steps (:class:`EvaluateEvery`); each of the last
hidden layer's 100 sigmoids' input percentiles at the same steps and after the last one by a
:class:`~tricklab.train.probe.Probe` of that layer with ``units="all"`` (the paper follows single
units, not the layer's pooled percentiles) on a fixed batch of 1,000 validation images (batch
statistics of that batch for the batch-norm net, as in training; running statistics untouched).
The full size repeats the pair for seeds ``seed``, ``seed + 1`` and ``seed + 2``, the quick size
for ``seed`` alone. The table gives each number as mean ± std over the seeds (the per-seed values
are in ``extra``); the verdict compares the means and names any seed whose own comparison
disagrees; the figure is the first seed's.

References:
    Ioffe, S. and Szegedy, C. "Batch Normalization: Accelerating Deep Network Training by Reducing
    Internal Covariate Shift." ICML 2015, section 4.1 and Figure 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ... import nn
from ...stats import mean_std, pm
from ...train import Probe
from ...train.probe import PERCENTILES
from .callbacks import EvaluateEvery, InitialWeights, set_linears, unit_table
from .common import Reproduction, Timer, configure, figure, pyplot, seeds_of, splits, train

NAME = "batchnorm-mnist"
TITLE = "Batch norm on MNIST: faster, higher and steadier (Ioffe & Szegedy 2015, Fig. 1)"
REFERENCE = "Ioffe & Szegedy, Batch Normalization, ICML 2015, section 4.1, Figure 1"
SIZES = {
    "quick": {"steps": 1500, "eval_every": 150, "train_subset": 12_000, "test_subset": 2000, "lr": 0.1, "seeds": 1},
    "full": {"steps": 50_000, "eval_every": 500, "train_subset": 0, "test_subset": 0, "lr": 0.1, "seeds": 3},
}
HIDDEN, BATCH, INIT_STD, VAL_FRACTION = (100, 100, 100), 60, 0.1, 1 / 6


def layers(batchnorm: bool) -> list[dict]:
    """784-100-100-100-10: Flatten, Linear [BatchNorm1d] Sigmoid per hidden layer, a Linear read-out."""
    hidden = [{"type": "Linear", "out_features": h} for h in HIDDEN]
    out = [{"type": "Flatten"}]
    for lin in hidden:
        out += [lin, *([{"type": "BatchNorm1d"}] * batchnorm), {"type": "Sigmoid"}]
    return out + [{"type": "Linear"}]


def config(batchnorm: bool, s: dict, steps_per_epoch: int | None = None, data_root: str | None = None) -> dict:
    """Plain SGD on minibatches of 60 of MNIST in [0, 1] (no standardization), ``steps`` steps."""
    epochs = -(-s["steps"] // steps_per_epoch) if steps_per_epoch else 1
    return {"data": {"name": "mnist", "root": data_root or "", "normalize": "none", "val_fraction": VAL_FRACTION,
                     "train_subset": s["train_subset"], "test_subset": s["test_subset"]},
            "model": {"layers": layers(batchnorm)},
            "optimizer": {"name": "sgd", "lr": s["lr"]},
            "train": {"epochs": epochs, "max_steps": s["steps"], "batch_size": BATCH}}


def small_gaussian(shape, rng, dtype):
    """W ~ N(0, INIT_STD^2)."""
    return nn.init.normal(shape, 0.0, INIT_STD, rng, dtype)


def train_variant(batchnorm: bool, s: dict, data: dict, seed: int, data_root, log) -> dict:
    """One net of one seed: its test-accuracy curve, one typical unit's input percentiles, and the
    layer's per-unit median shift and spread change as [median, quartiles] over its 100 units."""
    doc = config(batchnorm, s, -(-len(data["train"][1]) // BATCH), data_root)
    evals = EvaluateEvery(s["eval_every"], {"test": data["test"]})
    sigmoid_input = max(i for i, spec in enumerate(doc["model"]["layers"]) if spec["type"] == "Sigmoid") - 1
    units = Probe(s["eval_every"], layers=[sigmoid_input], batch=data["val"][0][:1000], units="all", at_end=True)
    start = InitialWeights(lambda model: set_linears(model, small_gaussian, 0.0, seed))
    train(doc, seed, callbacks=[start, evals, units])
    steps, pct = unit_table(units, str(sigmoid_input))  # (records,), (records, units, 3)
    shift, spread = unit_drift(steps, pct)
    typical = int(np.argsort(shift + spread)[len(shift) // 2])
    acc = evals.records["test_accuracy"]
    log(f"seed {seed} {'BN' if batchnorm else 'baseline'}: test accuracy {acc[-1]:.4f} "
        f"after {evals.records['step'][-1]} steps")
    return {"steps": evals.records["step"], "test_accuracy": acc, "percentiles": pct[:, typical].tolist(),
            "unit": typical, "median_shift": _median_iqr(shift), "spread_change": _median_iqr(spread)}


def unit_drift(steps: np.ndarray, pct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per unit: |change of the median| and |change of the 15-85 spread| from early to late training.

    Early is the first tenth of the steps (after step 0), late the last tenth; averaging within
    each window keeps minibatch noise out of the measure. ``pct`` has shape (records, units, 3).
    """
    frac = steps / steps[-1]
    early = pct[(frac > 0) & (frac <= 0.1)].mean(0)
    late = pct[frac >= 0.9].mean(0)
    shift = np.abs(late[:, 1] - early[:, 1])
    spread = np.abs((late[:, 2] - late[:, 0]) - (early[:, 2] - early[:, 0]))
    return shift, spread


def _median_iqr(values: np.ndarray) -> list[float]:
    """[median, 25th, 75th percentile] of ``values``."""
    return np.percentile(values, [50, 25, 75]).tolist()


def _steps_to(run: dict, target: float) -> int | None:
    """The first evaluated step at which ``run`` reached ``target`` test accuracy (None: never)."""
    return next((s for s, a in zip(run["steps"], run["test_accuracy"]) if a >= target), None)


def finals(runs: list[dict]) -> list[float]:
    """Each seed's final test accuracy."""
    return [r["test_accuracy"][-1] for r in runs]


def seed_notes(holds: bool, bn: list[float], base: list[float], seeds: list[int], better) -> str:
    """'; seed 2 disagrees'-style text: the seeds whose own ``better(bn, base)`` differs from ``holds``
    (the comparison of the means); '' when every seed agrees."""
    odd = [str(sd) for sd, b, a in zip(seeds, bn, base) if better(b, a) != holds]
    return f"; seed{'s' * (len(odd) > 1)} {', '.join(odd)} disagree{'s' * (len(odd) == 1)}" if odd else ""


def plot(runs: dict[str, dict], seed: int, n_seeds: int):
    """Fig. 1 for one seed's pair of runs: (a) test accuracy, (b, c) one unit's input percentiles."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, r in runs.items():
        axes[0].plot(r["steps"], r["test_accuracy"], label=name)
    axes[0].set(xlabel="training step", ylabel="test accuracy", title="(a) test accuracy",
                ylim=(max(0.0, min(min(r["test_accuracy"][1:]) for r in runs.values()) - 0.02), 1.0))
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    for ax, (name, r) in zip(axes[1:], runs.items()):
        p = np.asarray(r["percentiles"])
        for j, q in enumerate(PERCENTILES):
            ax.plot(r["steps"], p[:, j], color="C0" if name == "baseline" else "C1", alpha=0.4 + 0.3 * (j == 1))
        ax.set(xlabel="training step", ylabel="sigmoid input", title=f"({'b' if name == 'baseline' else 'c'}) "
               f"{name}: unit {r['unit']}, 15/50/85th pct.")
        ax.grid(alpha=0.3)
    lo = min(np.min(r["percentiles"]) for r in runs.values())
    hi = max(np.max(r["percentiles"]) for r in runs.values())
    for ax in axes[1:]:
        ax.set_ylim(lo - 0.2, hi + 0.2)
    fig.suptitle(f"seed {seed}" + (f", the first of {n_seeds} (the table: mean ± std over all {n_seeds})"
                                   if n_seeds > 1 else ""))
    return fig


def table(rep: Reproduction, runs: dict[str, list[dict]], reached: list[int | None], s: dict) -> None:
    """The rows: each headline number as mean ± std over the seeds (one seed: the value, 'n=1')."""
    base, bn = runs["baseline"], runs["batch norm"]
    rep.row(f"test accuracy after {s['steps']:,} steps, without BN", "about 0.97 at 50,000 steps (read off Fig. 1a)",
            pm(finals(base), scale=1, digits=4, unit=""))
    rep.row(f"test accuracy after {s['steps']:,} steps, with BN", "about 0.985 at 50,000 steps (read off Fig. 1a)",
            pm(finals(bn), scale=1, digits=4, unit=""))
    got = [st for st in reached if st is not None]
    missed = f" (not reached in {len(reached) - len(got)} of {len(reached)} seeds)" if len(got) < len(reached) else ""
    rep.row("steps for BN to reach the baseline's final accuracy (each seed's own baseline)",
            "a fraction of the baseline's (Fig. 1a)",
            f"{pm(got, scale=1, digits=0, unit='')} of {s['steps']:,}{missed}" if got else "not reached")
    for key, what in (("median_shift", "shift of the median"), ("spread_change", "change of the 15-85th spread")):
        for name, rs, paper in (("without BN", base, "large (Fig. 1b: mean and variance move)"),
                                ("with BN", bn, "small (Fig. 1c: steady)")):
            m, q1, q3 = zip(*(r[key] for r in rs))
            rep.row(f"{name}: {what} of a last-layer sigmoid's input, first to last tenth of training "
                    "(median over the 100 units [quartiles, averaged over seeds])", paper,
                    f"{pm(m, scale=1, digits=2, unit='')} [{np.mean(q1):.2f}, {np.mean(q3):.2f}]")


def verdict(runs: dict[str, list[dict]], seeds: list[int]) -> str:
    """The claims judged on the means over seeds, naming any seed whose own comparison disagrees."""
    base, bn = runs["baseline"], runs["batch norm"]
    acc_bn, acc_base = finals(bn), finals(base)
    higher = mean_std(acc_bn)[0] > mean_std(acc_base)[0]
    out = [f"Batch norm ends {'higher' if higher else 'NOT higher'} (mean {mean_std(acc_bn)[0]:.4f} against "
           f"{mean_std(acc_base)[0]:.4f} over {len(seeds)} seed{'s' * (len(seeds) > 1)}"
           f"{seed_notes(higher, acc_bn, acc_base, seeds, lambda b, a: b > a)})."]
    for key, what in (("median_shift", "median"), ("spread_change", "spread")):
        m_bn, m_base = ([r[key][0] for r in rs] for rs in (bn, base))
        steadier = mean_std(m_bn)[0] < mean_std(m_base)[0]
        out.append(f"Its sigmoid inputs' {what} moves {'less' if steadier else 'MORE'} than the baseline's "
                   f"({mean_std(m_bn)[0]:.2f} against {mean_std(m_base)[0]:.2f}"
                   f"{seed_notes(steadier, m_bn, m_base, seeds, lambda b, a: b < a)}).")
    return " ".join(out)


def run(out: Path, size: str = "full", seed: int = 0, data_root: str | None = None, log=print) -> dict:
    s = SIZES[size]
    timer = Timer()
    Path(out).mkdir(parents=True, exist_ok=True)
    seeds = seeds_of(seed, s)
    runs: dict[str, list[dict]] = {"baseline": [], "batch norm": []}
    for sd in seeds:
        data = splits(configure(config(False, s, data_root=data_root), sd))  # both variants' (same seed)
        for name, bn in (("baseline", False), ("batch norm", True)):
            runs[name].append(train_variant(bn, s, data, sd, data_root, log))
    reached = [_steps_to(b, a["test_accuracy"][-1]) for a, b in zip(runs["baseline"], runs["batch norm"])]
    rep = Reproduction(NAME, TITLE, REFERENCE,
                       "batch norm reaches higher test accuracy sooner, and the distribution of a sigmoid's "
                       "input stays steady with it while it drifts without it",
                       size, {**s, "hidden": list(HIDDEN), "batch_size": BATCH, "optimizer": "SGD",
                              "init": f"N(0, {INIT_STD}^2), biases 0", "seed": seed,
                              "n_train": len(data["train"][1]), "n_val": len(data["val"][1]),
                              "n_test": len(data["test"][1])})
    rep.figures.append(figure(plot({name: rs[0] for name, rs in runs.items()}, seed, len(seeds)),
                              Path(out) / "batchnorm_mnist.png"))
    table(rep, runs, reached, s)
    rep.verdict = verdict(runs, seeds)
    rep.extra = {"seeds": seeds, "runs": runs, "reached": reached}
    rep.wall_seconds = timer.seconds
    return rep.save(out)
