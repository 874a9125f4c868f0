"""to_torch / from_torch: every supported layer round-trips with equal outputs, gradients and state."""

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tricklab import export, nn

B = 6  # batch size of every case
TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


# ----------------------------------------------------------------------------- cases
# Each case: the same architecture built in tricklab and in torch (independently, so names and
# shapes can be compared), its input shape, the modes in which it is deterministic, and `terms`:
# the number of roundings along its longest chain of sums (2 per multiply-add, over the largest
# fan-in of each layer: features, batch for parameter gradients, time steps for recurrences);
# 0 where both libraries do the same elementwise operation, so the results are bit for bit equal.

def _randomize_batchnorm(bn, rng):
    """Non-default affine parameters and running statistics, so copying them is tested."""
    n = bn.num_features
    if bn.affine:
        bn.weight.data[...] = rng.uniform(0.5, 2, n)
        bn.bias.data[...] = rng.standard_normal(n)
    bn.running_mean[...] = rng.standard_normal(n)
    bn.running_var[...] = rng.uniform(0.5, 2, n)
    bn.num_batches_tracked[...] = 3
    return bn


def _randomize_torch_batchnorm(bn, gen):
    n = bn.num_features
    with torch.no_grad():
        if bn.affine:
            bn.weight.uniform_(0.5, 2, generator=gen)
            bn.bias.normal_(generator=gen)
        bn.running_mean.normal_(generator=gen)
        bn.running_var.uniform_(0.5, 2, generator=gen)
        bn.num_batches_tracked.fill_(3)
    return bn


def _tl_cases(rng):
    return {
        "Linear": lambda: nn.Linear(5, 3, rng=rng),
        "Linear-nobias": lambda: nn.Linear(5, 3, bias=False, rng=rng),
        "Conv2d": lambda: nn.Conv2d(2, 4, 3, padding=1, rng=rng),
        "Conv2d-grouped-reflect": lambda: nn.Conv2d(4, 6, (2, 3), stride=(2, 1), padding=(1, 2), dilation=(1, 2),
                                                    groups=2, bias=False, padding_mode="reflect", rng=rng),
        "Conv2d-depthwise-same": lambda: nn.Conv2d(3, 3, 4, padding="same", groups=3, padding_mode="circular",
                                                   rng=rng),
        "ReLU": nn.ReLU,
        "LeakyReLU": lambda: nn.LeakyReLU(0.2),
        "Sigmoid": nn.Sigmoid,
        "Tanh": nn.Tanh,
        "Identity": nn.Identity,
        "Flatten": nn.Flatten,
        "Flatten-1-2": lambda: nn.Flatten(1, 2),
        "Dropout": lambda: nn.Dropout(0.3, rng=rng),
        "Dropout-p0": lambda: nn.Dropout(0.0, rng=rng),
        "BatchNorm1d": lambda: _randomize_batchnorm(nn.BatchNorm1d(4, eps=1e-3, momentum=0.2), rng),
        "BatchNorm1d-cumulative": lambda: _randomize_batchnorm(nn.BatchNorm1d(4, momentum=None), rng),
        "BatchNorm1d-noaffine": lambda: _randomize_batchnorm(nn.BatchNorm1d(4, affine=False), rng),
        "BatchNorm2d": lambda: _randomize_batchnorm(nn.BatchNorm2d(3, eps=1e-3, momentum=0.2), rng),
        "BatchNorm2d-cumulative": lambda: _randomize_batchnorm(nn.BatchNorm2d(3, momentum=None), rng),
        "BatchNorm2d-noaffine": lambda: _randomize_batchnorm(nn.BatchNorm2d(3, affine=False), rng),
        "MaxPool2d": lambda: nn.MaxPool2d(2),
        "MaxPool2d-overlapping-padded": lambda: nn.MaxPool2d((3, 2), stride=(2, 1), padding=(1, 1)),
        "AvgPool2d": lambda: nn.AvgPool2d(2),
        "AvgPool2d-overlapping-padded": lambda: nn.AvgPool2d(3, stride=2, padding=1),
        "AdaptiveAvgPool2d-global": lambda: nn.AdaptiveAvgPool2d(1),
        "AdaptiveAvgPool2d-3xNone": lambda: nn.AdaptiveAvgPool2d((3, None)),
        "Dropout2d": lambda: nn.Dropout2d(0.3, rng=rng),
        "Dropout2d-p0": lambda: nn.Dropout2d(0.0, rng=rng),
        "CNN": lambda: nn.Sequential(_randomize_batchnorm(nn.BatchNorm2d(2), rng), nn.ReLU(), nn.MaxPool2d(2),
                                     nn.Dropout2d(0.0, rng=rng), nn.AvgPool2d(3, 1, 1), nn.AdaptiveAvgPool2d(1),
                                     nn.Flatten(), nn.Linear(2, 3, rng=rng)),
        "RNN": lambda: nn.RNN(3, 4, num_layers=2, rng=rng),
        "RNN-relu-nobias": lambda: nn.RNN(3, 4, bias=False, nonlinearity="relu", rng=rng),
        "LSTM": lambda: nn.LSTM(3, 4, num_layers=2, rng=rng),
        "LSTM-nobias": lambda: nn.LSTM(3, 4, bias=False, rng=rng),
        "SequenceEncoder-RNN": lambda: nn.SequenceEncoder(nn.RNN(3, 4, rng=rng), 5),
        "MLP": lambda: nn.Sequential(nn.Linear(5, 8, bias=False, rng=rng), _randomize_batchnorm(nn.BatchNorm1d(8), rng),
                                     nn.ReLU(), nn.Dropout(0.5, rng=rng), nn.Linear(8, 3, rng=rng)),
        "MLP-p0-nested": lambda: nn.Sequential(nn.Sequential(nn.Linear(5, 8, rng=rng), nn.LeakyReLU(0.1)),
                                               nn.BatchNorm1d(8), nn.Dropout(0.0, rng=rng), nn.Linear(8, 3, rng=rng)),
        "LSTM-net": lambda: nn.Sequential(nn.SequenceEncoder(nn.LSTM(3, 4, num_layers=2, rng=rng), 5),
                                          nn.Linear(4, 2, rng=rng), nn.Tanh()),
    }


