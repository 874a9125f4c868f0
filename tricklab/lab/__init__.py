"""The lab: hyperparameter search on held-out data, ablations, paper reproductions and reports.

    grid.py        search spaces: --grid values, --range intervals, --random N
    study.py       the Optuna study of a sweep or ablation, and its coordinator: heartbeats, retry after a kill
    trial.py       one trial: train in its run folder, score on the validation split
    metric.py      the metric a sweep ranks by and an ablation tabulates (accuracy, RMSE, ...), and its direction
    backends.py    where trials run: a local process pool, or Ray tasks on a cluster
    sweep.py       `tricklab sweep`: select on validation, score the chosen one on test once
    ablate.py      `tricklab ablate`: baseline, each trick alone, each trick removed, over seeds
    reproduce/     `tricklab reproduce NAME`: one module per paper figure, the paper beside ours
    report.py      `tricklab report DIR`: a self-contained HTML page and PNG figures
    cli.py         the commands, registered into `tricklab`
"""
