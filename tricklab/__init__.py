"""tricklab: training neural networks with the tricks of the trade, from first principles on NumPy."""

__version__ = "0.1.0"


def load_run(run_dir):
    """The model and input normalizer of a finished run (see :mod:`tricklab.runs`)."""
    from .runs import load_run as _load_run

    return _load_run(run_dir)
