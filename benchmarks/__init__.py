"""Speed benchmarks: tricklab against its PyTorch twin, interleaved in one process (``python -m benchmarks.run``)."""