def _torch_cases(gen):
    tn = torch.nn
    return {
        "Linear": lambda: tn.Linear(5, 3),
        "Linear-nobias": lambda: tn.Linear(5, 3, bias=False),
        "Conv2d": lambda: tn.Conv2d(2, 4, 3, padding=1),
        "Conv2d-grouped-reflect": lambda: tn.Conv2d(4, 6, (2, 3), stride=(2, 1), padding=(1, 2), dilation=(1, 2),
                                                    groups=2, bias=False, padding_mode="reflect"),
        "Conv2d-depthwise-same": lambda: tn.Conv2d(3, 3, 4, padding="same", groups=3, padding_mode="circular"),
        "ReLU": tn.ReLU,
        "LeakyReLU": lambda: tn.LeakyReLU(0.2),
        "Sigmoid": tn.Sigmoid,
        "Tanh": tn.Tanh,
        "Identity": tn.Identity,
        "Flatten": tn.Flatten,
        "Flatten-1-2": lambda: tn.Flatten(1, 2),
        "Dropout": lambda: tn.Dropout(0.3),
        "Dropout-p0": lambda: tn.Dropout(0.0),
        "BatchNorm1d": lambda: _randomize_torch_batchnorm(tn.BatchNorm1d(4, eps=1e-3, momentum=0.2), gen),
        "BatchNorm1d-cumulative": lambda: _randomize_torch_batchnorm(tn.BatchNorm1d(4, momentum=None), gen),
        "BatchNorm1d-noaffine": lambda: _randomize_torch_batchnorm(tn.BatchNorm1d(4, affine=False), gen),
        "BatchNorm2d": lambda: _randomize_torch_batchnorm(tn.BatchNorm2d(3, eps=1e-3, momentum=0.2), gen),
        "BatchNorm2d-cumulative": lambda: _randomize_torch_batchnorm(tn.BatchNorm2d(3, momentum=None), gen),
        "BatchNorm2d-noaffine": lambda: _randomize_torch_batchnorm(tn.BatchNorm2d(3, affine=False), gen),
        "MaxPool2d": lambda: tn.MaxPool2d(2),
        "MaxPool2d-overlapping-padded": lambda: tn.MaxPool2d((3, 2), stride=(2, 1), padding=(1, 1)),
        "AvgPool2d": lambda: tn.AvgPool2d(2),
        "AvgPool2d-overlapping-padded": lambda: tn.AvgPool2d(3, stride=2, padding=1),
        "AdaptiveAvgPool2d-global": lambda: tn.AdaptiveAvgPool2d(1),
        "AdaptiveAvgPool2d-3xNone": lambda: tn.AdaptiveAvgPool2d((3, None)),
        "Dropout2d": lambda: tn.Dropout2d(0.3),
        "Dropout2d-p0": lambda: tn.Dropout2d(0.0),
        "CNN": lambda: tn.Sequential(_randomize_torch_batchnorm(tn.BatchNorm2d(2), gen), tn.ReLU(), tn.MaxPool2d(2),
                                     tn.Dropout2d(0.0), tn.AvgPool2d(3, 1, 1), tn.AdaptiveAvgPool2d(1),
                                     tn.Flatten(), tn.Linear(2, 3)),
        "RNN": lambda: tn.RNN(3, 4, num_layers=2, batch_first=True),
        "RNN-relu-nobias": lambda: tn.RNN(3, 4, bias=False, nonlinearity="relu", batch_first=True),
        "LSTM": lambda: tn.LSTM(3, 4, num_layers=2, batch_first=True),
        "LSTM-nobias": lambda: tn.LSTM(3, 4, bias=False, batch_first=True),
        "SequenceEncoder-RNN": lambda: export.TorchSequenceEncoder(tn.RNN(3, 4, batch_first=True), 5),
        "MLP": lambda: tn.Sequential(tn.Linear(5, 8, bias=False), _randomize_torch_batchnorm(tn.BatchNorm1d(8), gen),
                                     tn.ReLU(), tn.Dropout(0.5), tn.Linear(8, 3)),
        "MLP-p0-nested": lambda: tn.Sequential(tn.Sequential(tn.Linear(5, 8), tn.LeakyReLU(0.1)),
                                               tn.BatchNorm1d(8), tn.Dropout(0.0), tn.Linear(8, 3)),
        "LSTM-net": lambda: tn.Sequential(export.TorchSequenceEncoder(tn.LSTM(3, 4, num_layers=2, batch_first=True), 5),
                                          tn.Linear(4, 2), tn.Tanh()),
    }


