"""tricklab: training neural networks with the tricks of the trade, from first principles on NumPy."""

__version__ = "0.1.0"
