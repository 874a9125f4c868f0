"""``tricklab report DIR``: one self-contained HTML page (figures embedded) and PNG figures.

DIR may be a run folder (``tricklab train``), a sweep folder (``study.json``: its Optuna study),
an ablation folder (``sweep.db``), or a reproduction folder (``reproduction.json``). The page has no external references, so it opens
offline; its figures are also written as PNG files next to it in ``DIR/report/``.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_bytes
from .ablation_figures import ablation_figures
from ..report.plots import integer_epochs, pyplot, save_figure, seed_band
from ..train.history import read_history
from .metric import Metric


# ---------------------------------------------------------------------------- sweeps
def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _axis_values(values):
    """Positions on an axis: numbers (log if they span over a decade and are positive) or category indices."""
    if _numeric(values):
        arr = np.asarray(values, dtype=float)
        if arr.min() > 0 and arr.max() / arr.min() > 10:
            return np.log10(arr), "log10", None
        return arr, "", None
    cats = sorted({json.dumps(v) for v in values})
    return np.asarray([cats.index(json.dumps(v)) for v in values], dtype=float), "", cats


def sweep_curves(summary: dict, rows: list[dict]):
    """The ranked validation metric (``summary["metric"]``, default val_accuracy) per epoch of the
    six best configurations, mean and min-max over seeds."""
    metric = Metric(summary.get("metric", "val_accuracy"))
    fig, ax = pyplot().subplots(figsize=(8, 4.5))
    for c, e in enumerate([e for e in summary["table"] if metric.name in e][:6]):
        hs = [r["history"] for r in rows if r["point"] == e["point"] and r["status"] == "done"]
        seed_band(ax, hs, metric.value, e["label"], f"C{c}")
    ax.set(ylabel=metric.title(), title=f"{metric.title()} of the best configurations "
                                        "(mean, band: min-max over seeds)")
    integer_epochs(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def sweep_figures(out: Path, summary: dict, rows: list[dict]) -> list[Path]:
    """curves.png (``sweep_curves``) and a map of the searched keys."""
    out = Path(out)
    plt = pyplot()
    metric = Metric(summary.get("metric", "val_accuracy"))
    title = metric.title()
    table = [e for e in summary["table"] if metric.name in e]
    paths = [save_figure(sweep_curves(summary, rows), out / "curves.png")]
    keys = summary["keys"]
    if not keys or not table:
        return paths
    acc = np.array([e[metric.name] for e in table])  # the ranked metric, whichever it is
    if len(keys) == 1:
        k = keys[0]
        pos, scale, cats = _axis_values([e["params"][k] for e in table])
        order = np.argsort(pos)
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.errorbar(pos[order], acc[order], yerr=[table[i][f"{metric.name}_std"] for i in order], marker="o", capsize=3)
        ax.set(xlabel=f"{scale}({k})" if scale else k, ylabel=title, title=f"{title} against {k}")
        if cats:
            ax.set_xticks(range(len(cats)), cats, rotation=20)
        ax.grid(alpha=0.3)
        paths.append(save_figure(fig, out / "key.png"))
        return paths
    kx, ky = keys[0], keys[1]
    xs = [e["params"][kx] for e in table]
    ys = [e["params"][ky] for e in table]
    grid_keys = set(summary.get("space", {}).get("grid", {})) or {k for k in keys}
    ux, uy = sorted({json.dumps(v) for v in xs}), sorted({json.dumps(v) for v in ys})
    if {kx, ky} <= grid_keys and len(ux) * len(uy) <= 400:
        ux = sorted(ux, key=lambda s: (not _numeric([json.loads(s)]), json.loads(s) if _numeric([json.loads(s)]) else s))
        uy = sorted(uy, key=lambda s: (not _numeric([json.loads(s)]), json.loads(s) if _numeric([json.loads(s)]) else s))
        heat = np.full((len(uy), len(ux)), np.nan)
        better = max if metric.maximize else min
        for e in table:
            i, j = uy.index(json.dumps(e["params"][ky])), ux.index(json.dumps(e["params"][kx]))
            heat[i, j] = e[metric.name] if np.isnan(heat[i, j]) else better(heat[i, j], e[metric.name])
        fig, ax = plt.subplots(figsize=(1.1 * len(ux) + 3, 0.7 * len(uy) + 2))
        im = ax.imshow(heat, cmap="viridis", aspect="auto")
        for i in range(len(uy)):
            for j in range(len(ux)):
                if not np.isnan(heat[i, j]):
                    ax.text(j, i, f"{heat[i, j]:.3f}" if metric.percent else f"{heat[i, j]:.4g}",
                            ha="center", va="center", fontsize=8,
                            color="w" if heat[i, j] < np.nanmean(heat) else "k")
        ax.set_xticks(range(len(ux)), ux, rotation=20)
        ax.set_yticks(range(len(uy)), uy)
        ax.set(xlabel=kx, ylabel=ky, title=title + (" (best over the other keys)" if len(keys) > 2 else ""))
        fig.colorbar(im, ax=ax)
        paths.append(save_figure(fig, out / "heatmap.png"))
    else:
        px, sx, cx = _axis_values(xs)
        py, sy, cy = _axis_values(ys)
        fig, ax = plt.subplots(figsize=(7, 5))
        sc = ax.scatter(px, py, c=acc, cmap="viridis", s=60, edgecolors="k")
        ax.set(xlabel=f"{sx}({kx})" if sx else kx, ylabel=f"{sy}({ky})" if sy else ky,
               title=f"{title} of each configuration")
        if cx:
            ax.set_xticks(range(len(cx)), cx, rotation=20)
        if cy:
            ax.set_yticks(range(len(cy)), cy)
        fig.colorbar(sc, ax=ax)
        ax.grid(alpha=0.3)
        paths.append(save_figure(fig, out / "heatmap.png"))
    fig, ax = plt.subplots(figsize=(2.2 * len(keys) + 3, 4.5))
    cols = []
    for k in keys:
        pos, scale, cats = _axis_values([e["params"][k] for e in table])
        lo, hi = pos.min(), pos.max()
        cols.append(((pos - lo) / (hi - lo) if hi > lo else np.full_like(pos, 0.5), scale, cats, lo, hi))
    cmap = plt.get_cmap("viridis")
    norm = plt.Normalize(acc.min(), acc.max() if acc.max() > acc.min() else acc.min() + 1e-9)
    for i in np.argsort(acc):
        ax.plot(range(len(keys)), [c[0][i] for c in cols], color=cmap(norm(acc[i])), lw=2 if i == 0 else 1.2,
                alpha=0.9)
    for j, (vals, scale, cats, lo, hi) in enumerate(cols):
        ax.axvline(j, color="grey", lw=0.8)
        label = cats if cats else [f"{lo:.3g}", f"{hi:.3g}"]
        ax.text(j, -0.08, f"{label[0]}", ha="center", va="top", fontsize=7)
        ax.text(j, 1.05, f"{label[-1]}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(keys)), [f"{scale}({k})" if scale else k for k, (_, scale, *_r) in zip(keys, cols)],
                  fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.2, 1.2)
    ax.set_title(f"parallel coordinates (colour: {title})")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax)
    paths.append(save_figure(fig, out / "parallel.png"))
    return paths


def trial_curves(study, metric: Metric):
    """The validation metric each trial reported after every epoch (its intermediate values, step
    ``seed * epochs + epoch``): complete trials in colour, pruned ones grey and dashed, ending in x."""
    from optuna.trial import TrialState

    fig, ax = pyplot().subplots(figsize=(8, 4.5))
    complete = pruned = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        steps = sorted(t.intermediate_values)
        if not steps:
            continue
        values = [t.intermediate_values[s] for s in steps]
        if t.state == TrialState.PRUNED:
            ax.plot(steps, values, color="grey", ls="--", lw=1, alpha=0.7,
                    label="pruned" if not pruned else None)
            ax.plot(steps[-1:], values[-1:], "x", color="grey")
            pruned += 1
        else:
            ax.plot(steps, values, color=f"C{complete % 10}", lw=1.5, alpha=0.9,
                    label="complete" if not complete else None)
            complete += 1
    integer_epochs(ax)
    ax.set(xlabel="step (seed x epochs + epoch)", ylabel=metric.title(),
           title=f"{metric.title()} reported by each trial ({complete} complete, {pruned} pruned)")
    ax.grid(alpha=0.3)
    if complete or pruned:
        ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------------- HTML
CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;padding:0 1.5em;color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #3b6ea5;padding-bottom:.3em}h2{font-size:1.25em;margin-top:1.6em;color:#3b6ea5}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.35em .7em;text-align:left;vertical-align:top}
th{background:#eef3f9}tr:nth-child(even) td{background:#fafafa}tr.best td{background:#fff6d5;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.85em;color:#555}
.note{background:#f4f8fc;border-left:4px solid #3b6ea5;padding:.6em 1em}.verdict{background:#f1f8f1;border-left:4px solid #4a9a4a;padding:.6em 1em}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}
"""


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)} ({html.escape(Path(path).name)})</figcaption></figure>")