BOTH, EVAL = ("train", "eval"), ("eval",)  # dropout with p > 0 draws different masks in each library
# 2 layers x 5 steps of fan-in input + hidden; weight gradients sum over time x batch
RNN_TERMS = 2 * 2 * 5 * (3 + 4) + 2 * 5 * B
CASES = {  # name: (input shape, modes, terms)
    "Linear": ((B, 5), BOTH, 2 * B),
    "Linear-nobias": ((B, 5), BOTH, 2 * B),
    # the largest fan is the weight gradient's sum over batch x output pixels
    "Conv2d": ((B, 2, 5, 6), BOTH, 2 * B * 5 * 6),
    "Conv2d-grouped-reflect": ((B, 4, 5, 6), BOTH, 2 * B * 3 * 6),
    "Conv2d-depthwise-same": ((B, 3, 5, 6), BOTH, 2 * B * 5 * 6),
    "ReLU": ((B, 5), BOTH, 0),
    "LeakyReLU": ((B, 5), BOTH, 0),
    "Sigmoid": ((B, 5), BOTH, 4),
    "Tanh": ((B, 5), BOTH, 4),
    "Identity": ((B, 5), BOTH, 0),
    "Flatten": ((B, 2, 3, 2), BOTH, 0),
    "Flatten-1-2": ((B, 2, 3, 2), BOTH, 0),
    "Dropout": ((B, 5), EVAL, 0),
    "Dropout-p0": ((B, 5), BOTH, 0),
    "BatchNorm1d": ((B, 4), BOTH, 2 * 3 * B),  # mean, variance and the backward's two means over the batch
    "BatchNorm1d-cumulative": ((B, 4), BOTH, 2 * 3 * B),
    "BatchNorm1d-noaffine": ((B, 4), BOTH, 2 * 3 * B),
    # per channel over B x 5 x 4 pixels
    "BatchNorm2d": ((B, 3, 5, 4), BOTH, 2 * 3 * B * 5 * 4),
    "BatchNorm2d-cumulative": ((B, 3, 5, 4), BOTH, 2 * 3 * B * 5 * 4),
    "BatchNorm2d-noaffine": ((B, 3, 5, 4), BOTH, 2 * 3 * B * 5 * 4),
    "MaxPool2d": ((B, 2, 5, 6), BOTH, 0),  # disjoint windows: a maximum and its gradient are exact
    "MaxPool2d-overlapping-padded": ((B, 2, 5, 6), BOTH, 2 * 4),  # an input's gradient sums up to 2 x 2 windows
    "AvgPool2d": ((B, 2, 5, 6), BOTH, 2 * 4),  # the window's kh x kw entries
    "AvgPool2d-overlapping-padded": ((B, 2, 5, 6), BOTH, 2 * 9),
    "AdaptiveAvgPool2d-global": ((B, 2, 5, 6), BOTH, 2 * 30),
    "AdaptiveAvgPool2d-3xNone": ((B, 2, 5, 6), BOTH, 2 * 3),  # 5 rows to 3: windows of 2, 3 and 2 rows
    "Dropout2d": ((B, 3, 2, 2), EVAL, 0),
    "Dropout2d-p0": ((B, 3, 2, 2), BOTH, 0),
    "CNN": ((B, 2, 6, 6), BOTH, 2 * 3 * B * 6 * 6),
    "RNN": ((B, 5, 3), BOTH, RNN_TERMS),
    "RNN-relu-nobias": ((B, 5, 3), BOTH, RNN_TERMS),
    "LSTM": ((B, 5, 3), BOTH, RNN_TERMS),
    "LSTM-nobias": ((B, 5, 3), BOTH, RNN_TERMS),
    "SequenceEncoder-RNN": ((B, 15), BOTH, RNN_TERMS),
    "MLP": ((B, 5), EVAL, 2 * (B + 3 * B + B)),
    "MLP-p0-nested": ((B, 5), BOTH, 2 * (B + 3 * B + B)),
    "LSTM-net": ((B, 15), BOTH, RNN_TERMS + 2 * B),
}
DTYPES = [np.float32, np.float64]


