"""Layer lists: every class of tricklab.nn from a TOML entry, inferred sizes, clear errors."""

import tomllib

import numpy as np
import pytest

from tricklab import nn
from tricklab.nn.spec import LayerSpecError, build_layers, check_specs, layer_classes

# one TOML entry per layer class (only what the class requires; sizes are inferred)
ENTRIES = {
    "Linear": 'type = "Linear"\nout_features = 6\nbias = false',
    "DropConnect": 'type = "DropConnect"\nout_features = 6\np = 0.3',
    "Shakeout": 'type = "Shakeout"\nout_features = 6\ntau = 0.4',
    "Whiteout": 'type = "Whiteout"\nout_features = 6\nsigma = 0.2',
    "BatchNorm1d": 'type = "BatchNorm1d"\nmomentum = 0.2',
    "Dropout": 'type = "Dropout"\np = 0.25',
    "GaussianNoise": 'type = "GaussianNoise"\nstd = 0.5',
    "ActivityL1": 'type = "ActivityL1"\nlam = 0.01',
    "ReLU": 'type = "ReLU"', "LeakyReLU": 'type = "LeakyReLU"\nnegative_slope = 0.2',
    "Sigmoid": 'type = "Sigmoid"', "Tanh": 'type = "Tanh"', "Identity": 'type = "Identity"',
    "Flatten": 'type = "Flatten"',
    "SequenceEncoder": 'type = "SequenceEncoder"\ntime_steps = 4\nrnn = {type = "LSTM", hidden_size = 5}',
    "RNN": 'type = "SequenceEncoder"\ntime_steps = 2\nrnn = {type = "RNN", hidden_size = 5, num_layers = 2}',
    "LSTM": 'type = "SequenceEncoder"\ntime_steps = 8\nrnn = {type = "LSTM", hidden_size = 3, zoneout_h = 0.1}',
}
# layers taking (C, H, W) examples, built in front of Flatten and Linear
IMAGE_ENTRIES = {
    "Conv2d": 'type = "Conv2d"\nout_channels = 4\nkernel_size = [3, 2]\npadding = "same"',
    "BatchNorm2d": 'type = "BatchNorm2d"\nmomentum = 0.2\nchannels = [1]',
    "MaxPool2d": 'type = "MaxPool2d"\nkernel_size = [3, 2]\nstride = 1\npadding = [1, 0]',
    "AvgPool2d": 'type = "AvgPool2d"\nkernel_size = 2',
    "AdaptiveAvgPool2d": 'type = "AdaptiveAvgPool2d"\noutput_size = [2, 3]',
    "Dropout2d": 'type = "Dropout2d"\np = 0.25\nscaling = "test"',
}


def _entry(name: str) -> dict:
    return tomllib.loads(ENTRIES[name])


def test_every_layer_class_has_an_entry_here():
    assert set(layer_classes()) == set(ENTRIES) | set(IMAGE_ENTRIES)


@pytest.mark.parametrize("name", sorted(IMAGE_ENTRIES))
def test_every_image_layer_builds_from_a_toml_entry_and_knows_its_output_shape(name):
    model = build_layers([tomllib.loads(IMAGE_ENTRIES[name]), {"type": "Flatten"}, {"type": "Linear"}], (2, 6, 5), 3,
                         np.random.SeedSequence(0))
    assert type(model[0]).__name__ == name
    for train in (True, False):
        model.train(train)
        x, shape = np.random.default_rng(0).standard_normal((5, 2, 6, 5)).astype(np.float32), (2, 6, 5)
        for layer in model:
            x = layer(x)
            shape = layer.output_shape(shape)
            assert x.shape[1:] == shape, layer
    assert model.output_shape((2, 6, 5)) == (3,)


