"""Time tricklab against its PyTorch twin and against the matrix-product floor, in one process.

    python -m benchmarks.run                      # every case, 5 timed epochs each, full MNIST
    python -m benchmarks.run --quick              # 10,000 examples, 3 epochs: a smoke run
    python -m benchmarks.run --cases mlp-bn-dropout,small-sigmoid-bn --epochs 7

The machine these run on is shared and has slow phases lasting seconds to tens of seconds, so
absolute times drift: tricklab, PyTorch and the floor run their epochs in the same rounds, taking
turns of ``--turn`` steps (the order reversed every round), and what is compared is the ratio of
their epoch times within a round. Each case reports seconds per epoch (median, min-max), the
per-round ratio tricklab/PyTorch (median and min) and the ratio to the floor: the same epoch doing
only the step's matrix products (three per Linear layer, the issue's 6 x weights FLOPs), through
NumPy's BLAS, with preallocated operands; the same products through torch are timed too. Warm-up
steps (numba compilation, allocator growth) are not timed. Both sides get the same thread count
(``--threads``, default all cores), set with threadpoolctl and ``torch.set_num_threads``; the
BLAS libraries, their kernels and threads are printed. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=5, help="timed epochs per side and case (default 5)")
    p.add_argument("--quick", action="store_true", help="10,000 examples and 3 epochs per case")
    p.add_argument("--examples", type=int, default=None, help="use the first N training examples")
    p.add_argument("--cases", default="all", help="comma-separated case names (default: all); see --list")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="BLAS / torch threads (default: all cores)")
    p.add_argument("--kernels", choices=("numba", "numpy"), default=None,
                   help="tricklab's elementwise kernels (sets TRICKLAB_KERNELS; default: numba if importable)")
    p.add_argument("--trainer", action="store_true",
                   help="time tricklab through the Trainer's per-batch work (train_step and the metric update) "
                        "and, in the same rounds, the bare loop ('bare'); their ratio is the Trainer's overhead")
    p.add_argument("--probe", type=int, default=0, metavar="N",
                   help="with --trainer: the Trainer side also runs a Probe(every=N) callback (its cost)")
    p.add_argument("--warmup", type=int, default=20, help="untimed warm-up steps per side (default 20)")
    p.add_argument("--turn", type=int, default=20,
                   help="steps per turn when the sides alternate within an epoch (default 20; 0: whole epochs)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--no-augment", action="store_true", help="skip the input-pipeline measurement")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs = min(args.epochs, 3)
        args.examples = args.examples or 10_000
    return args


# ------------------------------------------------------------------------------------ data
def data_root() -> Path:
    env = os.environ.get("TRICKLAB_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def load_data(examples: int | None, seed: int = 0):
    """Standardized MNIST training images (N, 784) float32 and labels; random data if absent."""
    from tricklab.data import load_mnist

    try:
        images, labels = load_mnist("train", root=data_root())
        source = f"MNIST train ({data_root()})"
    except (FileNotFoundError, ValueError) as err:
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, size=(60_000, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=60_000)
        source = f"RANDOM data (MNIST not found: {str(err).splitlines()[0][:80]})"
    if examples:
        images, labels = images[:examples], labels[:examples]
    X = images.reshape(len(images), -1).astype(np.float32) / np.float32(255)
    X -= X.mean()
    X /= X.std()
    return np.ascontiguousarray(X, dtype=np.float32), labels.astype(np.int64), images, source


# ------------------------------------------------------------------------------------ sides
# Each side's ``steps()`` is one epoch as a generator that yields after every step, so that the
# sides can take turns within an epoch (see ``interleave``).
class TricklabTrain:
    """A tricklab epoch: the bare loop, or with ``trainer=True`` what ``Trainer.train_epoch`` does per
    batch (``train_step``, whose finiteness checks and parameter-only backward it times, and the
    metric update; the progress bar is off)."""

    def __init__(self, model, loss, opt, loader, trainer: bool = False, probe_every: int = 0):
        self.model, self.loss, self.opt, self.loader = model, loss, opt, loader
        self.trainer = None
        if trainer:
            from tricklab.train import Probe, Trainer

            self.trainer = Trainer(model, loss, opt, progress=False, log=lambda msg: None)
            self.callbacks = self.trainer._callbacks_for_fit([Probe(every=probe_every)] if probe_every else [])
            self.callbacks.on_train_begin({})
            self.batch = 0

    def step(self, xb, yb):
        if self.trainer is not None:  # Trainer.train_epoch's body: hooks, step, metric
            value, _ = self.trainer.train_batch(self.batch, xb, yb, self.callbacks)
            self.batch += 1
            return value
        self.opt.zero_grad()
        out = self.model(xb)
        value = self.loss(out, yb)
        self.model.backward(self.loss.backward())
        self.opt.step()
        return value

    def steps(self):
        self.model.train()
        for xb, yb in self.loader:
            self.step(xb, yb)
            yield


class TorchTrain:
    def __init__(self, model, opt, loader):
        import torch

        self.torch, self.model, self.opt, self.loader = torch, model, opt, loader
        self.loss = torch.nn.CrossEntropyLoss()

    def steps(self):
        torch = self.torch
        self.model.train()
        for xb, yb in self.loader:
            self.opt.zero_grad()
            out = self.model(torch.from_numpy(xb))
            loss = self.loss(out, torch.from_numpy(yb))
            loss.backward()
            self.opt.step()
            loss.item()
            yield


class LoaderOnly:
    """Only the input pipeline: iterate the loader (and its augmentation)."""

    def __init__(self, loader):
        self.loader = loader

    def steps(self):
        for _ in self.loader:
            yield


class TricklabInfer:
    """Eval forwards in ``nn.inference_mode`` (nothing kept for backward, reused output arrays), as
    the torch side runs in ``torch.inference_mode``."""

    def __init__(self, model, X, batch):
        self.model, self.X, self.batch = model.eval(), X, batch

    def steps(self):
        from tricklab.nn import inference_mode

        for i in range(0, len(self.X), self.batch):
            with inference_mode():
                self.model(self.X[i:i + self.batch])
            yield


class TorchInfer:
    def __init__(self, model, X, batch):
        import torch

        self.torch, self.model, self.X, self.batch = torch, model.eval(), X, batch

    def steps(self):
        for i in range(0, len(self.X), self.batch):
            with self.torch.inference_mode():
                self.model(self.torch.from_numpy(self.X[i:i + self.batch]))
            yield


class MatmulFloor:
    """The epoch's matrix products alone (float32, preallocated operands and outputs), through
    NumPy's BLAS (the floor tricklab is measured against) or, with ``torch=True``, torch's."""

    def __init__(self, case, batch_sizes, rng, torch=False):
        from .cases import flops, products

        self.batch_sizes = list(batch_sizes)
        self.ops = {}
        convert = (lambda a: __import__("torch").from_numpy(a)) if torch else (lambda a: a)
        self.matmul = __import__("torch").matmul if torch else np.matmul
        for b in set(self.batch_sizes):
            ops = []
            for (m, k), (_, n), layout in products(case, b):
                a = convert(rng.standard_normal((k, m) if layout[0] == "t" else (m, k), dtype=np.float32))
                w = convert(rng.standard_normal((n, k) if layout[1] == "t" else (k, n), dtype=np.float32))
                ops.append((a.T if layout[0] == "t" else a, w.T if layout[1] == "t" else w,
                            convert(np.empty((m, n), dtype=np.float32))))
            self.ops[b] = ops
        self.flops = sum(flops(products(case, b)) for b in self.batch_sizes)

    def steps(self):
        matmul = self.matmul
        for b in self.batch_sizes:
            for a, w, out in self.ops[b]:
                matmul(a, w, out=out)
            yield


def interleave(sides: dict, epochs: int, warmup: int, turn: int) -> dict[str, list[float]]:
    """Seconds per epoch of every side, over ``epochs`` rounds in which each side runs one epoch.

    Within a round the sides take turns of ``turn`` steps (0: a whole epoch per turn), so that a
    slow phase of the machine (they last seconds to tens of seconds) slows every side alike and
    the per-round ratios stay meaningful; the order is reversed every round. Before the rounds
    each side runs ``warmup`` untimed steps (compilation, allocator growth, caches).
    """
    for side in sides.values():
        for _, _ in zip(range(warmup), side.steps()):
            pass
    times = {name: [] for name in sides}
    names = list(sides)
    for r in range(epochs):
        order = names if r % 2 == 0 else names[::-1]
        running = {name: sides[name].steps() for name in order}
        elapsed = dict.fromkeys(order, 0.0)
        gc.collect()
        while running:
            for name in list(running):
                steps = running[name]
                start = time.perf_counter()
                finished = _advance(steps, turn)
                elapsed[name] += time.perf_counter() - start
                if finished:
                    del running[name]
        for name in names:
            times[name].append(elapsed[name])
    return times


def _advance(steps, turn: int) -> bool:
    """Run ``turn`` steps of a generator (all if 0); True once it is exhausted."""
    n = 0
    for _ in steps:
        n += 1
        if turn and n >= turn:
            return False
    return True


# ------------------------------------------------------------------------------------ cases
def batch_sizes(n: int, batch: int) -> list[int]:
    return [min(batch, n - i) for i in range(0, n, batch)]


def case_sides(case, X, y, trainer: bool = False, probe_every: int = 0) -> dict:
    """The sides of a case: tricklab, torch, the floor and torch's floor; with ``trainer`` (training
    cases) tricklab goes through the Trainer and "bare" is the bare loop on a second copy of the
    model, same weights, dropout generators and minibatches. The Trainer's copy is built as a user
    builds it (``input_grad=True``), the bare loop's with ``input_grad=False``."""
    from tricklab.data import DataLoader

    from .cases import IMAGE, build

    if case.examples:
        X, y = X[:case.examples], y[:case.examples]
    if case.kind == "conv":
        X = X.reshape(len(X), *IMAGE)
    model, loss, opt, twin, topt = build(case, np.random.default_rng(0), input_grad=trainer)
    sizes = batch_sizes(len(X), case.batch_size)
    floor_rng = np.random.default_rng(2)
    if case.mode == "infer":
        sides = {"tricklab": TricklabInfer(model, X, case.batch_size),
                 "torch": TorchInfer(twin, X, case.batch_size)}
    else:
        sides = {"tricklab": TricklabTrain(model, loss, opt, DataLoader(X, y, case.batch_size, rng=1),
                                           trainer=trainer, probe_every=probe_every)}
        if trainer:
            bare, bare_loss, bare_opt, _, _ = build(case, np.random.default_rng(0))
            sides["bare"] = TricklabTrain(bare, bare_loss, bare_opt, DataLoader(X, y, case.batch_size, rng=1))
        sides["torch"] = TorchTrain(twin, topt, DataLoader(X, y, case.batch_size, rng=1))
    sides.update(floor=MatmulFloor(case, sizes, floor_rng), torch_floor=MatmulFloor(case, sizes, floor_rng, torch=True))
    return sides