def tricklab_case(name, dtype, seed=0):
    return _tl_cases(np.random.default_rng(seed))[name]().to(dtype)


def torch_case(name, dtype, seed=0):
    torch.manual_seed(seed)
    return _torch_cases(torch.Generator().manual_seed(seed))[name]().to(TORCH_DTYPE[np.dtype(dtype)])


def set_mode(model, mode):
    return model.train(mode == "train")


# ----------------------------------------------------------------------------- one pass each side
def _arrays(y):
    """The output's arrays in order: (output, h_n) and (output, (h_n, c_n)) are flattened."""
    if isinstance(y, (tuple, list)):
        return [a for part in y for a in _arrays(part)]
    return [np.array(y.detach().numpy() if isinstance(y, torch.Tensor) else y)]


def _grad_output(first_output):
    """dLoss/d(first output): the same standard normal draw for every pass of the same shape."""
    return np.random.default_rng(2).standard_normal(first_output.shape).astype(first_output.dtype)


def tricklab_pass(model, x):
    """Outputs, dLoss/dx, parameter gradients and buffers after forward and backward (loss on the first output)."""
    y = model(x)
    model.zero_grad()
    gx = model.backward(_grad_output(_arrays(y)[0]))
    return dict(outputs=_arrays(y), gx=gx, grads={k: p.grad.copy() for k, p in model.named_parameters()},
                buffers=dict(model.named_buffers()))


def torch_pass(module, x):
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    y = module(xt)
    first = y[0] if isinstance(y, tuple) else y
    module.zero_grad()
    (first * torch.from_numpy(_grad_output(_arrays(first)[0]))).sum().backward()
    return dict(outputs=_arrays(y), gx=xt.grad.numpy(), grads={k: p.grad.numpy() for k, p in module.named_parameters()},
                buffers={k: b.numpy() for k, b in module.named_buffers()})


