"""The ``tricklab`` command: train, resume, evaluate, demo, data fetch (and the lab's commands).

    tricklab train CONFIG [--set section.key=value ...] [--out DIR]
    tricklab train --resume DIR [--restart] [--set train.epochs=N]
    tricklab evaluate DIR
    tricklab predict RUN INPUT.npz|INPUT.csv --out PREDICTIONS.npy|.csv [--output auto|class|proba|raw]
    tricklab summary CONFIG [--set ...]
    tricklab demo [--data mnist1d|mnist] [--epochs N]
    tricklab data fetch [mnist|fashion ...] [--root DIR]
    tricklab --version;  tricklab --debug COMMAND ...   (or TRICKLAB_DEBUG=1: tracebacks)

Expected failures (a bad file, key or argument; a full disk; no network) end with one line
``tricklab: error: ...`` and exit status 2; a traceback only with ``--debug`` or ``TRICKLAB_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from pathlib import Path

from . import __version__
from . import config as config_
from .errors import TricklabError
from .train.checkpoint import CheckpointError
from .train.trainer import NonFiniteError

EXTENSIONS = ("tricklab.lab.cli",)  # modules with register(subparsers): sweep, ablate, reproduce, report
# What a user can cause and fix; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (TricklabError, config_.ConfigError, CheckpointError, NonFiniteError, OSError)


def _default_out(cfg: dict) -> Path:
    from datetime import datetime

    return Path("runs") / f"{cfg['run']['name']}-{datetime.now():%Y%m%d-%H%M%S}"


def cmd_train(args) -> int:
    from .experiment import train_run

    if args.resume:
        run_dir = Path(args.resume)
        _check_resume_arguments(args, run_dir)
        if not (run_dir / "config.toml").exists():
            raise FileNotFoundError(f"{run_dir / 'config.toml'} does not exist: is {run_dir} a run folder?")
        cfg = config_.load(run_dir / "config.toml", args.set)
        metrics = train_run(cfg, run_dir, resume=True, restart=args.restart)
    else:
        if args.restart:
            raise config_.ConfigError("--restart goes with --resume DIR: it trains DIR again from epoch 1 when DIR "
                                      "holds no usable checkpoint")
        if not args.config:
            raise config_.ConfigError("tricklab train needs CONFIG (a TOML file) or --resume DIR")
        cfg = config_.load(args.config, args.set)
        run_dir = Path(args.out) if args.out else _default_out(cfg)
        metrics = train_run(cfg, run_dir)
    print(json.dumps(metrics, indent=2))
    return 0


def _check_resume_arguments(args, run_dir: Path) -> None:
    """A resumed run keeps its folder and configuration; only ``--set train.epochs=N`` extends it."""
    from .experiment import EXTENSIBLE

    if args.config:
        raise config_.ConfigError(f"tricklab train --resume DIR takes its configuration from {run_dir / 'config.toml'}; "
                                  "do not pass CONFIG (to extend the run: --set train.epochs=N)")
    if args.out:
        raise config_.ConfigError(f"--out does not apply with --resume: the run stays in {run_dir}")
    for item in args.set:
        key = item.split("=", 1)[0].strip()
        if "=" in item and key not in EXTENSIBLE:
            raise config_.ConfigError(f"--set {key}: only {', '.join(EXTENSIBLE)} may change when resuming (the rest "
                                      f"comes from {run_dir / 'config.toml'}); start a new run to change {key}")


def cmd_evaluate(args) -> int:
    from .experiment import evaluate_run

    print(json.dumps(evaluate_run(args.run_dir), indent=2))
    return 0


def cmd_predict(args) -> int:
    from .runs import predict_file

    path, n = predict_file(args.run_dir, args.input, args.out, output=args.output, batch_size=args.batch_size)
    print(f"{n} predictions -> {path}", file=sys.stderr)
    return 0


def cmd_summary(args) -> int:
    from .experiment import model_summary

    print(model_summary(config_.load(args.config, args.set)))
    return 0


def cmd_grade(args) -> int:
    from .grade.assignments import ASSIGNMENTS
    from .grade.core import grade

    if args.list:
        for spec in ASSIGNMENTS.values():
            print(f"{spec.name}: {spec.summary} (implement {spec.target})")
            for check in spec.checks:
                print(f"    {check.points:>2} point{'s' if check.points != 1 else ' '}  {check.name}")
        return 0
    if not args.submission or not args.assignment:
        raise config_.ConfigError("tricklab grade needs SUBMISSION and --assignment NAME (tricklab grade --list "
                                  "shows the assignments)")
    result = grade(args.submission, args.assignment, class_name=args.class_name, seed=args.seed,
                   timeout=args.timeout)
    print(result.report())
    if args.json:
        from .fileio import atomic_write_bytes

        atomic_write_bytes(Path(args.json), (json.dumps(result.to_gradescope(), indent=2) + "\n").encode())
    return 0 if result.passed else 1


def cmd_assignment(args) -> int:
    from .grade.starter import write_starter

    for path in write_starter(args.name, args.folder):
        print(path)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(data=args.data, epochs=args.epochs, out=args.out)
    return 0


def cmd_data(args) -> int:
    from .data.__main__ import fetch

    return fetch(args.kinds, args.root)


class Parser(argparse.ArgumentParser):
    """argparse with a did-you-mean for a mistyped choice: a subcommand or an option's value."""

    def _check_value(self, action, value):
        if action.choices is not None and value not in action.choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in action.choices], n=1)
            if close:
                raise argparse.ArgumentError(action, f"invalid choice: {value!r}; did you mean {close[0]!r}?")
        super()._check_value(action, value)


