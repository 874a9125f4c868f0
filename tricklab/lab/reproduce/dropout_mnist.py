"""Dropout on MNIST (Srivastava et al. 2014, Table 2) at a CPU budget.

The paper's networks: 784-1024-1024-1024-10 ReLU, trained with SGD, momentum rising to a final
0.95, inputs kept with probability 0.8 and hidden units with 0.5 (drop probabilities 0.2 and 0.5
here, PyTorch's spelling), and optionally a max-norm constraint ||w_i|| <= c on every unit's
incoming weights. The paper trains for thousands of epochs; here each network gets a budget of
epochs (``SIZES``), a momentum ramp from 0.5 to 0.95 over the first quarter of them and a
learning rate decaying exponentially to a tenth. Momentum is the paper's (Hinton et al. 2012,
Appendix A): the velocity averages the gradients,

    v_t = p_t v_{t-1} - (1 - p_t) eps_t g_t,    w_t = w_{t-1} + v_t,

so the step's size stays eps_t while p_t rises (``optimizer.damped``: PyTorch's SGD with dampening =
momentum; its first step is the gradient itself, as in PyTorch; the ramp is ``schedule.momentum_end``
and ``momentum_epochs``). PyTorch's undamped ``v_t = p v_{t-1} + g_t`` multiplies the step by
1 / (1 - p_t), twenty at 0.95: the dropout nets diverged as the ramp ended.

Step sizes, max-norm's c and the budgets were chosen on the validation split only (seed 0,
lab README): 12-epoch runs for eps in {0.25, 0.5, 1, 2} and c in {2, 3}, then 24-epoch runs of
dropout + max-norm for eps in {0.5, 1, 2} and c in {1.5, 2}; the standard net's validation error is
flat at zero training loss by 12-15 epochs, the dropout nets' still falls at 80.
The three networks are trained through the one pipeline (``experiment.run``) with the same seed:
the same split, the same initial weights and the same minibatches (dropout masks draw from their
own generators); training error (on the first TRAIN_SCORED training examples) and test error are
scored after every epoch by a callback.
Each training is saved to ``OUT/runs/`` as it finishes and read back by a rerun into the same
folder (``run``); ``workers`` trains several at once as processes.

References:
    Srivastava, N., Hinton, G., Krizhevsky, A., Sutskever, I. and Salakhutdinov, R. "Dropout: A
    Simple Way to Prevent Neural Networks from Overfitting." JMLR 15, 2014, Table 2 and
    Appendix B.1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ...errors import TricklabError
from ...fileio import atomic_write_bytes
from ...train.callbacks import EpochLog
from .callbacks import EvaluateEachEpoch
from ...stats import mean_std, pm
from .common import (Reproduction, Timer, configure, figure, named_seeds, over_seeds, pyplot, seeds_of, splits,
                     train)

NAME = "dropout-mnist"
TITLE = "Dropout on MNIST: less overfitting, lower test error (Srivastava et al. 2014, Table 2)"
REFERENCE = "Srivastava et al., Dropout, JMLR 15 (2014), Table 2"
SIZES = {
    "quick": {"epochs": {"standard": 3, "dropout": 3, "dropout + max-norm": 3}, "hidden": [256, 256, 256],
              "train_subset": 6000, "test_subset": 2000, "seeds": 1},
    # the standard net is at zero training loss and a flat validation error after 12-15 epochs
    # (validation search), so 20 epochs are its whole budget; the dropout nets are still learning at 80
    "full": {"epochs": {"standard": 20, "dropout": 80, "dropout + max-norm": 80}, "hidden": [1024, 1024, 1024],
             "train_subset": 0, "test_subset": 0, "seeds": 3},
}
BATCH, P_INPUT, P_HIDDEN, MAX_NORM = 100, 0.2, 0.5, 1.5
TRAIN_SCORED = 10_000  # the training error is scored on the first this many training examples (a fifth of the cost)
LR = {"standard": 1.0, "dropout": 0.5, "dropout + max-norm": 0.5}  # initial step eps (validation, seed 0)
MOMENTUM_START, MOMENTUM_END = 0.5, 0.95
VARIANTS = {  # name: (dropout, max-norm), with the paper's error beside it
    "standard": (False, False),
    "dropout": (True, False),
    "dropout + max-norm": (True, True),
}
PAPER_ERROR = {
    "standard": "1.60% (Simard et al. 2003: 2x800 logistic, the paper's standard net)",
    "dropout": "1.25% (3x1024 ReLU)",
    "dropout + max-norm": "1.06% (3x1024 ReLU)",
}


def config(hidden, variant: str, epochs: int, s: dict, data_root: str | None = None) -> dict:
    """The variant's configuration: MNIST in [0, 1], ReLU MLP (He-uniform hidden weights, PyTorch's
    default read-out), SGD with damped momentum rising from MOMENTUM_START to MOMENTUM_END over the first
    quarter of the epochs, lr decaying exponentially to LR/10, [dropout], [max-norm]."""
    dropout, max_norm = VARIANTS[variant]
    return {"data": {"name": "mnist", "root": data_root or "", "normalize": "none", "val_fraction": 1 / 6,
                     "train_subset": s["train_subset"], "test_subset": s["test_subset"]},
            "model": {"hidden": list(hidden), "init": "kaiming_uniform",
                      "input_dropout": P_INPUT if dropout else 0.0, "dropout": P_HIDDEN if dropout else 0.0},
            "optimizer": {"name": "sgd", "lr": LR[variant], "momentum": MOMENTUM_START, "damped": True},
            "schedule": {"name": "exponential", "gamma": 0.1 ** (1 / max(1, epochs - 1)),
                         "momentum_end": MOMENTUM_END, "momentum_epochs": max(1, epochs // 4)},
            "regularization": {"max_norm": MAX_NORM if max_norm else 0.0},
            "train": {"epochs": epochs, "batch_size": BATCH}}


def train_variant(variant: str, s: dict, data: dict, seed: int, data_root, log) -> dict:
    epochs = s["epochs"][variant]
    doc = config(s["hidden"], variant, epochs, s, data_root)
    X, y = data["train"]
    extra = EvaluateEachEpoch({"train": (X[:TRAIN_SCORED], y[:TRAIN_SCORED]), "test": data["test"]})
    progress = EpochLog(lambda line: log(f"{variant}: {line}"))  # an epoch of the full size: 13-14 s here (1 thread)
    result = train(doc, seed, callbacks=[extra, progress])
    h = result.history
    hist = {"epoch": [row["epoch"] for row in h], "lr": [row["lr"] for row in h],
            **{f"{k}_error": [1 - row[f"{k}_accuracy"] for row in h] for k in ("train", "val", "test")}}
    log(f"{variant}: train error {hist['train_error'][-1]:.4f}, val {hist['val_error'][-1]:.4f}, "
        f"test {hist['test_error'][-1]:.4f}")
    return hist


def run(out: Path, size: str = "full", seed: int = 0, data_root: str | None = None, log=print,
        workers: int = 1) -> dict:
    """Train every (variant, seed) of ``size`` and write the report into ``out``. Each training is
    saved to ``OUT/runs/`` as it finishes; started again into the same ``out``, the reproduction reads
    the trainings whose :func:`fingerprint` is unchanged and trains only the others, so a crash or
    Ctrl-C loses only the trainings in flight. ``workers`` > 1 runs that many trainings at once as
    processes (one BLAS thread each; the trainings do not depend on one another)."""
    s = SIZES[size]
    timer = Timer()
    Path(out, "runs").mkdir(parents=True, exist_ok=True)
    seeds = seeds_of(seed, s)
    jobs = [(v, sd) for sd in seeds for v in VARIANTS]
    done = {job: rec for job in jobs if (rec := _saved(out, size, *job)) is not None}
    if done:
        log(f"{len(done)} of {len(jobs)} trainings read from {Path(out, 'runs')} (their configuration is unchanged)")
    todo = [job for job in jobs if job not in done]
    if workers > 1 and todo:
        done.update(_train_in_processes(out, size, todo, data_root, workers, log))
    else:
        for v, sd in todo:
            done[v, sd] = _save(out, v, sd, train_job(v, size, sd, data_root, log))
    runs = {v: [done[v, sd]["history"] for sd in seeds] for v in VARIANTS}
    settings = {**settings_of(s, seeds, done[jobs[0]]["sizes"]), "workers_this_invocation": workers,
                "trainings_read_from_earlier_runs": len(jobs) - len(todo),
                "training_seconds_summed": round(sum(rec["seconds"] for rec in done.values()), 1)}
    return write(out, size, settings, runs, timer.seconds)


def train_job(variant: str, size: str, seed: int, data_root: str | None = None, log=None) -> dict:
    """One training of ``variant`` at ``size`` on seed ``seed``'s split (what a worker process runs):
    its fingerprint, history, the splits' sizes and its seconds. Logs to stderr unless ``log`` is given."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    timer = Timer()
    s = SIZES[size]
    data = splits(configure(config(s["hidden"], "standard", s["epochs"]["standard"], s, data_root), seed))
    hist = train_variant(variant, s, data, seed, data_root, lambda msg: log(f"seed {seed} {msg}"))
    return {"fingerprint": fingerprint(size, variant, seed), "history": hist,
            "sizes": {k: len(y) for k, (_, y) in data.items()}, "seconds": timer.seconds}