def run_case(case, X, y, args) -> dict:
    sides = case_sides(case, X, y, trainer=args.trainer, probe_every=args.probe if args.trainer else 0)
    times = interleave(sides, args.epochs, args.warmup, args.turn)
    return summarize(case, times, sides["floor"].flops)


def run_augment(case, X, y, images, args) -> dict:
    """Tricklab's epoch with an augmenting loader against the same epoch without, and the loader alone."""
    from tricklab.data import Compose, DataLoader, RandomRotation, RandomTranslation

    from .cases import build

    mean, std = float((images / 255.0).mean()), float((images / 255.0).std())
    raw = images.reshape(len(images), -1).astype(np.float32) / np.float32(255)
    pipeline = Compose([RandomRotation(10.0), RandomTranslation(2)])

    def augment(xb, rng):
        xb = pipeline(xb, rng)
        xb -= np.float32(mean)
        xb /= np.float32(std)
        return xb

    rng = np.random.default_rng(0)
    model, loss, opt, _, _ = build(case, rng)
    plain = TricklabTrain(model, loss, opt, DataLoader(X, y, case.batch_size, rng=1))
    augmented = TricklabTrain(model, loss, opt, DataLoader(raw, y, case.batch_size, rng=2, transform=augment))
    loader = LoaderOnly(DataLoader(raw, y, case.batch_size, rng=3, transform=augment))
    times = interleave({"plain": plain, "augmented": augmented, "loader": loader}, args.epochs, args.warmup,
                       args.turn)
    ratio = [a / p for a, p in zip(times["augmented"], times["plain"])]
    share = [lo / a for lo, a in zip(times["loader"], times["augmented"])]
    return {"case": case.name, "title": case.title, "times": times,
            "plain": _stats(times["plain"]), "augmented": _stats(times["augmented"]),
            "loader": _stats(times["loader"]), "augmented_over_plain": _stats(ratio),
            "loader_share": _stats(share)}


