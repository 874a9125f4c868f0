"""MNIST-1D: a small procedurally generated 1-D sequence classification data set.

Each example starts from one of ten hand-made 12-point templates (one per digit) and is
transformed, in the order of the reference ``mnist1d`` package (``mnist1d/transform.py``)::

    x <- pad(x + eps, p zeros),  p ~ U{padding[0], ..., padding[1]}
    x <- interp(x, template_len + padding[1])             (dilate to 72 points)
    x <- x * (1 + scale_coeff * (u - 1/2)),  u ~ U(0, 1)  (scale)
    x <- roll(x, k),  k ~ U{0, ..., max_translation - 1}  (translate)
    x <- x where x != 0, else G_2 * (corr_noise_scale * n)  (correlated noise, G_2 = gaussian, sigma 2)
    x <- x + iid_noise_scale * n                          (iid noise)
    x <- x - shear_scale * (u - 1/2) * linspace(-1/2, 1/2)  (shear)
    x <- interp(x, final_seq_length)                      (subsample to 40 points)

with ``n ~ N(0, I)``. The whole set is then shuffled, centred and scaled to unit standard
deviation, and split 80/20 into train and test. Random numbers come from a legacy
``np.random.RandomState(seed)`` drawn in the reference's order, so the arrays match the
reference package's ``make_dataset`` for the same arguments (up to the float32 cast), without
touching NumPy's global random state.

References:
    Greydanus (2020), "Scaling down deep learning with MNIST-1D", arXiv:2011.14439;
    https://github.com/greydanus/mnist1d
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.interpolate import interp1d
from scipy.ndimage import gaussian_filter

_EPS = 1e-8

TEMPLATES = np.array([
    [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
    [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
    [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
    [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
    [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
    [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
    [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
    [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
    [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
    [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
])


def get_templates() -> dict[str, np.ndarray]:
    """The ten digit templates, whitened per template and shifted to start at 0, scaled by 1/6.

    Returns ``{'x': (10, 12) float64, 't': (12,) float64, 'y': (10,) int64}``.
    """
    x = TEMPLATES - TEMPLATES.mean(1, keepdims=True)
    x /= x.std(1, keepdims=True)
    x -= x[:, :1]
    return {"x": x / 6.0, "t": np.linspace(-5, 5, TEMPLATES.shape[1]) / 6.0,
            "y": np.arange(10, dtype=np.int64)}


def _interpolate(x: np.ndarray, n: int) -> np.ndarray:
    """Linearly resample ``x`` (on a uniform grid over [0, 1]) to ``n`` uniform points."""
    return interp1d(np.linspace(0, 1, len(x)), x, axis=0, kind="linear")(np.linspace(0, 1, n))


def transform_template(x: np.ndarray, t: np.ndarray, rs: np.random.RandomState, *,
                       template_len: int, padding: tuple[int, int], scale_coeff: float,
                       max_translation: int, corr_noise_scale: float, iid_noise_scale: float,
                       shear_scale: float, final_seq_length: int) -> tuple[np.ndarray, np.ndarray]:
    """One random MNIST-1D example from template ``x`` (see the module docstring for the steps).

    Draws from ``rs`` in the reference order: pad, scale, translate, correlated noise, iid
    noise, shear. Returns the signal and its coordinates ``t``, both of length
    ``final_seq_length``.
    """
    low, high = padding
    p = low + int(rs.rand() * (high - low + 1))
    dilated = template_len + high
    new_x = _interpolate(np.concatenate([x + _EPS, np.zeros(p)]), dilated)
    new_t = _interpolate(t, dilated)
    new_x *= 1 + scale_coeff * (rs.rand() - 0.5)
    k = rs.choice(max_translation)
    new_x = np.concatenate([new_x[-k:], new_x[:-k]])
    mask = new_x != 0
    corr = gaussian_filter(corr_noise_scale * rs.randn(*new_x.shape), 2)
    new_x = mask * new_x + (1 - mask) * corr
    new_x = new_x + iid_noise_scale * rs.randn(*new_x.shape)
    new_x = new_x - shear_scale * (rs.rand() - 0.5) * np.linspace(-0.5, 0.5, len(new_x))
    return _interpolate(new_x, final_seq_length), _interpolate(new_t, final_seq_length)


def make_mnist1d(num_samples: int = 5000, seed: int = 42, train_split: float = 0.8,
                 template_len: int = 12, padding: tuple[int, int] = (36, 60),
                 scale_coeff: float = 0.4, max_translation: int = 48,
                 corr_noise_scale: float = 0.25, iid_noise_scale: float = 2e-2,
                 shear_scale: float = 0.75, final_seq_length: int = 40,
                 shuffle_seq: bool = False) -> dict[str, np.ndarray]:
    """Generate MNIST-1D with the paper's default arguments; needs no files and no network.

    ``num_samples // 10`` examples per class are generated class by class, shuffled, normalised
    with the statistics of the whole set (``x <- (x - mean) / std``, ``t <- t / std``), and the
    first ``int(num_samples * train_split)`` become the training set.

    Returns:
        ``{'x': (N_train, L) float32, 'y': (N_train,) int64, 'x_test': (N_test, L) float32,
        'y_test': (N_test,) int64, 't': (L,) float32, 'templates': get_templates()}`` with
        ``L = final_seq_length``; the defaults give 4000 train and 1000 test examples of length 40.
    """
    if num_samples < 10:
        raise ValueError(f"num_samples must be at least 10 (one per class), got {num_samples}")
    if not 0 < max_translation:
        raise ValueError(f"max_translation must be positive, got {max_translation}")
    templates = get_templates()
    rs = np.random.RandomState(seed)
    kwargs = dict(template_len=template_len, padding=tuple(padding), scale_coeff=scale_coeff,
                  max_translation=max_translation, corr_noise_scale=corr_noise_scale,
                  iid_noise_scale=iid_noise_scale, shear_scale=shear_scale,
                  final_seq_length=final_seq_length)
    per_class = num_samples // len(templates["y"])
    xs, ys = [], []
    for x, y in zip(templates["x"], templates["y"]):
        for _ in range(per_class):
            new_x, new_t = transform_template(x, templates["t"], rs, **kwargs)
            xs.append(new_x)
            ys.append(y)
    order = rs.permutation(len(ys))
    xs, ys = np.stack(xs)[order], np.stack(ys)[order]
    if shuffle_seq:
        xs = xs[..., rs.permutation(final_seq_length)]
    new_t = new_t / xs.std()
    xs = (xs - xs.mean()) / xs.std()
    split = int(len(ys) * train_split)
    return {"x": xs[:split].astype(np.float32), "y": ys[:split].astype(np.int64),
            "x_test": xs[split:].astype(np.float32), "y_test": ys[split:].astype(np.int64),
            "t": new_t.astype(np.float32), "templates": templates}


@lru_cache(maxsize=4)
def _cached(num_samples: int, seed: int, items: tuple) -> dict[str, np.ndarray]:
    return make_mnist1d(num_samples, seed, **dict(items))


def load_mnist1d(split: str = "train", num_samples: int = 5000, seed: int = 42,
                 **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of the ``"train"`` or ``"test"`` split of :func:`make_mnist1d`.

    The generated set is cached in memory per argument set, so loading both splits generates
    once; the returned arrays are copies.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))
    data = _cached(num_samples, seed, items)
    suffix = "" if split == "train" else "_test"
    return data["x" + suffix].copy(), data["y" + suffix].copy()