def fingerprint(size: str, variant: str, seed: int) -> dict:
    """What a saved training must match to be read instead of trained again: its resolved
    configuration (the data folder left out: the MNIST files are checksummed wherever they lie) and
    how many training examples its error is scored on, as JSON reads them back."""
    s = SIZES[size]
    cfg = configure(config(s["hidden"], variant, s["epochs"][variant], s), seed)
    return json.loads(json.dumps({"config": cfg, "train_scored": TRAIN_SCORED}))


class TrainingsFailed(TricklabError, RuntimeError):
    """Trainings in worker processes failed; the finished ones are saved."""


def _train_in_processes(out: Path, size: str, jobs: list, data_root, workers: int, log) -> dict:
    """``jobs`` as tasks on a local pool of ``workers`` processes; each saved as it finishes, each
    failure's traceback written beside the saved trainings."""
    from ..backends import LocalBackend, Task, from_list

    tasks = [Task(f"{v}, seed {sd}", f"{__name__}:train_job", {"variant": v, "size": size, "seed": sd,
                                                                  "data_root": data_root}) for v, sd in jobs]
    job_of = {t.key: job for t, job in zip(tasks, jobs)}
    done, failed = {}, {}

    def on_done(task, result):
        done[job_of[task.key]] = _save(out, *job_of[task.key], result["result"])
        log(f"{task.key}: done ({len(done)} of {len(jobs)})")

    def on_fail(task, trace):
        failed[task.key] = trace.strip().splitlines()[-1]
        atomic_write_bytes(_failure_path(out, *job_of[task.key]), trace.encode())
        log(f"{task.key}: failed: {failed[task.key]}")

    LocalBackend(workers).run(from_list(tasks), lambda task, where: log(f"{task.key}: started"), on_done, on_fail)
    if failed:
        keys = [t.key for t in tasks if t.key in failed]  # in the order of the jobs, not of their ends
        raise TrainingsFailed(
            f"{NAME}: {len(keys)} training(s) failed ({'; '.join(keys)}), the first with {failed[keys[0]]}; "
            f"tracebacks in {Path(out, 'runs')}/*.failed.txt; the {len(done)} finished are saved there and "
            f"a rerun trains only the others")
    return done


