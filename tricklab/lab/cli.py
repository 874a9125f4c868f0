"""The lab's commands, registered into ``tricklab`` (see tricklab/cli.py):

    tricklab sweep CONFIG --grid KEY=V1,V2 [--grid ...] [--range KEY=LO:HI[:log] ...]
                   [--sampler grid|random|tpe|cmaes] [--trials N] [--random N] [--sample-seed S]
                   [--pruner none|median|hyperband] [--storage URL]
                   [--seeds K] [--workers N] [--backend local|ray] [--address ADDR]
                   [--connect-timeout SECONDS] [--metric NAME] [--out DIR]
    tricklab ablate CONFIG --tricks batchnorm,dropout,...|Dropout,... [--seeds K] [--metric NAME]
                   [--target VALUE] [--on KEY=V]
    tricklab reproduce NAME [--quick] [--out DIR]        (tricklab reproduce --list)
    tricklab report DIR
"""

from __future__ import annotations

import inspect
import shlex
import sys
from pathlib import Path

from .. import config as config_


def _command() -> str:
    return "tricklab " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _load(args) -> dict:
    return config_.load(args.config, args.set)


def _fail(exc: Exception) -> int:
    print(f"tricklab: error: {exc}", file=sys.stderr)
    return 2


def cmd_sweep(args) -> int:
    from .grid import make_space
    from .sweep import run_sweep

    cfg = _load(args)
    space = make_space(args.grid, args.range)
    sampler, trials = args.sampler, args.trials
    if args.random:  # --random N: --sampler random --trials N
        if sampler not in (None, "random") or trials not in (None, args.random):
            raise config_.ConfigError(f"--random {args.random} is --sampler random --trials {args.random}; give "
                                      "either --random or --sampler and --trials")
        sampler, trials = "random", args.random
    elif args.random is not None and args.random < 1:
        raise config_.ConfigError(f"--random must be >= 1, got {args.random}")
    try:
        summary = run_sweep(cfg, space, out=args.out, seeds=args.seeds, workers=args.workers, backend=args.backend,
                            address=args.address, connect_timeout=args.connect_timeout, metric=args.metric,
                            sampler=sampler, trials=trials, pruner=args.pruner, sample_seed=args.sample_seed,
                            storage=args.storage, command=_command())
    except RuntimeError as exc:  # no Ray cluster at --address, nothing finished to select from
        return _fail(exc)
    if not args.no_report:
        from .report import write_report

        print(f"report: {write_report(summary['out'])}", file=sys.stderr)
    return 0 if not summary["failed"] else 1


def cmd_ablate(args) -> int:
    from .ablate import run_ablation

    cfg = _load(args)
    tricks = [t.strip() for t in args.tricks.split(",") if t.strip()]
    on = config_.apply_overrides({}, args.on)
    on = {f"{s}.{k}": v for s, table in on.items() for k, v in table.items()}
    try:
        summary = run_ablation(cfg, tricks, seeds=args.seeds, out=args.out, workers=args.workers,
                               backend=args.backend, address=args.address, connect_timeout=args.connect_timeout,
                               target=args.target, on=on, metric=args.metric, command=_command())
    except RuntimeError as exc:
        return _fail(exc)
    if not args.no_report:
        from .report import write_report

        print(f"report: {write_report(summary['out'])}", file=sys.stderr)
    return 0


def _trains_in_parallel(module) -> bool:
    return "workers" in inspect.signature(module.run).parameters


def cmd_reproduce(args) -> int:
    from . import reproduce

    if args.list or not args.name:
        for name in reproduce.MODULES:
            m = reproduce.get(name)
            print(f"{name:16s} {m.TITLE}")
        return 0 if args.list else 2
    try:
        m = reproduce.get(args.name)
    except KeyError as exc:
        return _fail(exc.args[0])
    size = "quick" if args.quick else "full"
    out = Path(args.out) if args.out else Path("runs") / f"reproduce-{args.name}-{size}"
    if args.workers < 1:
        return _fail(f"--workers must be at least 1, got {args.workers}")
    parallel = {"workers": args.workers} if args.workers != 1 else {}
    if parallel and not _trains_in_parallel(m):
        takes = ", ".join(n for n in reproduce.MODULES if _trains_in_parallel(reproduce.get(n)))
        return _fail(f"--workers: {args.name} runs its trainings in one process (--workers is for {takes})")
    doc = m.run(out, size=size, seed=args.seed, data_root=args.data_root,
                log=lambda msg: print(msg, file=sys.stderr, flush=True), **parallel)
    print((out / "table.md").read_text())
    if not args.no_report:
        from .report import write_report

        print(f"report: {write_report(out)}", file=sys.stderr)
    return 0 if doc else 1


def cmd_report(args) -> int:
    from .report import write_report

    print(write_report(args.dir))
    return 0