def _table(head: list[str], rows: list[list], classes: list[str] | None = None) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(f'<td class="num">{html.escape(c)}</td>' if isinstance(c, str) and c[:1].isdigit()
                        else f"<td>{html.escape(str(c))}</td>" for c in row)
        out.append(f"<tr{cls}>{cells}</tr>")
    return "\n".join(out + ["</table>"])


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n<h1>{html.escape(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n")


def _ablation_body(d: Path, figs_dir: Path) -> tuple[str, list[str]]:
    from .ablate import epochs_text, load_ablation, summarize

    meta, rows = load_ablation(d)
    summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else None
    body = [f"<p class=\"note\">Folder <code>{html.escape(str(d))}</code>. Command: "
            f"<code>{html.escape(meta.get('command') or '(Python API)')}</code></p>"]
    done = sum(r["status"] == "done" for r in rows)
    body.append(f"<p>{done} of {len(rows)} trials finished; seeds {meta.get('seeds')}.</p>")
    names = list(meta["variants"])
    index = meta.get("variant_points")
    metric = Metric(meta.get("metric", "val_accuracy"))
    val, test = metric.key("val"), metric.key("test")
    table, target = summarize(rows, names, index, summary["target"] if summary else None, metric)
    paths = ablation_figures(figs_dir, rows, names, target, index, metric)
    head = ["variant", metric.header("validation"), metric.header("test"),
            f"epochs to {metric.target_text(target)} (reached)", "epochs run"]
    trs = [[e["variant"] + (f" (= {', '.join(e['same_as'])})" if e.get("same_as") else ""),
            metric.format(e[val], e[val + "_std"], e["seeds"]),
            metric.format(e[test], e[test + "_std"], e["seeds"]),
            f"{epochs_text(e['epochs_to_target'], e['epochs_to_target_std'], e['reached_target'])} "
            f"({e['reached_target']}/{e['seeds']})",
            epochs_text(e["epochs_run"], e["epochs_run_std"], e["seeds"])] for e in table]
    body += ["<h2>Ablation</h2>",
             f"<p>Tricks: {html.escape(', '.join(meta['tricks']))}. Mean ± standard deviation over seeds "
             "(a variant with one seed shows its value and n=1); "
             "each trial is scored on the test split once, after training (an ablation selects nothing).</p>",
             _table(head, trs), "<h2>Figures</h2>",
             _img(paths[0], f"{metric.title()} per epoch, mean and min-max over seeds"),
             _img(paths[1], f"{metric.title('test')} per variant"), "<h2>Variants</h2>",
             _table(["variant", "keys set"], [[n, ", ".join(_setting(k, v) for k, v in ks.items())]
                                              for n, ks in meta["variants"].items()])]
    return "Ablation: " + ", ".join(meta["tricks"]), body


def _sweep_body(d: Path, figs_dir: Path) -> tuple[str, list[str]]:
    """A sweep folder: its Optuna study's trials (complete, pruned, failed), the chosen one, figures."""
    if not (d / "study.json").exists():
        return _ablation_body(d, figs_dir)
    from . import grid as grid_
    from .sweep import load, mean_and_std, other_scores, seed_rows, trial_table

    study = load(d)
    meta = study.user_attrs
    search = meta["search"]
    space = grid_.Space(search["space"]["grid"], [grid_.Range(**r) for r in search["space"]["ranges"]])
    metric = Metric(search["metric"])
    title = metric.title()
    table = trial_table(study, space, metric, len(search["seeds"]))
    counts = {s: sum(e["state"] == s for e in table) for s in ("complete", "pruned", "failed", "running", "waiting")}
    where = json.loads((d / "study.json").read_text())
    body = [f"<p class=\"note\">Folder <code>{html.escape(str(d))}</code>. Command: "
            f"<code>{html.escape(meta.get('command') or '(Python API)')}</code><br>Optuna study "
            f"<code>{html.escape(where['study'])}</code> in <code>{html.escape(where['storage'] or 'sweep.db')}</code> "
            f"(<code>optuna-dashboard sqlite:///{html.escape(str((d / 'sweep.db').resolve()))}</code> shows it)</p>"
            if not where["storage"] else
            f"<p class=\"note\">Folder <code>{html.escape(str(d))}</code>. Command: "
            f"<code>{html.escape(meta.get('command') or '(Python API)')}</code><br>Optuna study "
            f"<code>{html.escape(where['study'])}</code> in <code>{html.escape(where['storage'])}</code></p>"]
    body.append(f"<p>{search['sampler']} sampler, pruner {search['pruner']}: {len(table)} trials, "
                + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f"; seeds {search['seeds']}.</p>")
    complete = [e for e in table if e["state"] == "complete"]
    summ = {"table": complete, "keys": space.keys, "space": search["space"], "metric": metric.name}
    paths = sweep_figures(figs_dir, summ, seed_rows(study))
    paths.append(save_figure(trial_curves(study, metric), figs_dir / "trials.png"))
    final = meta.get("final")
    if final:
        final = {**final, **mean_and_std(final["per_seed"], metric)}
        best = next(e for e in table if e["point"] == final["point"])
        n = len(final["run_dirs"])
        val, test = metric.key("val"), metric.key("test")
        body += ["<h2>Chosen configuration</h2>",
                 f"<p class=\"verdict\"><b>{html.escape(best['label'])}</b>: {title} "
                 f"{metric.format(final[val], final[val + '_std'], n, True)}, {metric.title('test')} "
                 f"{metric.format(final[test], final[test + '_std'], n, True)} "
                 f"({n} seed(s)). Chosen on {title} alone, among the complete trials; the test split was "
                 "scored once, for this configuration only.</p>"]
    others = other_scores(table, metric)
    head = ["rank", *space.keys, metric.header(), *[Metric(k).header() for k in others], "epochs", "seeds",
            "seconds", "trial", "state"]
    trs = [[str(i + 1), *[json.dumps(e["params"].get(k)) for k in space.keys],
            metric.format(e.get(metric.name), e.get(f"{metric.name}_std", 0.0), max(e["done"], 1)),
            *[_score(e.get(k), Metric(k)) for k in others], f"{e.get('epochs_run', 0):.1f}",
            f"{e['done']}/{e['seeds']}", f"{e['seconds']:.1f}", f"#{e['point']}",
            e["state"] + (f" at step {e['pruned_at']}" if e.get("pruned_at") is not None else "")]
           for i, e in enumerate(table)]
    classes = ["best" if final and e["point"] == final["point"] else "" for e in table]
    body += [f"<h2>Trials, sorted by {title} (complete first, then pruned)</h2>",
             "<p>A pruned trial was stopped by the pruner from its per-epoch validation score; its scores are "
             "those of the epoch it stopped at, and it is never chosen.</p>", _table(head, trs, classes),
             "<h2>Figures</h2>"]
    captions = {"curves.png": f"{title} per epoch of the best configurations (band: min-max over seeds)",
                "heatmap.png": f"{title} over the first two searched keys",
                "key.png": f"{title} against the searched key",
                "parallel.png": "parallel coordinates of the searched keys",
                "trials.png": f"{title} reported after every epoch by each trial; pruned trials dashed"}
    body += [_img(p, captions.get(p.name, p.name)) for p in paths]
    return f"Sweep: {', '.join(space.keys) or 'base configuration'}", body


def _score(value: float | None, metric: Metric) -> str:
    """A mean score in a table cell: '97.12' for a percentage, '0.1234' otherwise, '—' if absent."""
    if value is None:
        return "—"
    return f"{100 * value:.2f}" if metric.percent else f"{value:.4f}"


def _setting(key: str, value) -> str:
    """'optimizer.lr=0.01'; a layer list by its layers' classes: 'model.layers=[Linear, ReLU, Linear]'."""
    if key == "model.layers":
        return f"{key}=[{', '.join(spec['type'] for spec in value)}]"
    return f"{key}={value}"


def _reproduction_body(d: Path, figs_dir: Path) -> tuple[str, list[str]]:
    doc = json.loads((d / "reproduction.json").read_text())
    body = [f"<p><i>{html.escape(doc['reference'])}</i></p>",
            f"<p class=\"note\">Claim: {html.escape(doc['claim'])}<br>Size <code>{html.escape(doc['size'])}</code>, "
            f"wall time {doc['wall_seconds']:.0f} s.</p>",
            "<h2>The paper beside ours</h2>",
            _table(["quantity", "paper", "ours"], [[r["quantity"], r["paper"], r["ours"]] for r in doc["table"]])]
    if doc.get("verdict"):
        body.append(f"<p class=\"verdict\">{html.escape(doc['verdict'])}</p>")
    body.append("<h2>Figures</h2>")
    for name in doc["figures"]:
        src = d / name
        dst = figs_dir / name
        figs_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(dst, src.read_bytes())
        body.append(_img(dst, name))
    settings = {k: v for k, v in doc["settings"].items() if k != "variants"}
    body += ["<h2>Settings</h2>", f"<pre>{html.escape(json.dumps(settings, indent=2, default=str))}</pre>"]
    return doc["title"], body


def _run_body(d: Path, figs_dir: Path) -> tuple[str, list[str]]:
    from ..report.plots import plot_history

    metrics = json.loads((d / "metrics.json").read_text())
    history = read_history(d)
    path = plot_history(history, figs_dir / "curves.png", title=d.name)
    rows = [[k, f"{v:.4f}" if isinstance(v, float) else str(v)] for k, v in metrics.items()]
    body = ["<h2>Final scores</h2>", _table(["metric", "value"], rows), "<h2>Curves</h2>",
            _img(path, "loss and accuracy per epoch")]
    if (d / "probe.npz").exists():  # [logging] probe_every
        from ..report.probe_figure import plot_probe
        from ..train.probe import read_probe

        probe = plot_probe(read_probe(d / "probe.npz"), figs_dir / "probe.png", title=d.name)
        body += ["<h2>Inside the network</h2>",
                 _img(probe, "each layer's activations (median, 15-85 percentiles) and update/weight ratio "
                             "over the training steps (the probe)")]
    body += ["<h2>Configuration</h2>", f"<pre>{html.escape((d / 'config.toml').read_text())}</pre>"]
    return f"Run: {d.name}", body


def kind_of(d: Path) -> str:
    if (d / "reproduction.json").exists():
        return "reproduction"
    if (d / "study.json").exists() or (d / "sweep.db").exists():
        return "sweep"
    if (d / "metrics.json").exists() and (d / "history.jsonl").exists():
        return "run"
    raise FileNotFoundError(f"{d} is not a run, sweep, ablation or reproduction folder "
                            "(no metrics.json, study.json, sweep.db or reproduction.json)")


def write_report(d: str | Path) -> Path:
    """Write ``d/report.html`` and the figures in ``d/report/``; returns the HTML path."""
    d = Path(d)
    if not d.is_dir():
        raise FileNotFoundError(f"{d} is not a folder")
    figs = d / "report"
    figs.mkdir(exist_ok=True)
    title, body = {"reproduction": _reproduction_body, "sweep": _sweep_body, "run": _run_body}[kind_of(d)](d, figs)
    path = d / "report.html"
    atomic_write_bytes(path, _page(title, body).encode())
    return path