def _stats(values) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(case, times: dict, floor_flops: float) -> dict:
    t, p, f = times["tricklab"], times["torch"], times["floor"]
    return {
        "case": case.name, "title": case.title, "times": times,
        "tricklab": _stats(t), "torch": _stats(p), "floor": _stats(f),
        "vs_torch": _stats([a / b for a, b in zip(t, p)]),
        "vs_floor": _stats([a / b for a, b in zip(t, f)]),
        "torch_vs_floor": _stats([a / b for a, b in zip(p, f)]),
        "torch_floor": _stats(times["torch_floor"]),
        "torch_floor_vs_floor": _stats([a / b for a, b in zip(times["torch_floor"], f)]),
        "floor_gflops": floor_flops / statistics.median(f) / 1e9,
        **({"bare": _stats(times["bare"]), "trainer_vs_bare": _stats([a / b for a, b in zip(t, times["bare"])])}
           if "bare" in times else {}),
    }


# ------------------------------------------------------------------------------------ memory
def measure_memory(case_name: str, args) -> dict:
    out = {}
    for side in ("tricklab", "torch"):
        cmd = [sys.executable, "-m", "benchmarks.memory", "--case", case_name, "--side", side,
               "--threads", str(args.threads)]
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=os.environ.copy())
        if res.returncode != 0:
            out[side] = {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
        else:
            out[side] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


# ------------------------------------------------------------------------------------ report
def environment(threads: int) -> dict:
    import torch
    from threadpoolctl import threadpool_info

    from tricklab.nn import _kernels

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = [f"{d.get('internal_api')} {d.get('version')} kernel={d.get('architecture')} "
            f"threads={d.get('num_threads')} ({Path(d.get('filepath', '')).name})" for d in threadpool_info()]
    config = torch.__config__.show()
    found = re.search(r"BLAS_INFO=(\w+)", config)
    mkl = re.search(r"Math Kernel Library Version ([\w.]+)", config)
    torch_blas = (found.group(1) if found else "?") + (f" {mkl.group(1)}" if mkl else "")
    return {
        "date": datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": f"{model}, {os.cpu_count()} cores",
        "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
        "threads": threads, "torch_threads": torch.get_num_threads(), "torch_blas": torch_blas,
        "blas": blas, "tricklab_kernels": _kernels.backend(), "load_average": os.getloadavg(),
    }


def fmt(s: dict, digits: int = 2) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def markdown(env: dict, results: list[dict], aug: dict | None, memory: dict | None, meta: dict) -> str:
    lines = [
        f"Date {env['date']}; {env['machine']}; Python {env['python']}, NumPy {env['numpy']}, "
        f"PyTorch {env['torch']} (BLAS: {env['torch_blas']}, {env['torch_threads']} threads); "
        f"tricklab kernels: {env['tricklab_kernels']}; load average at start {meta['load_start']}, "
        f"at end {meta['load_end']}.",
        "",
        "BLAS (threadpoolctl): " + "; ".join(env["blas"]),
        "",
        f"Data: {meta['data']}, {meta['examples']} examples; {meta['epochs']} timed epochs per side, "
        f"{meta['warmup']} warm-up steps; tricklab through " + (f"the Trainer (train_batch: callbacks' batch hooks, "
                                                                 f"train_step and the metric update{meta['probe']}; "
                                                                 "the bare loop beside it)." if meta["trainer"] else
                                                                 "the zero_grad/forward/loss/backward/step loop."),
        "",
        "| case | tricklab s/epoch | PyTorch s/epoch | floor s/epoch (GFLOP/s) | tricklab/PyTorch median (min) "
        "| tricklab/floor median (min) | PyTorch/floor median | torch's products/floor median |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['case']} | {fmt(r['tricklab'])} | {fmt(r['torch'])} | {r['floor']['median']:.2f} "
            f"({r['floor_gflops']:.0f}) | {r['vs_torch']['median']:.2f} ({r['vs_torch']['min']:.2f}) "
            f"| {r['vs_floor']['median']:.2f} ({r['vs_floor']['min']:.2f}) | {r['torch_vs_floor']['median']:.2f} "
            f"| {r['torch_floor_vs_floor']['median']:.2f} |")
    trained = [r for r in results if "trainer_vs_bare" in r]
    if trained:
        lines += ["", "| case | Trainer s/epoch | bare loop s/epoch | Trainer/bare median (min-max) |",
                  "|---|---|---|---|"]
        lines += [f"| {r['case']} | {fmt(r['tricklab'])} | {fmt(r['bare'])} | {fmt(r['trainer_vs_bare'], 3)} |"
                  for r in trained]
    if aug is not None:
        lines += ["", "| input pipeline (tricklab, mlp-bn-dropout) | s/epoch |", "|---|---|",
                  f"| plain epoch | {fmt(aug['plain'])} |",
                  f"| augmented epoch (rotation +-10 deg, shift +-2 px) | {fmt(aug['augmented'])} |",
                  f"| the augmenting loader alone | {fmt(aug['loader'])} |",
                  f"| augmented / plain | {fmt(aug['augmented_over_plain'])} |",
                  f"| loader share of the augmented epoch | {fmt(aug['loader_share'])} |"]
    if memory is not None:
        lines += ["", "| peak memory, mlp-bn-dropout training | step's working memory (MiB) | peak RSS (MiB) "
                  "| warm-up step: gradients, optimizer state, compiled kernels (MiB) |", "|---|---|---|---|"]
        for side, m in memory.items():
            if "error" in m:
                lines.append(f"| {side} | {m['error']} | | |")
            else:
                lines.append(f"| {side} | {m['growth_mib']:.0f} | {m['peak_mib']:.0f} | {m['warmup_mib']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.kernels:
        os.environ["TRICKLAB_KERNELS"] = args.kernels
    from threadpoolctl import threadpool_limits

    import torch

    from .cases import AUGMENT_CASE, CASES, lstm_available

    if args.list:
        for c in CASES + [AUGMENT_CASE]:
            print(f"{c.name:28s} {c.title}")
        return 0
    wanted = [c.name for c in CASES] if args.cases == "all" else [s.strip() for s in args.cases.split(",")]
    unknown = set(wanted) - {c.name for c in CASES + [AUGMENT_CASE]}
    if unknown:
        raise SystemExit(f"unknown case(s) {sorted(unknown)}; --list shows the cases")
    torch.set_num_threads(args.threads)
    load_start = tuple(round(v, 1) for v in os.getloadavg())
    X, y, images, source = load_data(args.examples)
    meta = {"data": source, "examples": len(X), "epochs": args.epochs, "warmup": args.warmup,
            "trainer": args.trainer, "load_start": load_start,
            "probe": f", with a Probe(every={args.probe}) callback" if args.trainer and args.probe else ""}
    results, aug, memory = [], None, None
    with threadpool_limits(limits=args.threads):
        env = environment(args.threads)
        print("\n".join(f"{k}: {v}" for k, v in env.items()), flush=True)
        for case in CASES:
            if case.name not in wanted:
                continue
            if case.kind == "lstm" and not lstm_available():
                print(f"[{case.name}] skipped: tricklab.nn.recurrent.LSTM is not available", flush=True)
                continue
            print(f"[{case.name}] {case.title} ...", flush=True)
            results.append(run_case(case, X, y, args))
            r = results[-1]
            print(f"  tricklab {fmt(r['tricklab'])} s, torch {fmt(r['torch'])} s, floor {fmt(r['floor'])} s; "
                  f"tricklab/torch {fmt(r['vs_torch'])}, tricklab/floor {fmt(r['vs_floor'])}"
                  + (f"; Trainer/bare {fmt(r['trainer_vs_bare'], 3)}" if "trainer_vs_bare" in r else ""), flush=True)
        if not args.no_augment and (args.cases == "all" or AUGMENT_CASE.name in wanted):
            print(f"[{AUGMENT_CASE.name}] {AUGMENT_CASE.title} ...", flush=True)
            aug = run_augment(AUGMENT_CASE, X, y, images, args)
            print(f"  augmented/plain {fmt(aug['augmented_over_plain'])}", flush=True)
    if not args.no_memory and args.cases == "all":
        print("[memory] peak RSS of training, one subprocess per side ...", flush=True)
        memory = measure_memory("mlp-bn-dropout", args)
    meta["load_end"] = tuple(round(v, 1) for v in os.getloadavg())
    table = markdown(env, results, aug, memory, meta)
    print("\n" + table)
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "meta": meta, "results": results,
                                         "augment": aug, "memory": memory, "markdown": table}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
