"""Zoneout on row-by-row MNIST: an LSTM reads an image as 28 steps of 28 pixels, with and without zoneout.

Each run trains ``LSTM(28, 128)`` plus a linear read-out of the final hidden state on a seeded
subset of the training images (3,000 by default), with Adam (lr 2e-3, cosine-annealed to 0 over
30 epochs, batch 128, gradient norm clipped at 1), and reports accuracy on the full 10,000-image
test set. The zoneout run uses z_c = 0.5 on the cell and z_h = 0.05 on the hidden state, the
values Krueger et al. (2016) use for LSTMs; at test time the layer uses the expectation
s_t = z s_{t-1} + (1 - z) s~_t. Everything else (seed, subset, initialization, batches) is
shared between the two runs of a seed.

    python examples/zoneout_sequential_mnist.py           # 2 seeds x 2 runs, 1.5-3 min on 2 cores
    python examples/zoneout_sequential_mnist.py --quick   # smoke run, under 20 s
    python examples/zoneout_sequential_mnist.py --data /path/to/data   # holds mnist/*.gz

References:
    Krueger, D. et al. "Zoneout: Regularizing RNNs by Randomly Preserving Hidden Activations."
    ICLR 2017 (arXiv:1606.01305, 2016).
    Le, Q. V., Jaitly, N. and Hinton, G. E. "A simple way to initialize recurrent networks of
    rectified linear units." arXiv:1504.00941, 2015 (sequential MNIST).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# The matrices here are small (128 x 512): BLAS threads only add synchronization, and on a busy
# 2-core machine they made training several times slower. Set before NumPy loads OpenBLAS.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)

from tricklab import nn, optim  # noqa: E402
from tricklab.data import load_mnist  # noqa: E402
from tricklab.nn.recurrent import LSTM  # noqa: E402


def default_data_root() -> str:
    return os.environ.get("TRICKLAB_DATA") or os.path.normpath(os.path.join(REPO, "..", "shared", "data"))


def accuracy(lstm: LSTM, head: nn.Linear, X: np.ndarray, y: np.ndarray, batch: int = 1000) -> float:
    lstm.eval()
    correct = 0
    for i in range(0, len(X), batch):
        _, (h, _) = lstm(X[i:i + batch])
        correct += int((head(h[-1]).argmax(axis=1) == y[i:i + batch]).sum())
    lstm.train()
    return correct / len(X)


def run(X, y, X_test, y_test, zoneout_h: float, zoneout_c: float, seed: int, epochs: int, hidden: int,
        lr: float, batch: int) -> dict:
    rng = np.random.default_rng(seed)
    lstm = LSTM(28, hidden, zoneout_h=zoneout_h, zoneout_c=zoneout_c, rng=rng)
    head = nn.Linear(hidden, 10, rng=rng)
    lstm.rng = np.random.default_rng(seed + 1)  # masks from their own stream: the same batches in both runs
    params = list(lstm.parameters()) + list(head.parameters())
    opt = optim.Adam(params, lr=lr)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    ce = nn.CrossEntropyLoss()
    order = np.random.default_rng(seed + 2)
    start = time.time()
    for _ in range(epochs):
        losses = []
        for b in np.array_split(order.permutation(len(X)), max(len(X) // batch, 1)):
            _, (h, _) = lstm(X[b])
            losses.append(ce(head(h[-1]), y[b]))
            opt.zero_grad()
            grad_h = head.backward(ce.backward())
            lstm.backward(None, (grad_h[None], None))  # the loss reads only h_n
            optim.clip_grad_norm_(params, 1.0)
            opt.step()
        sched.step()
    train_secs = time.time() - start
    return dict(train_loss=float(np.mean(losses)), train_acc=accuracy(lstm, head, X, y),
                test_acc=accuracy(lstm, head, X_test, y_test), secs=train_secs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=default_data_root(),
                    help="folder holding mnist/*-idx*-ubyte.gz (default: $TRICKLAB_DATA or ../shared/data)")
    ap.add_argument("--train-size", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--zoneout-h", type=float, default=0.05)
    ap.add_argument("--zoneout-c", type=float, default=0.5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--quick", action="store_true", help="1,000 images, 5 epochs, 2,000 test images, one seed")
    args = ap.parse_args(argv)
    if args.quick:
        args.train_size, args.epochs, args.seeds = 1000, 5, args.seeds[:1]

    X_all, y_all = load_mnist("train", root=args.data)
    X_test, y_test = load_mnist("test", root=args.data)
    if args.quick:
        X_test, y_test = X_test[:2000], y_test[:2000]
    X_test = X_test.astype(np.float32) / 255  # (N, 28, 28): batch, time = row, input = 28 pixels

    print(f"row-by-row MNIST: LSTM(28, {args.hidden}) -> Linear({args.hidden}, 10), {args.train_size} "
          f"training images, {args.epochs} epochs, Adam lr {args.lr} cosine, batch {args.batch}; "
          f"test on {len(X_test)} images")
    rows, t0 = [], time.time()
    for seed in args.seeds:
        subset = np.random.default_rng(seed).permutation(len(X_all))[:args.train_size]
        X, y = X_all[subset].astype(np.float32) / 255, y_all[subset]
        for zh, zc in ((0.0, 0.0), (args.zoneout_h, args.zoneout_c)):
            r = run(X, y, X_test, y_test, zh, zc, seed, args.epochs, args.hidden, args.lr, args.batch)
            r.update(seed=seed, zoneout=f"h {zh:g}, c {zc:g}" if zh or zc else "none")
            rows.append(r)
            print(f"seed {seed} zoneout {r['zoneout']:>14}: test accuracy {r['test_acc']:.4f} "
                  f"({r['secs']:.0f} s)", flush=True)

    print()
    print(f"{'seed':>4} {'zoneout':>14} {'train loss':>10} {'train acc':>9} {'test acc':>8} {'time s':>7}")
    for r in rows:
        print(f"{r['seed']:>4} {r['zoneout']:>14} {r['train_loss']:>10.3f} {r['train_acc']:>9.4f} "
              f"{r['test_acc']:>8.4f} {r['secs']:>7.1f}")
    for label in dict.fromkeys(r["zoneout"] for r in rows):
        accs = [r["test_acc"] for r in rows if r["zoneout"] == label]
        print(f"mean test accuracy, zoneout {label}: {np.mean(accs):.4f}")
    print(f"total time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
