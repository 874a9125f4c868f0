"""Write two small data files of your own kind, to try tricklab on them:

    examples/data/spirals.npz   a 3-class problem: x_train (N, 2), y_train (N,), x_test, y_test
    examples/data/wave.csv      a regression table: columns x1, x2, x3, noise, y (y is the target)

    python examples/own_data.py
    tricklab train configs/own_npz.toml      # classification, a layer list, cross-entropy
    tricklab train configs/own_csv.toml      # regression, MSE, RMSE and R^2 reported
"""

from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "data"


def spirals(n_per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Three interleaved spiral arms in the plane, with a little noise."""
    t = rng.uniform(0.25, 1.0, (3, n_per_class))
    angle = 4.0 * t + np.arange(3)[:, None] * 2.0 * np.pi / 3
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=-1) + rng.normal(0, 0.03, (3, n_per_class, 2))
    return x.reshape(-1, 2).astype(np.float32), np.repeat(np.arange(3), n_per_class)


def wave(n: int, rng: np.random.Generator) -> np.ndarray:
    """y = sin(3 x1) + x2^2 - x1 x3 + noise; the column 'noise' is a feature that carries nothing."""
    x = rng.uniform(-1, 1, (n, 4))
    y = np.sin(3 * x[:, 0]) + x[:, 1] ** 2 - x[:, 0] * x[:, 2] + rng.normal(0, 0.05, n)
    return np.column_stack([x, y])


def main() -> None:
    rng = np.random.default_rng(0)
    OUT.mkdir(exist_ok=True)
    (x_train, y_train), (x_test, y_test) = spirals(600, rng), spirals(200, rng)
    np.savez(OUT / "spirals.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    table = wave(3000, rng)
    np.savetxt(OUT / "wave.csv", table, delimiter=",", header="x1,x2,x3,noise,y", comments="", fmt="%.6f")
    print(f"wrote {OUT / 'spirals.npz'} and {OUT / 'wave.csv'}")


if __name__ == "__main__":
    main()
