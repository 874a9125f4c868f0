"""Resume and restore-best with Linear(bias=False) in front of batch norm (a parameter set to None)."""

import numpy as np

from tricklab import nn, optim
from tricklab.data import DataLoader
from tricklab.train import EarlyStopping, Trainer


def _task(rng, n=400):
    X = rng.standard_normal((n, 10)).astype(np.float32)
    w = rng.standard_normal((10, 3))
    noisy = (X @ w + 2.0 * rng.standard_normal((n, 3))).argmax(1)  # label noise: validation loss turns up
    return X, noisy


def _trainer(run_dir, X, y, early_stopping=None, lr=0.05):
    model = nn.Sequential(nn.Linear(10, 32, bias=False, rng=1), nn.BatchNorm1d(32), nn.ReLU(),
                          nn.Linear(32, 3, rng=3))
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loader = DataLoader(X, y, 32, rng=7)
    trainer = Trainer(model, nn.CrossEntropyLoss(), opt, run_dir=run_dir, early_stopping=early_stopping,
                      generators={"loader": loader.rng}, progress=False, log=lambda m: None)
    return trainer, loader


def _assert_same_parameters(a: nn.Module, b: nn.Module) -> None:
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


def test_bias_free_model_resumes_as_if_never_interrupted(tmp_path, rng):
    X, y = _task(rng)
    full, loader = _trainer(tmp_path / "full", X, y)
    full.fit(loader, (X, y), epochs=4)
    part, loader = _trainer(tmp_path / "part", X, y)
    part.fit(loader, (X, y), epochs=2)
    again, loader = _trainer(tmp_path / "part", X, y)
    assert again.resume() and again.epoch == 2
    again.fit(loader, (X, y), epochs=4)
    assert "0.bias" not in again.model.state_dict()
    for k, v in full.model.state_dict().items():
        np.testing.assert_array_equal(again.model.state_dict()[k], v, err_msg=k)


def test_bias_free_model_restores_the_best_weights_after_a_resume(tmp_path, rng):
    X, y = _task(rng)
    X_val, y_val = _task(np.random.default_rng(1), 200)
    first, loader = _trainer(tmp_path / "run", X, y, EarlyStopping(patience=2), lr=0.2)
    first.fit(loader, (X_val, y_val), epochs=2)
    resumed, loader = _trainer(tmp_path / "run", X, y, EarlyStopping(patience=2), lr=0.2)
    assert resumed.resume()
    resumed.fit(loader, (X_val, y_val), epochs=40)
    es = resumed.early_stopping
    assert es.stopped_epoch is not None and es.best_epoch < es.stopped_epoch
    # the same run stopped by hand at the best epoch has the weights that were restored
    reference, loader = _trainer(tmp_path / "reference", X, y, lr=0.2)
    reference.fit(loader, (X_val, y_val), epochs=es.best_epoch)
    _assert_same_parameters(resumed.model, reference.model)
