"""The ``tricklab`` command: train, resume, evaluate, demo, data fetch (and the lab's commands).

    tricklab train CONFIG [--set section.key=value ...] [--out DIR]
    tricklab train --resume DIR
    tricklab evaluate DIR
    tricklab demo [--data mnist1d|mnist] [--epochs N]
    tricklab data fetch [mnist|fashion ...] [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import config as config_
from .train.checkpoint import CheckpointError
from .train.trainer import NonFiniteError

EXTENSIONS = ("tricklab.lab.cli",)  # modules with register(subparsers): sweep, ablate, reproduce, report


def _default_out(cfg: dict) -> Path:
    from datetime import datetime

    return Path("runs") / f"{cfg['run']['name']}-{datetime.now():%Y%m%d-%H%M%S}"


def cmd_train(args) -> int:
    from .experiment import train_run

    if args.resume:
        run_dir = Path(args.resume)
        if args.config or args.set:
            raise SystemExit("tricklab train --resume DIR takes its configuration from DIR/config.toml; "
                             "do not pass CONFIG or --set")
        if not (run_dir / "config.toml").exists():
            raise SystemExit(f"{run_dir / 'config.toml'} does not exist: is {run_dir} a run folder?")
        cfg = config_.load(run_dir / "config.toml")
        metrics = train_run(cfg, run_dir, resume=True)
    else:
        if not args.config:
            raise SystemExit("tricklab train needs CONFIG (a TOML file) or --resume DIR")
        cfg = config_.load(args.config, args.set)
        run_dir = Path(args.out) if args.out else _default_out(cfg)
        metrics = train_run(cfg, run_dir)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_evaluate(args) -> int:
    from .experiment import evaluate_run

    print(json.dumps(evaluate_run(args.run_dir), indent=2))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(data=args.data, epochs=args.epochs, out=args.out)
    return 0


def cmd_data(args) -> int:
    from .data.__main__ import main as data_main

    return data_main(["fetch", *args.kinds] + (["--root", args.root] if args.root else []))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tricklab", description="Train neural networks with the tricks of the trade.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a configuration (or resume a run)")
    train.add_argument("config", nargs="?", help="TOML configuration file")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a configuration key, e.g. --set optimizer.lr=0.01")
    train.add_argument("--out", help="run folder (default: runs/NAME-TIMESTAMP)")
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="score a finished run on its validation and test splits")
    ev.add_argument("run_dir")
    ev.set_defaults(func=cmd_evaluate)

    demo = sub.add_parser("demo", help="a plain MLP against the same MLP with the lecture's tricks")
    demo.add_argument("--data", default="mnist1d", choices=("mnist1d", "mnist", "fashion"))
    demo.add_argument("--epochs", type=int, default=None, help="epochs per model (default: the demo's own)")
    demo.add_argument("--out", default=None, help="keep the two run folders here")
    demo.set_defaults(func=cmd_demo)

    data = sub.add_parser("data", help="data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="download MNIST / Fashion-MNIST and verify the checksums")
    fetch.add_argument("kinds", nargs="*", default=["mnist"])
    fetch.add_argument("--root", default=None)
    fetch.set_defaults(func=cmd_data)

    for name in EXTENSIONS:
        try:
            module = __import__(name, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (config_.ConfigError, FileNotFoundError, FileExistsError, NonFiniteError, CheckpointError) as exc:
        print(f"tricklab: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