def test_a_small_cnn_head_builds_with_sizes_inferred():
    specs = [{"type": "BatchNorm2d"}, {"type": "MaxPool2d", "kernel_size": 2}, {"type": "Dropout2d", "p": 0.2},
             {"type": "AdaptiveAvgPool2d", "output_size": 1}, {"type": "Flatten"}, {"type": "Linear"}]
    model = build_layers(specs, (3, 8, 8), 5, np.random.SeedSequence(0))
    assert [type(m).__name__ for m in model] == ["BatchNorm2d", "MaxPool2d", "Dropout2d", "AdaptiveAvgPool2d",
                                                 "Flatten", "Linear"]
    assert model[0].num_features == 3 and model[2].p == 0.2 and isinstance(model[2].rng, np.random.Generator)
    assert (model[5].in_features, model[5].out_features) == (3, 5)
    assert model.output_shape((3, 8, 8)) == (5,)
    assert model(np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)).shape == (4, 5)


@pytest.mark.parametrize("entries, needle", [
    ([{"type": "Flatten"}, {"type": "BatchNorm2d"}, {"type": "Linear"}],
     "model.layers.1 (BatchNorm2d): BatchNorm2d(192) expects examples of shape (192, H, W), got (192,)"),
    ([{"type": "BatchNorm2d", "num_features": 4}, {"type": "Flatten"}, {"type": "Linear"}],
     "model.layers.0 (BatchNorm2d): num_features = 4 disagrees with the input, which has 3 (shape (3, 8, 8))"),
    ([{"type": "Flatten"}, {"type": "MaxPool2d", "kernel_size": 2}, {"type": "Linear"}],
     "model.layers.1 (MaxPool2d): MaxPool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0)) expects examples of "
     "shape (C, H, W), got (192,)"),
    ([{"type": "MaxPool2d", "kernel_size": 9}, {"type": "Flatten"}, {"type": "Linear"}],
     "model.layers.0 (MaxPool2d): MaxPool2d(kernel_size=(9, 9), stride=(9, 9), padding=(0, 0)): images of 8x8 "
     "pixels are smaller than the (padded) kernel"),
    ([{"type": "AvgPool2d", "kernel_size": 2, "padding": 2}, {"type": "Flatten"}, {"type": "Linear"}],
     "model.layers.0 (AvgPool2d): AvgPool2d: padding (2, 2) must be at most half of kernel_size (2, 2)"),
    ([{"type": "AdaptiveAvgPool2d"}, {"type": "Flatten"}, {"type": "Linear"}],
     "model.layers.0 (AdaptiveAvgPool2d): missing required argument 'output_size'"),
])
def test_image_layer_errors_name_the_index_and_the_class(entries, needle):
    with pytest.raises(LayerSpecError) as info:
        build_layers(entries, (3, 8, 8), 5, np.random.SeedSequence(0))
    assert needle in str(info.value)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_every_layer_class_builds_from_a_toml_entry_and_knows_its_output_shape(name):
    model = build_layers([_entry(name), {"type": "Linear"}], (8,), 3, np.random.SeedSequence(0))
    inner = model[0].rnn if name in ("RNN", "LSTM") else model[0]
    assert type(inner).__name__ == name
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    for train in (True, False):
        model.train(train)
        shape = (8,)
        for layer in model:
            x_next = layer(x)
            assert x_next.shape[1:] == layer.output_shape(shape), layer
            shape, x = x_next.shape[1:], x_next
        x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    assert model.output_shape((8,)) == (3,)


def test_arguments_reach_the_layer():
    model = build_layers([_entry("Linear"), _entry("BatchNorm1d"), _entry("LeakyReLU"), _entry("Dropout"),
                          {"type": "Linear"}], (8,), 3, np.random.SeedSequence(0))
    assert model[0].bias is None and model[0].in_features == 8 and model[0].out_features == 6
    assert model[1].num_features == 6 and model[1].momentum == 0.2
    assert model[2].negative_slope == 0.2 and model[3].p == 0.25
    assert (model[4].in_features, model[4].out_features) == (6, 3)