def _common(p, backend: bool = True) -> None:
    p.add_argument("config", help="TOML configuration file (the base of every trial)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key of the base")
    p.add_argument("--seeds", type=int, default=1 if backend else 3, metavar="K",
                   help=f"seeds per configuration: run.seed, ..., run.seed + K - 1 (default: {1 if backend else 3})")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="trials at once (default: the machine's cores)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="where trials run: a pool of processes on this machine, or Ray tasks (default: local)")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="Ray cluster to join (auto, or ray://HOST:10001); default: start a local Ray")
    p.add_argument("--connect-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="give up joining --address after this long if nothing answers there (default: 30)")
    p.add_argument("--metric", default=None, metavar="NAME",
                   help=("validation metric to rank by" if backend else "validation metric to tabulate") +
                   ": val_accuracy, val_error, val_loss (classification; default val_accuracy) or val_rmse, "
                   "val_r2, val_loss (loss.name = mse; default val_rmse)")
    p.add_argument("--out", default=None, metavar="DIR", help="folder (default: runs/<kind>-<name>-<hash of the command>)")
    p.add_argument("--no-report", action="store_true", help="skip writing report.html at the end")


def register(sub) -> None:
    sw = sub.add_parser("sweep", help="hyperparameter search, selected on the validation split")
    _common(sw)
    sw.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                    help="values to try for a key (TOML literals; commas inside [...] do not split)")
    sw.add_argument("--range", action="append", default=[], metavar="KEY=LO:HI[:log]",
                    help="interval to draw a numeric key from (with a sampler that draws: random, tpe, cmaes)")
    sw.add_argument("--sampler", choices=("grid", "random", "tpe", "cmaes"), default=None,
                    help="how the space is searched (Optuna's samplers): grid (every combination once; the default "
                         "without --range), random, tpe (the default with --trials or --range), cmaes")
    sw.add_argument("--trials", type=int, default=None, metavar="N",
                    help="configurations to try (default for grid: every combination); run again with a larger N "
                         "to extend the study")
    sw.add_argument("--random", type=int, default=None, metavar="N", help="N random points: --sampler random --trials N")
    sw.add_argument("--sample-seed", type=int, default=0, help="seed of the sampler's draws (default: 0)")
    sw.add_argument("--pruner", choices=("none", "median", "hyperband"), default="none",
                    help="stop hopeless trials from their per-epoch validation score: median rule, or Hyperband "
                         "(successive halving); pruned trials are recorded as pruned (default: none)")
    sw.add_argument("--storage", default=None, metavar="URL",
                    help="the Optuna study's database (default: sqlite:///OUT/sweep.db); e.g. "
                         "postgresql://user:password@host/db for workers on many machines")
    sw.set_defaults(func=cmd_sweep)

    ab = sub.add_parser("ablate", help="baseline, each trick alone, each trick removed; over seeds")
    _common(ab, backend=False)
    ab.add_argument("--tricks", required=True, metavar="T1,T2,...",
                    help="comma-separated: batchnorm,dropout,weight_decay,clipping,augmentation,input_norm,"
                         "early_stopping; with a [[model.layers]] model, also layer classes of its list "
                         "(Dropout,BatchNorm1d: off removes every layer of the class)")
    ab.add_argument("--target", type=float, default=None, metavar="VALUE",
                    help="value of the validation --metric for 'epochs to target' (an accuracy in [0, 1]; "
                         "default: what every baseline seed reaches)")
    ab.add_argument("--on", action="append", default=[], metavar="KEY=VALUE",
                    help="the value a trick's key takes when the trick is on, e.g. model.dropout=0.5")
    ab.set_defaults(func=cmd_ablate)

    rp = sub.add_parser("reproduce", help="reproduce a paper's figure (tricklab reproduce --list)")
    rp.add_argument("name", nargs="?", help="which reproduction")
    rp.add_argument("--list", action="store_true", help="list the reproductions")
    rp.add_argument("--quick", action="store_true", help="the small size (under two minutes)")
    rp.add_argument("--seed", type=int, default=0, help="seed of the reproduction's runs (default: 0)")
    rp.add_argument("--data-root", default=None, help="folder with the MNIST files (default: $TRICKLAB_DATA, cache)")
    rp.add_argument("--out", default=None, help="folder (default: runs/reproduce-NAME-SIZE)")
    rp.add_argument("--workers", type=int, default=1,
                    help="trainings run at once as processes, one BLAS thread each (dropout-mnist; default: 1)")
    rp.add_argument("--no-report", action="store_true", help="skip writing report.html at the end")
    rp.set_defaults(func=cmd_reproduce)

    rep = sub.add_parser("report", help="HTML page and PNG figures of a run, sweep, ablation or reproduction folder")
    rep.add_argument("dir", help="a run, sweep, ablation or reproduction folder; the page goes to DIR/report.html")
    rep.set_defaults(func=cmd_report)
