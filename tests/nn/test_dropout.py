import numpy as np
import pytest
from scipy import stats

from tricklab import nn
from tricklab.check import gradcheck


def _binomial_bound(n, p, z=5.0):
    return z * np.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("scaling", ["inverted", "test"])
def test_fraction_dropped_within_binomial_bound(p, scaling):
    drop = nn.Dropout(p, scaling=scaling, rng=1)
    x = np.ones((200, 500), dtype=np.float32)
    dropped = int((drop(x) == 0).sum())
    assert abs(dropped - p * x.size) < _binomial_bound(x.size, p)


def test_mask_is_fresh_every_call():
    drop = nn.Dropout(0.5, rng=0)
    x = np.ones((4, 100), dtype=np.float32)
    assert not np.array_equal(drop(x), drop(x))


def test_inverted_keeps_the_mean_and_is_identity_at_eval():
    drop = nn.Dropout(0.3, rng=2)
    x = np.full((1000, 1000), 2.0, dtype=np.float32)
    y = drop(x)
    assert abs(y.mean() - 2.0) < 5 * 2.0 * np.sqrt(0.3 / 0.7 / x.size)
    np.testing.assert_allclose(y[y != 0], 2.0 / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(drop.eval()(x), x)


def test_classic_eval_is_alpha_times_output_and_training_unscaled():
    drop = nn.Dropout(0.25, scaling="test", rng=3, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((5, 8))
    y = drop(x)
    kept = y != 0
    np.testing.assert_array_equal(y[kept], x[kept])
    np.testing.assert_allclose(drop.eval()(x), 0.75 * x)


@pytest.mark.parametrize("scaling", ["inverted", "test"])
def test_gradient_is_zero_exactly_where_units_were_dropped(scaling):
    drop = nn.Dropout(0.5, scaling=scaling, rng=4, dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((6, 50)) + 10  # never exactly zero
    y = drop(x)
    g = drop.backward(np.ones_like(x))
    np.testing.assert_array_equal(g == 0, y == 0)
    np.testing.assert_allclose(g[y != 0], 2.0 if scaling == "inverted" else 1.0)


def test_dropout_gradcheck_reuses_the_mask(rng):
    net = nn.Sequential(nn.Linear(5, 8, rng=rng), nn.Dropout(0.4, rng=5), nn.Linear(8, 2, rng=rng))
    assert gradcheck(net, rng.standard_normal((3, 5))).ok


def test_folded_model_equals_classic_model_at_eval(rng):
    net = nn.Sequential(nn.Dropout(0.2, scaling="test", rng=1), nn.Linear(6, 10, rng=rng), nn.ReLU(),
                        nn.Dropout(0.5, scaling="test", rng=2), nn.Linear(10, 3, rng=rng))
    x = rng.standard_normal((7, 6)).astype(np.float32)
    net(x)  # a training pass changes nothing that folding depends on
    folded = nn.fold_dropout_scaling(net)
    assert not any(isinstance(m, nn.Dropout) for m in folded.modules())
    np.testing.assert_allclose(folded(x), net.eval()(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(folded[0].weight.data, 0.8 * net[1].weight.data, rtol=1e-6)
    np.testing.assert_array_equal(folded[0].bias.data, net[1].bias.data)


def test_fold_refuses_what_it_cannot_fold(rng):
    with pytest.raises(ValueError, match="only a Linear layer can absorb"):
        nn.fold_dropout_scaling(nn.Sequential(nn.Dropout(0.5, scaling="test"), nn.ReLU(), nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="classic dropout layer is last"):
        nn.fold_dropout_scaling(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5, scaling="test")))


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_p_outside_unit_interval_is_an_error(p):
    with pytest.raises(ValueError, match=r"p \(drop probability\) must be in \[0, 1\)"):
        nn.Dropout(p)


def test_bad_scaling_is_an_error():
    with pytest.raises(ValueError, match="scaling must be one of"):
        nn.Dropout(0.5, scaling="classic")


def test_mask_is_bernoulli_by_chi_square():
    drop = nn.Dropout(0.3, rng=7)
    kept = (drop(np.ones((400, 250), dtype=np.float32)) != 0).sum(axis=0)
    # each column's kept count ~ Binomial(400, 0.7): the column counts should not be overdispersed
    chi2 = ((kept - 280) ** 2 / (400 * 0.7 * 0.3)).sum()
    assert stats.chi2.sf(chi2, df=250) > 1e-4


def test_numpy_scalar_probability_is_accepted():
    assert nn.Dropout(np.float32(0.25)).p == 0.25
    with pytest.raises(ValueError, match="p \\(drop probability\\)"):
        nn.Dropout(True)


# ----------------------------------------------------------------------------- Dropout2d
@pytest.mark.parametrize("p", [0.2, 0.5, 0.7])
@pytest.mark.parametrize("scaling", ["inverted", "test"])
def test_dropout2d_drops_whole_channels_at_the_right_rate(p, scaling):
    drop = nn.Dropout2d(p, scaling=scaling, rng=1)
    x = np.ones((100, 60, 3, 4), dtype=np.float32)
    y = drop(x)
    kept_value = np.float32(1 / (1 - p)) if scaling == "inverted" else 1.0
    per_channel = y.reshape(100, 60, 12)
    dropped = (per_channel == 0).all(axis=2)
    kept = (per_channel == kept_value).all(axis=2)
    assert (dropped | kept).all()  # every feature map is dropped or kept whole
    assert abs(int(dropped.sum()) - p * 6000) < _binomial_bound(6000, p)


def test_dropout2d_masks_are_independent_per_example_and_channel():
    drop = nn.Dropout2d(0.5, rng=7)
    kept = drop(np.ones((400, 250, 2, 2), dtype=np.float32))[:, :, 0, 0] != 0
    # each channel's kept count over 400 examples ~ Binomial(400, 0.5): no over-dispersion ...
    chi2 = ((kept.sum(axis=0) - 200) ** 2 / 100).sum()
    assert stats.chi2.sf(chi2, df=250) > 1e-4
    # ... and neighbouring channels agree about half the time, as independent coins do
    agree = int((kept[:, 1:] == kept[:, :-1]).sum())
    assert abs(agree - 0.5 * kept[:, 1:].size) < _binomial_bound(kept[:, 1:].size, 0.5)


@pytest.mark.parametrize("scaling", ["inverted", "test"])
def test_dropout2d_gradient_follows_the_channel_mask(scaling):
    drop = nn.Dropout2d(0.5, scaling=scaling, rng=4, dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((6, 20, 3, 3)) + 10  # never exactly zero
    y = drop(x)
    g = drop.backward(np.ones_like(x))
    assert g.shape == x.shape
    np.testing.assert_array_equal(g == 0, y == 0)
    np.testing.assert_allclose(g[y != 0], 2.0 if scaling == "inverted" else 1.0)
    np.testing.assert_allclose(y[y != 0], x[y != 0] * (2.0 if scaling == "inverted" else 1.0))


def test_dropout2d_eval_is_dropouts():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4))
    np.testing.assert_array_equal(nn.Dropout2d(0.3, rng=0, dtype=np.float64).eval()(x), x)
    np.testing.assert_allclose(nn.Dropout2d(0.3, scaling="test", rng=0, dtype=np.float64).eval()(x), 0.7 * x)


def test_dropout2d_gradcheck_reuses_the_mask(rng):
    assert gradcheck(nn.Dropout2d(0.4, rng=5), rng.standard_normal((3, 4, 2, 3))).ok
    assert gradcheck(nn.Dropout2d(0.4, scaling="test", rng=5), rng.standard_normal((3, 4, 2, 3))).ok


def test_dropout2d_takes_images_only():
    drop = nn.Dropout2d(0.5)
    for mode in (True, False):
        with pytest.raises(ValueError, match=r"^Dropout2d got input of shape \(8, 5\); expected \(N, C, H, W\)$"):
            drop.train(mode)(np.ones((8, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"^Dropout2d expects examples of shape \(C, H, W\), got \(5,\)$"):
        drop.output_shape((5,))
    assert drop.output_shape((3, 4, 4)) == (3, 4, 4)
    with pytest.raises(ValueError, match=r"^Dropout2d: p \(drop probability\) must be in \[0, 1\)"):
        nn.Dropout2d(1.0)
    with pytest.raises(ValueError, match="^Dropout2d: scaling must be one of"):
        nn.Dropout2d(0.5, scaling="classic")


def test_fold_removes_inverted_dropout2d():
    net = nn.Sequential(nn.Dropout2d(0.5), nn.Flatten(), nn.Linear(12, 2, rng=0))
    folded = nn.fold_dropout_scaling(net)
    assert [type(m).__name__ for m in folded] == ["Flatten", "Linear"]