def assert_close(actual, expected, dtype, terms, what):
    """|actual - expected| <= terms * eps * scale, scale = max(1, max|expected|): each of ``terms``
    roundings errs by at most eps (relative) on intermediate values of order the result (at
    least 1: inputs and weights are of order 1, so sums that cancel still carry order-1 error)."""
    expected = np.asarray(expected)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=terms * np.finfo(dtype).eps * scale, err_msg=what)


def assert_passes(a, b, dtype, terms):
    """Two passes agree: to ``terms`` roundings, or exactly when ``terms`` is 0."""
    def check(x, y, what):
        if terms == 0:
            np.testing.assert_array_equal(x, y, err_msg=what)
        else:
            assert_close(x, y, dtype, terms, what)
    assert len(a["outputs"]) == len(b["outputs"])
    for i, (x, y) in enumerate(zip(a["outputs"], b["outputs"])):
        check(x, y, f"output {i}")
    check(a["gx"], b["gx"], "dLoss/dx")
    assert a["grads"].keys() == b["grads"].keys()
    for k in a["grads"]:
        check(a["grads"][k], b["grads"][k], f"gradient of {k}")
    assert a["buffers"].keys() == b["buffers"].keys()
    for k in a["buffers"]:
        check(a["buffers"][k], b["buffers"][k], f"buffer {k}")


def case_input(name, dtype):
    return np.random.default_rng(1).standard_normal(CASES[name][0]).astype(dtype)


MODE_CASES = [(name, mode) for name, (_, modes, _) in CASES.items() for mode in modes]


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,mode", MODE_CASES)
def test_tricklab_to_torch_and_back(name, mode, dtype):
    """tricklab -> torch equals torch's computation; back to tricklab is bit for bit the original."""
    model = set_mode(tricklab_case(name, dtype), mode)
    twin = export.to_torch(model)
    back = export.from_torch(twin, dtype=dtype)  # a parameter-free module has no dtype to follow
    x = case_input(name, dtype)
    ours = tricklab_pass(model, x)
    assert_passes(ours, torch_pass(twin, x), dtype, CASES[name][2])
    assert_passes(tricklab_pass(back, x), ours, dtype, 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,mode", MODE_CASES)
def test_torch_to_tricklab_and_back(name, mode, dtype):
    """torch -> tricklab equals torch's computation; back to torch is bit for bit the original."""
    module = set_mode(torch_case(name, dtype), mode)
    model = export.from_torch(module, dtype=dtype)
    again = export.to_torch(model)
    x = case_input(name, dtype)
    theirs = torch_pass(module, x)
    assert_passes(tricklab_pass(model, x), theirs, dtype, CASES[name][2])
    assert_passes(torch_pass(again, x), theirs, dtype, 0)


@pytest.mark.parametrize("name", CASES)
def test_state_dict_names_and_shapes_are_torchs(name):
    """The names a torch model of the same architecture has; values copied exactly, in the model's dtype."""
    model, module = tricklab_case(name, np.float64), torch_case(name, np.float64)
    reference = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    exported, imported = export.to_torch(model).state_dict(), export.from_torch(module).state_dict()
    assert {k: v.shape for k, v in model.state_dict().items()} == reference
    assert list(exported) == list(model.state_dict()) and list(imported) == list(module.state_dict())
    for k, v in model.state_dict().items():
        assert exported[k].dtype == (torch.float64 if v.dtype == np.float64 else torch.int64), k
        np.testing.assert_array_equal(exported[k].numpy(), v, err_msg=k)
    for k, v in module.state_dict().items():
        assert imported[k].dtype == v.numpy().dtype, k
        np.testing.assert_array_equal(imported[k], v.numpy(), err_msg=k)


def test_dtype_follows_the_weights():
    assert export.to_torch(tricklab_case("Linear", np.float32)).weight.dtype == torch.float32
    assert export.from_torch(torch.nn.Linear(2, 3).double()).dtype == np.float64
    assert export.from_torch(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())).dtype == np.float32
    assert export.from_torch(torch.nn.ReLU()).dtype == np.float32  # nothing to follow: tricklab's default
    assert export.from_torch(torch.nn.ReLU(), dtype=np.float64).dtype == np.float64
    converted = export.from_torch(torch.nn.Linear(2, 3).double(), dtype=np.float32)
    assert converted.dtype == converted.weight.data.dtype == np.float32


