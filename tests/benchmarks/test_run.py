"""benchmarks/run.py: the --trainer mode times the Trainer and the bare loop on the same training."""

import numpy as np

from benchmarks import run
from benchmarks.cases import Case

TINY = Case("tiny", "784-32-32-10 ReLU, batch norm, dropout 0.2/0.5, batch 16", sizes=(784, 32, 32, 10),
            batch_norm=True, dropout=(0.2, 0.5), batch_size=16)


def test_trainer_mode_runs_the_bare_loop_beside_the_trainer_on_the_same_training(rng):
    X = rng.standard_normal((100, 784)).astype(np.float32)
    y = rng.integers(0, 10, 100)
    sides = run.case_sides(TINY, X, y, trainer=True)
    assert list(sides) == ["tricklab", "bare", "torch", "floor", "torch_floor"]
    trainer, bare = sides["tricklab"], sides["bare"]
    assert trainer.model.input_grad is True and bare.model.input_grad is False  # the Trainer chooses for its model
    times = run.interleave(sides, epochs=3, warmup=2, turn=2)
    assert all(len(t) == 3 for t in times.values())
    for k, v in bare.model.state_dict().items():  # the same steps on the same batches, dropout masks included
        np.testing.assert_array_equal(trainer.model.state_dict()[k], v, err_msg=k)
    assert trainer.trainer.metrics.count == 2 * 16 + 3 * 100  # the accuracy counted at every step