def build_parser() -> argparse.ArgumentParser:
    from .data.__main__ import add_fetch_arguments, fetch_description

    parser = Parser(prog="tricklab", description="Train neural networks with the tricks of the trade.")
    parser.add_argument("--version", action="version", version=f"tricklab {__version__}",
                        help="print the version and exit")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an expected error too (or set TRICKLAB_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of the commands below; `tricklab COMMAND --help` lists its arguments")

    train = sub.add_parser("train", help="train a configuration (or resume a run)")
    train.add_argument("config", nargs="?", help="TOML configuration file")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a configuration key, e.g. --set optimizer.lr=0.01")
    train.add_argument("--out", help="run folder (default: runs/NAME-TIMESTAMP)")
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint; "
                       "with --set train.epochs=N extend a finished run to N epochs (no other --set)")
    train.add_argument("--restart", action="store_true",
                       help="with --resume: train DIR again from epoch 1 if it holds no usable checkpoint "
                            "(without it such a --resume is refused)")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="score a finished run on its validation and test splits")
    ev.add_argument("run_dir", metavar="RUN", help="a finished run folder (holding config.toml and model.npz)")
    ev.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="apply a finished run's normalizer and model to new inputs")
    pr.add_argument("run_dir", metavar="RUN", help="a finished run folder (holding config.toml and model.npz)")
    pr.add_argument("input", metavar="INPUT", help="inputs: an .npz archive (array x) or a .csv table "
                    "(a CSV run's feature columns, by name; other columns are ignored)")
    pr.add_argument("--out", required=True, help="where to write the predictions: a .npy or a .csv file")
    pr.add_argument("--output", default="auto", choices=("auto", "class", "proba", "raw"),
                    help="class indices, class probabilities or the model's raw outputs (default: classes for "
                         "classification, values for regression)")
    pr.add_argument("--batch-size", type=int, default=1024, help="examples per forward pass (default 1024)")
    pr.set_defaults(func=cmd_predict)

    gr = sub.add_parser("grade", help="grade a student's implementation against tricklab's reference")
    gr.add_argument("submission", nargs="?", metavar="SUBMISSION", help="the student's Python file")
    gr.add_argument("--assignment", help="the assignment to grade (tricklab grade --list shows them)")
    gr.add_argument("--class", dest="class_name", metavar="NAME",
                    help="the class (or function) to grade, if not named as the reference")
    gr.add_argument("--json", metavar="FILE", help="also write Gradescope's results.json format to FILE")
    gr.add_argument("--seed", type=int, default=0, help="seed of the random inputs (a rerun with it repeats them)")
    gr.add_argument("--timeout", type=float, default=20.0, help="seconds each check may run (default 20)")
    gr.add_argument("--list", action="store_true", help="list the assignments and their checks")
    gr.set_defaults(func=cmd_grade)

    asg = sub.add_parser("assignment", help="assignments for a course: write a starter file to hand out")
    asg_sub = asg.add_subparsers(dest="assignment_command", required=True, metavar="COMMAND",
                                 help="new: write an assignment's starter file and README")
    new = asg_sub.add_parser("new", help="write the starter file (class skeleton with the equations) and a README")
    new.add_argument("name", metavar="NAME", help="the assignment (tricklab grade --list shows them)")
    new.add_argument("folder", metavar="DIR", help="the folder to write into")
    new.set_defaults(func=cmd_assignment)

    sm = sub.add_parser("summary", help="print a configuration's model: each layer, its output shape and "
                        "parameter count, without training")
    sm.add_argument("config", metavar="CONFIG", help="TOML configuration file")
    sm.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a configuration key, e.g. --set model.layers.0.out_features=128")
    sm.set_defaults(func=cmd_summary)

    demo = sub.add_parser("demo", help="a plain MLP against the same MLP with the lecture's tricks")
    demo.add_argument("--data", default="mnist1d", choices=("mnist1d", "mnist", "fashion"),
                      help="data set (default: mnist1d, generated offline; mnist and fashion need the files, "
                           "see `tricklab data fetch`)")
    demo.add_argument("--epochs", type=int, default=None, help="epochs per model (default: the demo's own)")
    demo.add_argument("--out", default=None, help="folder for the two runs, the comparison figure and "
                                                  "report.html (default: runs/demo)")
    demo.set_defaults(func=cmd_demo)

    data = sub.add_parser("data", help="data sets: fetch MNIST and Fashion-MNIST")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND", help="fetch")
    fetch = data_sub.add_parser("fetch", help="download MNIST / Fashion-MNIST and verify the checksums",
                                description=fetch_description(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_fetch_arguments(fetch)
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


def _debug(args) -> bool:
    return args.debug or os.environ.get("TRICKLAB_DEBUG", "") not in ("", "0")


def _output_of(args) -> str | None:
    """The folder a command writes to: named for an OS error that names no file (a full disk)."""
    for name in ("out", "resume", "root", "run_dir", "dir"):
        if getattr(args, name, None):
            return str(getattr(args, name))
    return "runs" if args.command in ("train", "demo") else None


def error_message(exc: BaseException, args) -> str:
    """One line: the message, or for an OS error the file (else the output folder) and the reason."""
    if isinstance(exc, OSError) and exc.strerror:  # str() would read "[Errno 28] ...: 'path'"
        files = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
        where = _output_of(args)
        text = (f"{' -> '.join(files)}: {exc.strerror}" if files
                else f"{exc.strerror} (writing under {where})" if where else exc.strerror)
    else:
        text = str(exc) or type(exc).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `tricklab grade --list | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    except EXPECTED_ERRORS as exc:
        if _debug(args):
            raise
        print(f"tricklab: error: {error_message(exc, args)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