def test_hyperparameters_survive_both_ways():
    model = nn.Sequential(nn.Flatten(1, 2), nn.LeakyReLU(0.3), nn.Dropout(0.25),
                          nn.BatchNorm1d(4, eps=1e-3, momentum=None, affine=False),
                          nn.SequenceEncoder(nn.RNN(2, 3, num_layers=2, bias=False, nonlinearity="relu"), 2))
    twin = export.to_torch(model)
    assert (twin[0].start_dim, twin[0].end_dim, twin[1].negative_slope, twin[2].p) == (1, 2, 0.3, 0.25)
    assert (twin[3].eps, twin[3].momentum, twin[3].affine, twin[3].track_running_stats) == (1e-3, None, False, True)
    rnn = twin[4].rnn
    assert (twin[4].time_steps, rnn.num_layers, rnn.bias, rnn.nonlinearity, rnn.batch_first) == \
        (2, 2, False, "relu", True)
    back = export.from_torch(twin)
    assert (back[0].start_dim, back[0].end_dim, back[1].negative_slope, back[2].p, back[2].scaling) == \
        (1, 2, 0.3, 0.25, "inverted")
    assert (back[3].eps, back[3].momentum, back[3].affine) == (1e-3, None, False)
    assert (back[4].time_steps, back[4].rnn.num_layers, back[4].rnn.bias, back[4].rnn.nonlinearity) == \
        (2, 2, False, "relu")


def test_conv2d_hyperparameters_survive_both_ways():
    model = nn.Sequential(nn.Conv2d(4, 6, (2, 3), stride=(2, 1), padding=(1, 2), dilation=(3, 1), groups=2,
                                    bias=False, padding_mode="replicate"), nn.Conv2d(6, 2, 3, padding="same"))
    names = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode")
    expected = [(4, 6, (2, 3), (2, 1), (1, 2), (3, 1), 2, "replicate"), (6, 2, (3, 3), (1, 1), "same", (1, 1), 1, "zeros")]
    twin = export.to_torch(model)
    assert [tuple(getattr(m, k) for k in names) for m in twin] == expected
    assert [m.bias is None for m in twin] == [True, False]
    back = export.from_torch(twin)
    assert [tuple(getattr(m, k) for k in names) for m in back] == expected
    assert [m.bias is None for m in back] == [True, False]


def test_pooling_batchnorm2d_and_dropout2d_hyperparameters_survive_both_ways():
    model = nn.Sequential(nn.MaxPool2d((3, 2), stride=(1, 2), padding=(1, 0)), nn.AvgPool2d(4, padding=2),
                          nn.AdaptiveAvgPool2d((2, None)), nn.BatchNorm2d(3, eps=1e-3, momentum=None, affine=False),
                          nn.Dropout2d(0.25))
    twin = export.to_torch(model)
    windows = [((3, 2), (1, 2), (1, 0)), ((4, 4), (4, 4), (2, 2))]
    assert [(m.kernel_size, m.stride, m.padding) for m in twin[:2]] == windows
    assert (type(twin[1]).__name__, twin[1].count_include_pad, twin[1].ceil_mode) == ("AvgPool2d", True, False)
    assert (twin[2].output_size, twin[4].p, type(twin[4]).__name__) == ((2, None), 0.25, "Dropout2d")
    assert (twin[3].eps, twin[3].momentum, twin[3].affine, twin[3].track_running_stats) == (1e-3, None, False, True)
    back = export.from_torch(twin)
    assert [type(m) for m in back] == [type(m) for m in model]
    assert [(m.kernel_size, m.stride, m.padding) for m in back[:2]] == windows
    assert (back[2].output_size, back[4].p, back[4].scaling) == ((2, None), 0.25, "inverted")
    assert (back[3].eps, back[3].momentum, back[3].affine, back[3].channels) == (1e-3, None, False, None)


def test_each_modules_mode_is_kept():
    model = tricklab_case("MLP", np.float32).train()
    model[1].eval()
    twin = export.to_torch(model)
    assert [m.training for m in twin] == [True, False, True, True, True] and twin.training
    twin[3].eval()
    assert [m.training for m in export.from_torch(twin)] == [True, False, True, False, True]