@pytest.mark.parametrize("entries, needle", [
    ([{"type": "Linera"}], "model.layers.0: unknown layer type 'Linera'; did you mean 'Linear'?"),
    ([{"type": "ReLU"}, {"type": "Dropout", "pp": 0.3}, {"type": "Linear"}],
     "model.layers.1 (Dropout): unknown argument 'pp'; did you mean 'p'?"),
    ([{"type": "Dropout", "p": 1.5}, {"type": "Linear"}], "model.layers.0 (Dropout): Dropout: p"),
    ([{"type": "Dropout", "p": "half"}, {"type": "Linear"}], "model.layers.0 (Dropout): p must be of type"),
    ([{"type": "Linear", "out_features": 4, "bias": 1}, {"type": "Linear"}], "model.layers.0 (Linear): bias must be of type bool"),
    ([{"type": "Linear", "out_features": 4}, {"type": "Linear", "in_features": 5}],
     "model.layers.1 (Linear): in_features = 5 disagrees with the input, which has 4"),
    ([{"type": "Linear", "out_features": 4}, {"type": "ReLU"}, {"type": "Linear", "out_features": 7}],
     "model.layers.2 (Linear): the network ends in examples of shape (7,), but the data needs 3 outputs"),
    ([{"type": "Linear"}, {"type": "ReLU"}, {"type": "Linear", "out_features": 3}],
     "model.layers.0 (Linear): missing required argument 'out_features'"),
    ([{"type": "SequenceEncoder", "rnn": {"type": "LSTM", "hidden_size": 4}}, {"type": "Linear"}],
     "model.layers.0 (SequenceEncoder): missing required argument 'time_steps'"),
    ([{"type": "SequenceEncoder", "time_steps": 3, "rnn": {"type": "LSTM", "hiden_size": 4}}, {"type": "Linear"}],
     "model.layers.0 (SequenceEncoder).rnn (LSTM): unknown argument 'hiden_size'; did you mean 'hidden_size'?"),
    ([{"type": "LSTM", "hidden_size": 3}], "returns (output, state); wrap it"),
    ([{"type": "Dropout", "rng": 3}, {"type": "Linear"}], "rng is set by the run (run.seed)"),
    ([{"p": 0.5}], "model.layers.0 has no 'type' key"),
    ("Linear", "model.layers must be an array of tables"),
])
def test_a_wrong_entry_names_the_index_the_class_and_the_argument(entries, needle):
    with pytest.raises(LayerSpecError) as info:
        build_layers(entries, (8,), 3, np.random.SeedSequence(0))
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_check_specs_finds_names_and_types_without_data():
    check_specs([{"type": "Linear", "out_features": 4}, {"type": "ReLU"}, {"type": "Linear"}])
    with pytest.raises(LayerSpecError, match="model.layers.1 .ReLU.: unknown argument 'inplace'"):
        check_specs([{"type": "Linear", "out_features": 4}, {"type": "ReLU", "inplace": True}, {"type": "Linear"}])


def test_linear_after_images_asks_for_a_flatten():
    with pytest.raises(LayerSpecError, match="put a Flatten before it"):
        build_layers([{"type": "Linear"}], (1, 4, 4), 3, np.random.SeedSequence(0))
    model = build_layers([{"type": "Flatten"}, {"type": "Linear"}], (1, 4, 4), 3, np.random.SeedSequence(0))
    assert model[1].in_features == 16


def test_each_random_layer_gets_its_own_generator_spawned_in_list_order():
    specs = [{"type": "Dropout", "p": 0.5}, {"type": "Linear", "out_features": 4}, {"type": "GaussianNoise"},
             {"type": "Linear"}]
    a = build_layers(specs, (8,), 3, np.random.SeedSequence(7))
    b = build_layers(specs, (8,), 3, np.random.SeedSequence(7))
    children = np.random.SeedSequence(7).spawn(4)
    expected = [np.random.default_rng(s).random() for s in children]
    got = [layer.rng.random() for layer in a if hasattr(layer, "rng")]
    assert len(got) == 2 and got == [expected[0], expected[2]]  # Linear draws its weights from children 1 and 3
    w1 = nn.Linear(8, 4, rng=np.random.default_rng(children[1])).weight.data
    np.testing.assert_array_equal(a[1].weight.data, w1)
    for pa, pb in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(pa.data, pb.data)


def test_dtype_comes_from_the_run():
    model = build_layers([{"type": "Linear"}], (8,), 3, np.random.SeedSequence(0), dtype=np.float64)
    assert model.dtype == np.float64 and model[0].weight.data.dtype == np.float64
