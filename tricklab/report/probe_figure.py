"""The probe's figure: each layer's activation percentiles and update/weight ratio over the steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .plots import pyplot, save_figure


def probe_series(records: dict) -> dict[str, dict[str, np.ndarray]]:
    """Per layer (in the order first seen): its rows' step, act_p15/50/85 and update_ratio as arrays."""
    layers = np.asarray(records["layer"], dtype=str)
    out = {}
    for name in dict.fromkeys(layers.tolist()):
        rows = layers == name
        out[name] = {key: np.asarray(records[key])[rows]
                     for key in ("step", "act_p15", "act_p50", "act_p85", "update_ratio")}
    return out


def probe_figure(records: dict, title: str = ""):
    """Two panels over the training steps, one colour per layer: the median activation with the
    15-85 percentile band, and ||w' - w|| / ||w|| on a log scale (layers with parameters only)."""
    plt = pyplot()
    series = probe_series(records)
    fig, (acts, ratios) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, s) in enumerate(series.items()):
        colour = f"C{i % 10}"
        acts.plot(s["step"], s["act_p50"], color=colour, label=name)
        acts.fill_between(s["step"], s["act_p15"], s["act_p85"], color=colour, alpha=0.2)
        finite = np.isfinite(s["update_ratio"]) & (s["update_ratio"] > 0)
        if finite.any():
            ratios.plot(s["step"][finite], s["update_ratio"][finite], color=colour, marker="o", ms=2, label=name)
    acts.set(xlabel="step", ylabel="activation", title="activations: median, 15-85 percentiles")
    ratios.set(xlabel="step", ylabel="||Δw|| / ||w||", title="update / weight ratio", yscale="log")
    for ax in (acts, ratios):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(title="layer", fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_probe(records: dict, path: str | Path, title: str = "") -> Path:
    """Write :func:`probe_figure` of ``records`` (``Probe.records`` or :func:`~tricklab.train.probe.read_probe`'s
    columns) as a PNG at ``path``, atomically."""
    if not len(records.get("layer", ())):
        raise ValueError("plot_probe: records holds no rows")
    return save_figure(probe_figure(records, title), Path(path), dpi=100)