def test_weights_are_copied_not_shared():
    model = tricklab_case("MLP", np.float32)
    twin = export.to_torch(model)
    back = export.from_torch(twin)
    before = model.state_dict()
    model[0].weight.data += 1
    model[1].running_mean += 1
    np.testing.assert_array_equal(twin[0].weight.detach().numpy(), before["0.weight"])
    with torch.no_grad():
        twin[4].bias += 1
    np.testing.assert_array_equal(back[4].bias.data, before["4.bias"])


def test_from_torch_loads_every_weight_strictly(monkeypatch):
    """A built layer whose weights are not the torch module's is an error, never a weight left at its init."""
    builders = export._from_torch_builders(torch)
    monkeypatch.setitem(builders, torch.nn.Linear,  # a builder that forgets bias=False
                        lambda t, path, dtype, rng: nn.Linear(t.in_features, t.out_features, dtype=dtype))
    with pytest.raises(KeyError, match=r"missing keys \['1.bias'\], unexpected keys \[\]"):
        export.from_torch(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(2, 3, bias=False)))


def test_dropout_layers_get_their_own_generators_from_rng():
    module = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Dropout(0.5))
    x = np.ones((4, 50), dtype=np.float32)
    a, b = export.from_torch(module, rng=7), export.from_torch(module, rng=7)
    first, second, again = a[0](x), a[1](x), b[0](x)
    np.testing.assert_array_equal(first, again)  # the same seed: the same masks
    assert not np.array_equal(first, second)  # each layer its own stream


def test_classic_dropout_exports_folded_for_inference():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(5, 8, rng=rng), nn.ReLU(), nn.Dropout(0.4, scaling="test"),
                          nn.Linear(8, 3, rng=rng))
    model.to(np.float64).eval()
    x = rng.standard_normal((B, 5))
    twin = export.to_torch(nn.fold_dropout_scaling(model))
    assert_close(twin(torch.from_numpy(x)).detach().numpy(), model(x), np.float64, 2 * 8, "folded output")


def test_torch_sequence_encoder_pickles():
    twin = export.to_torch(tricklab_case("LSTM-net", np.float32)).eval()
    again = pickle.loads(pickle.dumps(twin))
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 15)).astype(np.float32))
    assert type(again[0]) is export.TorchSequenceEncoder
    torch.testing.assert_close(again(x), twin(x), rtol=0, atol=0)


# ----------------------------------------------------------------------------- what has no twin
@pytest.mark.parametrize("layer,why", [
    (lambda: nn.DropConnect(3, 3), "DropConnect"),
    (lambda: nn.Shakeout(3, 3), "Shakeout"),
    (lambda: nn.Whiteout(3, 3), "Whiteout"),
    (lambda: nn.GaussianNoise(0.1), "GaussianNoise"),
    (lambda: nn.ActivityL1(1e-3), "ActivityL1"),
    (lambda: nn.Dropout(0.5, scaling="test"),
     r"Dropout\) has no PyTorch equivalent: scaling='test'.*fold_dropout_scaling"),
    (lambda: nn.BatchNorm1d(3, units=[0, 2]), r"BatchNorm1d\) has no PyTorch equivalent: units="),
    (lambda: nn.BatchNorm2d(3, channels=[1]), r"BatchNorm2d\) has no PyTorch equivalent: channels= normalizes "
                                              r"selected channels only"),
    (lambda: nn.Dropout2d(0.5, scaling="test"), r"Dropout2d\) has no PyTorch equivalent: scaling='test'.*"
                                                r"torch.nn.Dropout2d is inverted"),
])
def test_to_torch_names_the_layer_without_a_twin(layer, why):
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), layer())
    with pytest.raises(export.UnsupportedLayerError, match=rf"^to_torch: layer 2 \({why}"):
        export.to_torch(model)


@pytest.mark.parametrize("rnn,why", [(lambda: nn.RNN(3, 4, zoneout=0.1), r"RNN\) .*zoneout=0.1"),
                                     (lambda: nn.LSTM(3, 4, zoneout_c=0.5), r"LSTM\) .*zoneout_c=0.5")])