def _record_path(out: Path, variant: str, seed: int) -> Path:
    """Where the training of (variant, seed) is saved: OUT/runs/dropout-max-norm-seed0.json, ..."""
    return Path(out, "runs", f"{variant.replace(' + ', '-').replace(' ', '-')}-seed{seed}.json")


def _failure_path(out: Path, variant: str, seed: int) -> Path:
    return _record_path(out, variant, seed).with_suffix(".failed.txt")


RECORD_KEYS = {"fingerprint", "history", "sizes", "seconds"}


def _save(out: Path, variant: str, seed: int, result: dict) -> dict:
    record = {"variant": variant, "seed": seed, **result}
    atomic_write_bytes(_record_path(out, variant, seed), (json.dumps(record) + "\n").encode())
    _failure_path(out, variant, seed).unlink(missing_ok=True)
    return record


def _saved(out: Path, size: str, variant: str, seed: int) -> dict | None:
    """The saved training of (variant, seed) if there is one, whole, with today's fingerprint; else None."""
    try:
        record = json.loads(_record_path(out, variant, seed).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not RECORD_KEYS <= set(record):
        return None
    return record if record["fingerprint"] == fingerprint(size, variant, seed) else None


def settings_of(s: dict, seeds: list[int], sizes: dict) -> dict:
    """What the report states of a run of size ``s`` over ``seeds`` on splits of ``sizes`` (examples)."""
    return {**s, "lr": {v: f"{lr}, decaying exponentially to {lr / 10:g}" for v, lr in LR.items()},
            "batch_size": BATCH, "momentum": f"{MOMENTUM_START} rising to {MOMENTUM_END}, damped (the paper's)",
            "drop_probability": {"input": P_INPUT, "hidden": P_HIDDEN}, "max_norm_c": MAX_NORM,
            "seeds": seeds, "n_train": sizes["train"], "n_val": sizes["val"], "n_test": sizes["test"],
            "training_error_on": min(TRAIN_SCORED, sizes["train"])}


def final_errors(runs: list[dict], split: str = "test") -> list[float]:
    """Each seed's error on ``split`` after the last epoch."""
    return [h[f"{split}_error"][-1] for h in runs]


def write(out: Path, size: str, settings: dict, runs: dict[str, list[dict]], wall_seconds: float) -> dict:
    """Figure (the first seed's curves), table (mean ± sd over the seeds) and verdict of measured ``runs``."""
    s, seeds = settings, settings["seeds"]
    plt = pyplot()
    from matplotlib.ticker import FormatStrFormatter

    fig, (ax_test, ax_gap) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (v, hs) in enumerate(runs.items()):
        h = hs[0]
        ax_test.plot(h["epoch"], np.asarray(h["test_error"]) * 100, marker="o", ms=3, label=v, color=f"C{i}")
        ax_gap.plot(h["epoch"], np.asarray(h["train_error"]) * 100, ls="--", color=f"C{i}", label=f"{v}, training")
        ax_gap.plot(h["epoch"], np.asarray(h["test_error"]) * 100, color=f"C{i}", label=f"{v}, test")
    ax_test.set(xlabel="epoch", ylabel="test error (%)", title=f"test error (seed {seeds[0]})", yscale="log")
    for axis in (ax_test.yaxis.set_major_formatter, ax_test.yaxis.set_minor_formatter):
        axis(FormatStrFormatter("%g"))  # 1.5, 2, 3 rather than 2 x 10^0
    ax_gap.set(xlabel="epoch", ylabel="error (%)", title=f"training against test error (seed {seeds[0]})")
    ax_gap.set_yscale("symlog", linthresh=0.01)  # linear below 0.01% (one image in 10,000): a zero training error stays on the plot
    for ax in (ax_test, ax_gap):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    rep = Reproduction(NAME, TITLE, REFERENCE,
                       "dropout lowers the test error of a 3x1024 ReLU net, and max-norm lowers it further",
                       size, settings)
    rep.figures.append(figure(fig, Path(out) / "dropout_mnist.png"))
    arch = "x".join(str(h) for h in s["hidden"])
    over = over_seeds(seeds)
    for v, hs in runs.items():
        rep.row(f"test error, {v} ({arch} ReLU, lr {LR[v]}, {s['epochs'][v]} epochs; {over})", PAPER_ERROR[v],
                pm(final_errors(hs)))
    for v, hs in runs.items():
        gaps = [t - r for t, r in zip(final_errors(hs), final_errors(hs, "train"))]
        rep.row(f"test minus training error, {v} ({over})", "smaller with dropout", pm(gaps))
    for a, b in zip(ORDER, ORDER[1:]):  # the variants share each seed's split, initial weights and minibatches
        diffs = [ea - eb for ea, eb in zip(final_errors(runs[a]), final_errors(runs[b]))]
        rep.row(f"test error, {a} minus {b}, seed by seed ({named_seeds(seeds)}; paired)", "> 0",
                ", ".join(f"{100 * d:+.2f}" for d in diffs) + " points")
    rep.verdict = verdict({v: final_errors(hs) for v, hs in runs.items()})
    rep.extra = {"runs": runs}
    rep.wall_seconds = wall_seconds
    return rep.save(out)


ORDER = ("standard", "dropout", "dropout + max-norm")  # the paper's, from the highest test error down


def verdict(errors: dict[str, list[float]]) -> str:
    """Does the mean test error fall along ORDER (the paper's ordering), and is each step down larger
    than the seed spread (the larger standard deviation of the two variants)? Each step is judged and
    named; means closer than TIE (far below one test image in 10,000) are a tie, not a step."""
    stats = {v: mean_std(errors[v]) for v in ORDER}
    steps = [(a, b, stats[a][0] - stats[b][0], max(stats[a][1], stats[b][1])) for a, b in zip(ORDER, ORDER[1:])]
    several = len(errors[ORDER[0]]) > 1
    judged = [(a, b, gap, spread, _step(gap, spread, several)) for a, b, gap, spread in steps]
    text = "; ".join(f"{a} {100 * stats[a][0]:.2f}% -> {b} {100 * stats[b][0]:.2f}%: {100 * gap:+.2f} points "
                     f"against a spread of {100 * spread:.2f}, {word}" for a, b, gap, spread, word in judged)
    words = {word for *_, word in judged}
    if words == {"above the spread"}:
        return f"Matches: the paper's ordering (standard > dropout > dropout + max-norm), each gap above the seed spread ({text})."
    if words <= {"above the spread", "within the spread"}:
        return f"Matches in direction: the paper's ordering, but not every gap is above the seed spread ({text})."
    return f"Does not match: the test errors are not in the paper's order, a step is tied or reversed ({text})."


TIE = 1e-9


def _step(gap: float, spread: float, several_seeds: bool) -> str:
    """How one step down from a variant to the next came out."""
    if gap <= TIE:
        return "tied" if abs(gap) <= TIE else "reversed"
    return "above the spread" if several_seeds and gap > spread else "within the spread"
