from tricklab.report.plots import history_figure, history_metrics, plot_history


def _history(**curves):
    return [{"epoch": e, "train_loss": 1 / e, "train_penalty": 0.0, "val_loss": 1.1 / e,
             **{k: f(e) for k, f in curves.items()}, "lr": 0.1, "seconds": 0.2} for e in (1, 2, 3)]


def _panels(fig):
    return [(ax.get_title(), [line.get_label() for line in ax.get_lines()], [list(line.get_ydata()) for line in ax.get_lines()])
            for ax in fig.axes]


def test_classification_shows_loss_and_accuracy():
    history = _history(train_accuracy=lambda e: 0.5 + 0.1 * e, val_accuracy=lambda e: 0.5 + 0.09 * e)
    assert history_metrics(history) == ["accuracy"]
    panels = _panels(history_figure(history))
    assert [(title, labels) for title, labels, _ in panels] == [("loss", ["training", "validation"]),
                                                                ("accuracy", ["training", "validation"])]
    assert panels[1][2] == [[0.5 + 0.1 * e for e in (1, 2, 3)], [0.5 + 0.09 * e for e in (1, 2, 3)]]


def test_regression_shows_rmse_and_r2_panels():
    history = _history(train_rmse=lambda e: 1 / e, train_r2=lambda e: 1 - 0.1 / e,
                       val_rmse=lambda e: 1.2 / e, val_r2=lambda e: 1 - 0.2 / e)
    assert history_metrics(history) == ["rmse", "r2"]
    fig = history_figure(history)
    panels = _panels(fig)
    assert [(title, labels) for title, labels, _ in panels] == [("loss", ["training", "validation"]),
                                                                ("RMSE", ["training", "validation"]),
                                                                ("R²", ["training", "validation"])]
    assert panels[2][2][1] == [1 - 0.2 / e for e in (1, 2, 3)]
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)


def test_a_history_without_validation_or_metrics_still_plots(tmp_path):
    history = [{"epoch": e, "train_loss": 1 / e, "train_penalty": 0.0, "lr": 0.1, "seconds": 0.1} for e in (1, 2)]
    assert [(title, labels) for title, labels, _ in _panels(history_figure(history))] == [("loss", ["training"])]
    assert plot_history(history, tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