def test_to_torch_refuses_zoneout_naming_the_nested_layer(rnn, why):
    model = nn.Sequential(nn.Identity(), nn.Sequential(nn.SequenceEncoder(rnn(), 2)))
    with pytest.raises(export.UnsupportedLayerError, match=rf"^to_torch: layer 1\.0\.rnn \({why}"):
        export.to_torch(model)


def test_to_torch_refuses_a_loss_and_a_non_module():
    with pytest.raises(export.UnsupportedLayerError, match=r"^to_torch: the model \(MSELoss\) has no PyTorch"):
        export.to_torch(nn.MSELoss())
    with pytest.raises(TypeError, match="to_torch expects a tricklab.nn Module, got Linear"):
        export.to_torch(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("module,why", [
    (lambda: torch.nn.Conv1d(1, 1, 1), r"Conv1d\) has no tricklab equivalent"),
    (lambda: torch.nn.AlphaDropout(0.5), r"AlphaDropout\) has no tricklab equivalent"),
    (lambda: torch.nn.LSTM(3, 4), r"LSTM\) has batch_first=False"),
    (lambda: torch.nn.RNN(3, 4, batch_first=True, bidirectional=True), r"RNN\) has bidirectional=True"),
    (lambda: torch.nn.LSTM(3, 4, num_layers=2, dropout=0.2, batch_first=True), r"LSTM\) has dropout=0.2"),
    (lambda: torch.nn.LSTM(3, 4, proj_size=2, batch_first=True), r"LSTM\) has proj_size=2"),
    (lambda: torch.nn.BatchNorm1d(3, track_running_stats=False), r"BatchNorm1d\) has track_running_stats=False"),
    (lambda: torch.nn.BatchNorm2d(3, track_running_stats=False), r"BatchNorm2d\) has track_running_stats=False"),
    (lambda: torch.nn.MaxPool2d(2, dilation=2), r"MaxPool2d\) has dilation=2"),
    (lambda: torch.nn.MaxPool2d(2, ceil_mode=True), r"MaxPool2d\) has ceil_mode=True"),
    (lambda: torch.nn.MaxPool2d(2, return_indices=True), r"MaxPool2d\) has return_indices=True"),
    (lambda: torch.nn.AvgPool2d(2, count_include_pad=False), r"AvgPool2d\) has count_include_pad=False"),
    (lambda: torch.nn.AvgPool2d(2, divisor_override=3), r"AvgPool2d\) has divisor_override=3"),
    (lambda: torch.nn.MaxPool2d(3, padding=2), r"MaxPool2d\): MaxPool2d: padding \(2, 2\) must be at most half"),
    (lambda: torch.nn.AdaptiveMaxPool2d(1), r"AdaptiveMaxPool2d\) has no tricklab equivalent"),
    (lambda: torch.nn.Dropout(1.0), r"Dropout\): Dropout: p \(drop probability\) must be in \[0, 1\)"),
])
def test_from_torch_names_the_module_without_a_twin(module, why):
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Sequential(torch.nn.Tanh(), module()))
    with pytest.raises(export.UnsupportedLayerError, match=rf"^from_torch: layer 1\.1 \({why}"):
        export.from_torch(model)


def test_from_torch_refuses_dtypes_tricklab_does_not_compute_in():
    with pytest.raises(TypeError, match=r"torch.float16.*\.float\(\) or \.double\(\)"):
        export.from_torch(torch.nn.Linear(2, 2).half())
    with pytest.raises(TypeError, match=r"\['torch.float32', 'torch.float64'\]"):
        export.from_torch(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).double()))
    with pytest.raises(TypeError, match="from_torch expects a torch.nn.Module, got Linear"):
        export.from_torch(nn.Linear(2, 2))


# ----------------------------------------------------------------------------- torch is optional
def test_without_torch_tricklab_imports_and_export_says_what_to_install():
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "import tricklab.export as export, tricklab.nn as nn\n"
        "for call in (lambda: export.to_torch(nn.ReLU()), lambda: export.from_torch(None),\n"
        "             lambda: export.TorchSequenceEncoder):\n"
        "    try:\n"
        "        call()\n"
        "    except ImportError as err:\n"
        "        print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.splitlines() == ["tricklab.export needs PyTorch: pip install torch==2.13.0"] * 3
