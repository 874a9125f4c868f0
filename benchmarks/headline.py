"""The README's headline accuracies, regenerated: each configuration trained with several seeds.

    python -m benchmarks.headline --out /tmp/headline                  # every case, seeds 0-2, 1 BLAS thread, 2 at once
    python -m benchmarks.headline --out /tmp/headline --cases mnist1d --threads 2 --jobs 1
    python -m benchmarks.headline --out /tmp/headline --cases mnist-cnn,fashion-cnn     # the conv nets (about 1 h)
    python -m benchmarks.headline --out /tmp/headline --table          # only the table, from finished runs

Every run is its own process (``tricklab train CONFIG --set run.seed=S --out DIR``) with the BLAS
thread count fixed through OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS before NumPy
loads, so ``--threads`` is what BLAS uses (MNIST-1D's accuracy moves by points with the thread
count: a different summation order in the products changes the trajectory). The demo's two
models are written out from ``tricklab.demo.demo_configs`` as TOML files and trained the same way.
A run folder that already holds ``metrics.json`` is not trained again, so an interrupted command
started again runs only what is missing.

The table is mean ± sample standard deviation (ddof = 1) over the seeds of test and validation
accuracy from each run's ``metrics.json``, the mean epochs run, the mean training seconds
(``seconds_training``: the epochs alone) and the mean wall time of the whole process (data
loading and the final scoring included), with the machine, thread count, kernel back end and BLAS
library stated above it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

from tricklab.stats import pm

REPO = Path(__file__).resolve().parent.parent
CONFIGS = {"mnist1d": "configs/mnist1d_mlp.toml", "mnist": "configs/mnist_mlp.toml",
           "fashion": "configs/fashion_mlp.toml", "fashion-cnn": "configs/fashion_cnn.toml",
           "mnist-cnn": "configs/mnist_cnn.toml"}
DEMO = ("demo-plain", "demo-tricks")
CASES = ("fashion-cnn", "mnist-cnn", "mnist", "fashion", "mnist1d", *DEMO)  # longest first: two at once finish together
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
CLI = "import sys; from tricklab.cli import main; sys.exit(main())"
ENVIRONMENT = """\
import json, numpy, threadpoolctl
from tricklab.nn import _kernels
blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
print(json.dumps({"numpy": numpy.__version__, "kernels": _kernels.backend(),
                  "blas": [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")} for i in blas]}))
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.headline", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the run folders and headline.md")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)} (default: all)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0 .. K-1 per case (default: 3)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads per run (default: 1)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (default: 2)")
    p.add_argument("--table", action="store_true", help="train nothing; print the table of the finished runs")
    args = p.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        p.error(f"--cases: unknown {', '.join(unknown)}; choose from {', '.join(CASES)}")
    for name in ("seeds", "threads", "jobs"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    return args


def thread_env(threads: int) -> dict[str, str]:
    return {**os.environ, **{name: str(threads) for name in THREAD_VARIABLES}}


def config_path(case: str, out: Path) -> Path:
    """The case's TOML file; the demo's models are written from ``demo_configs`` into ``out/configs``."""
    if case in CONFIGS:
        return REPO / CONFIGS[case]
    from tricklab import config as config_
    from tricklab.demo import demo_configs

    path = out / "configs" / f"{case}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_.dumps(demo_configs()[case.removeprefix("demo-")]))
    return path


def run_folder(out: Path, case: str, threads: int, seed: int) -> Path:
    return out / f"{case}-t{threads}-s{seed}"


def train_one(config: Path, folder: Path, seed: int, threads: int) -> None:
    """One ``tricklab train`` process; its wall time and thread count go to ``folder/wall.json``."""
    if (folder / "metrics.json").exists():
        return
    shutil.rmtree(folder, ignore_errors=True)  # an unfinished earlier attempt of this script's own
    folder.mkdir(parents=True)
    begin = time.perf_counter()
    with open(folder.with_name(folder.name + ".log"), "w") as log:
        subprocess.run([sys.executable, "-c", CLI, "train", str(config), "--set", f"run.seed={seed}",
                        "--out", str(folder)], cwd=REPO, env=thread_env(threads), stdout=log, stderr=log, check=True)
    wall = time.perf_counter() - begin
    (folder / "wall.json").write_text(json.dumps({"wall_seconds": wall, "blas_threads": threads,
                                                  "load_average": os.getloadavg()[0], "commit": commit()}))
    print(f"{folder.name}: {wall:.0f} s", file=sys.stderr, flush=True)


def commit() -> str:
    """The checkout's commit, with "+changes" when files under tricklab/ differ from it."""
    git = lambda *a: subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return (git("rev-parse", "--short", "HEAD") or "unknown") + ("+changes" if git("status", "--porcelain", "tricklab") else "")


def environment(threads: int) -> dict:
    """NumPy, the BLAS library and the kernel back end as a run with ``threads`` sees them."""
    done = subprocess.run([sys.executable, "-c", ENVIRONMENT], cwd=REPO, env=thread_env(threads),
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def case_row(out: Path, case: str, threads: int, seeds: int) -> str | None:
    folders = [run_folder(out, case, threads, s) for s in range(seeds)]
    done = [f for f in folders if (f / "metrics.json").exists() and (f / "wall.json").exists()]
    if not done:
        return None
    metrics = [json.loads((f / "metrics.json").read_text()) for f in done]
    walls = [json.loads((f / "wall.json").read_text())["wall_seconds"] for f in done]
    command = (f"`tricklab train {CONFIGS[case]}`" if case in CONFIGS else f"`tricklab demo`, {case.removeprefix('demo-')}")
    return (f"| {command} | {threads} | {len(done)} | {pm([m['test_accuracy'] for m in metrics], unit='')} "
            f"| {pm([m['val_accuracy'] for m in metrics], unit='')} "
            f"| {statistics.mean(m['epochs_run'] for m in metrics):.1f} "
            f"| {statistics.mean(m['seconds_training'] for m in metrics):.0f} | {statistics.mean(walls):.0f} |")


def table(out: Path, cases: list[str], threads_seen: list[int], seeds: int) -> str:
    env = {t: environment(t) for t in threads_seen}
    first = next(iter(env.values()))
    blas = ", ".join(f"{b['internal_api']} {b['version']} ({b['architecture']} kernel)" for b in first["blas"])
    walls = [json.loads(p.read_text()) for p in out.glob("*-t*-s*/wall.json")]
    loads = [w["load_average"] for w in walls]
    commits = sorted({w.get("commit", "unknown") for w in walls})
    lines = [f"{machine()}; NumPy {first['numpy']}, {blas}; {first['kernels']} kernels; {date.today().isoformat()}; "
             f"1-minute load average {min(loads):.1f}-{max(loads):.1f} as the runs ended; commit {', '.join(commits)}.", "",
             "| command | BLAS threads | seeds | test accuracy (%) | validation accuracy (%) | epochs run "
             "| training s | wall s |", "|---|---|---|---|---|---|---|---|"]
    for case in cases:
        for threads in threads_seen:
            row = case_row(out, case, threads, seeds)
            if row:
                lines.append(row)
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.table:
        jobs = [(config_path(case, out), run_folder(out, case, args.threads, s), s)
                for case in args.cases for s in range(args.seeds)]
        with ThreadPoolExecutor(args.jobs) as pool:
            for future in [pool.submit(train_one, config, folder, s, args.threads) for config, folder, s in jobs]:
                future.result()
    threads_seen = sorted({int(m[1]) for p in out.iterdir() if p.is_dir() and (m := re.fullmatch(r".+-t(\d+)-s\d+", p.name))})
    text = table(out, args.cases, threads_seen or [args.threads], args.seeds)
    (out / "headline.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
