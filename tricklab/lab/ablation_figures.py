"""Figures of an ablation: validation curves per variant and test bars, mean and spread over seeds.

``tricklab ablate`` writes them when it finishes and ``tricklab report`` when it renders the folder;
both import them from here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..report.plots import integer_epochs, pyplot, save_figure, seed_band
from ..stats import mean_std
from .metric import Metric

_PALETTE = ["C0", "C1", "C2", "C4", "C5", "C6", "C8", "C9"]  # red and grey mark "full" and "baseline"


def _limits(values: list[float], metric: Metric) -> tuple[float, float] | None:
    """y limits around the later epochs' values: within [0, 1] for accuracy and error."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return None
    low, high = min(values), max(values)
    if metric.percent:
        return max(0.0, low - 0.02), min(1.0, high + 0.01)
    pad = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
    return low - pad, high + pad


def ablation_curves(rows: list[dict], names: list[str], target: float | None, index: dict[str, int] | None = None,
                    metric: Metric = Metric()):
    """The validation ``metric`` per epoch of each variant, mean and min-max over seeds; one panel
    for the tricks added to the baseline, one for the tricks removed from the full set."""
    plt = pyplot()
    index = index or {n: p for p, n in enumerate(names)}
    hist = {i: [r["history"] for r in rows if r["point"] == index[n] and r["status"] == "done"]
            for i, n in enumerate(names)}
    alone = [i for i, n in enumerate(names) if n in ("baseline", "full") or n.startswith("+ ")]
    removed = [i for i, n in enumerate(names) if n in ("baseline", "full") or n.startswith("full - ")]
    panels = [("each trick added to the baseline", alone)] + ([("each trick removed from the full set", removed)]
                                                              if len(removed) > 2 else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for ax, (title, idx) in zip(axes[0], panels):
        for c, i in enumerate(idx):
            ls = "--" if names[i] in ("baseline", "full") else "-"
            color = {"baseline": "k", "full": "C3"}.get(names[i], _PALETTE[c % len(_PALETTE)])
            seed_band(ax, hist[i], metric.value, names[i], color, ls)
        if target is not None:
            ax.axhline(target, color="grey", lw=0.8, ls=":", label=f"target {metric.target_text(target)}")
        ax.set(ylabel=metric.title(), title=title)
        integer_epochs(ax)
        limits = _limits([metric.value(r) for i in idx for h in hist[i] for r in h[len(h) // 4:]], metric)
        if limits:
            ax.set_ylim(*limits)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def ablation_bars(rows: list[dict], names: list[str], index: dict[str, int] | None = None,
                  metric: Metric = Metric()):
    """The test ``metric`` per variant, mean ± std over seeds: bars from 0 (a cut axis would turn a
    few tenths of a point into bars of very different lengths), each labelled with its value."""
    plt = pyplot()
    index = index or {n: p for p, n in enumerate(names)}
    tests = [[metric.value(r["metrics"], "test") for r in rows if r["point"] == index[n] and r["status"] == "done"]
             for n in names]
    scale = 100.0 if metric.percent else 1.0
    spread = [mean_std(t) if t else (np.nan, 0.0) for t in tests]
    means = [scale * m for m, _ in spread]
    stds = [scale * sd for _, sd in spread]
    colors = ["k" if n == "baseline" else "C3" if n == "full" else "C0" if n.startswith("+") else "C1" for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    ax.barh(range(len(names)), means, xerr=stds, color=colors, alpha=0.8, capsize=3)
    for y, (t, m, (mean, sd)) in enumerate(zip(tests, means, spread)):
        if t:
            ax.text(m / 2, y, metric.format(mean, sd, len(t)) + (f" (n={len(t)})" if len(t) > 1 else ""),
                    ha="center", va="center", color="w", fontsize=8)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    if metric.percent:
        ax.set_xlim(0.0, 100.0)
    ax.set(xlabel=f"{metric.header('test')}, mean ± std over seeds", title=f"{metric.title('test')} per variant")
    ax.grid(alpha=0.3, axis="x")
    return fig


def ablation_figures(out: Path, rows: list[dict], names: list[str], target: float | None,
                     index: dict[str, int] | None = None, metric: Metric = Metric()) -> list[Path]:
    """curves.png (``ablation_curves``) and bars.png (``ablation_bars``) in ``out``."""
    out = Path(out)
    return [save_figure(ablation_curves(rows, names, target, index, metric), out / "curves.png"),
            save_figure(ablation_bars(rows, names, index, metric), out / "bars.png")]


