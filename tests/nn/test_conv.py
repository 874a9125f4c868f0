"""Conv2d: parity with torch.nn.Conv2d to rounding error, gradcheck, initialization, shapes and errors.

Parity compares tricklab, in the drawn dtype, with torch in float64 on the same values (float32
widened exactly). Every computed entry is a sum of n products (n = C/G kh kw (+ bias) for the
output, N H' W' for the parameter gradients, and for the input gradient O/G times the kernel
offsets and padded copies that reach one pixel), so any summation order lies within
gamma_n sum |terms| of the exact value (Higham, section 3.1); sum |terms| is torch's float64
pass on |x|, |w|, |b| and |dLoss/dy|. Each entry is allowed SAFETY (u + u64) n sum |terms|.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.rounding import SAFETY, UNIT
from tricklab import export, nn
from tricklab.check import gradcheck
from tricklab.nn import init
from tricklab.nn.conv import PADDING_MODES, _pads
from tricklab.nn.spec import build_layers

U64 = UNIT[np.dtype(np.float64)]


# ----------------------------------------------------------------------------- the reference and its bound
def _torch_pass(twin, x, gy):
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    twin.zero_grad()
    yt = twin(xt)
    yt.backward(torch.tensor(gy, dtype=torch.float64))
    out = {"output": yt.detach().numpy(), "input_grad": xt.grad.numpy()}
    out.update({name: p.grad.numpy() for name, p in twin.named_parameters()})
    return out


def _copies(layer, size, pad):
    """The most padded positions that copy one input position along an axis (1 for zeros padding)."""
    if layer.padding_mode == "zeros":
        return 1
    return int(np.bincount(layer._source_index(size, pad), minlength=size).max())


def term_counts(layer, x_shape, y_shape):
    """n, the number of products summed into each entry, per result."""
    cg, og = layer.in_channels // layer.groups, layer.out_channels // layer.groups
    kh, kw = layer.kernel_size
    copies = _copies(layer, x_shape[2], layer._pad[0]) * _copies(layer, x_shape[3], layer._pad[1])
    per_pixel = y_shape[0] * y_shape[2] * y_shape[3]
    counts = {"output": cg * kh * kw + (layer.bias is not None), "input_grad": og * kh * kw * copies,
              "weight": per_pixel}
    if layer.bias is not None:
        counts["bias"] = per_pixel
    return counts


def reference_and_terms(layer, x, gy):
    """torch's float64 results and the sums of |terms| behind each entry (the same pass on absolute values)."""
    twin = export.to_torch(layer).double()
    reference = _torch_pass(twin, x, gy)
    with torch.no_grad():
        for p in twin.parameters():
            p.abs_()
    return reference, _torch_pass(twin, np.abs(x), np.abs(gy))


def tricklab_pass(layer, x, gy):
    y = layer(x)
    layer.zero_grad()
    out = {"output": y, "input_grad": layer.backward(gy)}
    out.update({name: p.grad.copy() for name, p in layer.named_parameters()})
    return out


def assert_within_rounding(ours, reference, terms, counts, dtype):
    assert sorted(ours) == sorted(reference) == sorted(counts)
    unit = UNIT[np.dtype(dtype)]
    for name, ref in reference.items():
        assert ours[name].shape == ref.shape and ours[name].dtype == dtype, name
        allowed = SAFETY * (unit + U64) * counts[name] * terms[name]
        excess = np.abs(ours[name].astype(np.float64) - ref) - allowed
        if excess.max() > 0:
            i = np.unravel_index(np.argmax(excess), excess.shape)
            raise AssertionError(f"{name}{list(i)}: {ours[name][i]:.9g} against torch's float64 {ref[i]:.9g}, "
                                 f"beyond the rounding bound {allowed[i]:.3g}")


def check_parity(layer, x_shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(layer.dtype)
    y_shape = (x_shape[0], *layer.output_shape(x_shape[1:]))
    gy = rng.standard_normal(y_shape).astype(layer.dtype)
    reference, terms = reference_and_terms(layer, x, gy)
    assert reference["output"].shape == y_shape  # output_shape agrees with torch
    assert_within_rounding(tricklab_pass(layer, x, gy), reference, terms, term_counts(layer, x_shape, y_shape),
                           layer.dtype)


# ----------------------------------------------------------------------------- random configurations
@st.composite
def conv_cases(draw):
    """Conv2d arguments and an input shape the kernel fits (with torch's limits on reflect/circular padding)."""
    groups = draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    kind = draw(st.sampled_from(["int", "pair", "same", "valid"]))
    stride = (1, 1) if kind == "same" else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = {"int": draw(st.integers(0, 3)), "pair": (draw(st.integers(0, 3)), draw(st.integers(0, 3))),
               "same": "same", "valid": "valid"}[kind]
    mode = draw(st.sampled_from(PADDING_MODES))
    sizes = []
    for (before, after), k, d in zip(_pads(padding, kernel, stride, dilation), kernel, dilation):
        widest = max(before, after)
        smallest = max(1, d * (k - 1) + 1 - before - after, widest + 1 if mode == "reflect" else widest)
        sizes.append(smallest + draw(st.integers(0, 5)))
    kwargs = dict(in_channels=groups * draw(st.integers(1, 3)), out_channels=groups * draw(st.integers(1, 3)),
                  kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                  bias=draw(st.booleans()), padding_mode=mode)
    return kwargs, (draw(st.integers(1, 3)), kwargs["in_channels"], *sizes)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")  # torch's copy
@settings(max_examples=80, deadline=None)
@given(case=conv_cases(), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1))
# depthwise with a channel multiplier; "same" with an even kernel pads one more after than before
@example(case=(dict(in_channels=3, out_channels=6, kernel_size=3, groups=3), (2, 3, 6, 5)), dtype=np.float32, seed=0)
@example(case=(dict(in_channels=2, out_channels=3, kernel_size=(4, 2), padding="same", dilation=(1, 3)),
               (2, 2, 7, 6)), dtype=np.float32, seed=1)
@example(case=(dict(in_channels=2, out_channels=2, kernel_size=3, stride=2, padding=2, padding_mode="reflect"),
               (3, 2, 3, 8)), dtype=np.float64, seed=2)
def test_conv2d_matches_torch_to_rounding(case, dtype, seed):
    kwargs, x_shape = case
    layer = nn.Conv2d(**kwargs, rng=np.random.default_rng(seed), dtype=dtype)
    check_parity(layer, x_shape, seed)


def test_the_rounding_bound_catches_an_error_of_one_in_ten_thousand():
    layer = nn.Conv2d(4, 6, 3, padding=1, groups=2, rng=0)
    rng = np.random.default_rng(0)
    x, gy = rng.standard_normal((2, 4, 6, 6)).astype(np.float32), rng.standard_normal((2, 6, 6, 6)).astype(np.float32)
    reference, terms = reference_and_terms(layer, x, gy)
    counts = term_counts(layer, x.shape, gy.shape)
    ours = tricklab_pass(layer, x, gy)
    assert_within_rounding(ours, reference, terms, counts, np.float32)
    for name in ("output", "input_grad"):
        off = dict(ours, **{name: (ours[name] + 1e-4 * terms[name]).astype(np.float32)})
        with pytest.raises(AssertionError, match=rf"^{name}\["):
            assert_within_rounding(off, reference, terms, counts, np.float32)


def test_float64_agrees_with_torch_to_1e_10():
    layer = nn.Conv2d(6, 4, (3, 2), stride=(1, 2), padding=(2, 1), dilation=2, groups=2, rng=0, dtype=np.float64)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6, 9, 8))
    gy = rng.standard_normal((4, *layer.output_shape(x.shape[1:])))
    reference, _ = reference_and_terms(layer, x, gy)
    for name, value in tricklab_pass(layer, x, gy).items():
        np.testing.assert_allclose(value, reference[name], rtol=1e-10, atol=1e-10, err_msg=name)


# ----------------------------------------------------------------------------- the batch in chunks
CHUNKED = [
    (dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, groups=2), (5, 4, 6, 7)),
    (dict(in_channels=3, out_channels=2, kernel_size=(2, 3), stride=(2, 1), dilation=(1, 2), padding_mode="reflect",
          padding=2), (4, 3, 5, 6)),
    (dict(in_channels=2, out_channels=3, kernel_size=2, bias=False), (3, 2, 4, 4)),
]


def _chunk_bytes(layer, x_shape, examples):
    """A column budget that gives chunks of ``examples`` examples."""
    ho, wo = layer.output_shape(x_shape[1:])[1:]
    kh, kw = layer.kernel_size
    rows = max(layer.in_channels * kh * kw, layer.out_channels)
    return examples * rows * ho * wo * np.dtype(layer.dtype).itemsize


@pytest.mark.parametrize("kwargs,x_shape", CHUNKED)
@pytest.mark.parametrize("examples", [1, 2])
def test_chunks_match_the_whole_batch_and_torch(kwargs, x_shape, examples):
    whole = nn.Conv2d(**kwargs, rng=0, dtype=np.float64)
    chunked = nn.Conv2d(**kwargs, rng=0, dtype=np.float64)
    chunked.column_bytes = _chunk_bytes(chunked, x_shape, examples)
    assert len(chunked._chunks(x_shape[0], *chunked.output_shape(x_shape[1:])[1:])) == -(-x_shape[0] // examples)
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape)
    gy = rng.standard_normal((x_shape[0], *whole.output_shape(x_shape[1:])))
    whole(x), chunked(x)
    assert whole._cols is not None  # one chunk: forward keeps the columns
    assert chunked._cols is None and chunked._x is not None  # chunks: only x, backward rebuilds the columns
    expected = tricklab_pass(whole, x, gy)
    assert whole._cols is None  # dX was written over them
    np.testing.assert_allclose(whole.backward(gy), expected["input_grad"], rtol=1e-12, atol=1e-12)  # rebuilt from x
    got = tricklab_pass(chunked, x, gy)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-12, atol=1e-12, err_msg=name)
    for dtype in (np.float32, np.float64):
        layer = nn.Conv2d(**kwargs, rng=1, dtype=dtype)
        layer.column_bytes = _chunk_bytes(layer, x_shape, examples)
        check_parity(layer, x_shape, seed=examples)


def test_chunked_backward_parameters_and_gradcheck():
    layer = nn.Conv2d(2, 3, 3, padding=1, rng=0, dtype=np.float64)
    layer.column_bytes = 1  # one example a chunk
    x = np.random.default_rng(2).standard_normal((3, 2, 4, 5))
    result = gradcheck(layer, x)
    assert result.ok
    gy = np.random.default_rng(3).standard_normal((3, 3, 4, 5))
    layer.zero_grad()
    layer(x)
    layer.backward(gy)
    once = {k: p.grad.copy() for k, p in layer.named_parameters()}
    layer.zero_grad()
    layer(x)
    assert layer.backward_parameters(gy) is None
    for k, p in layer.named_parameters():
        np.testing.assert_array_equal(p.grad, once[k], err_msg=k)


def test_inference_mode_keeps_nothing_for_backward():
    layer = nn.Conv2d(2, 3, 3, rng=0)
    with nn.inference_mode():
        layer(np.ones((2, 2, 5, 5), dtype=np.float32))
    assert layer._cols is None and layer._x is None


# ----------------------------------------------------------------------------- finite differences
@pytest.mark.parametrize("kwargs,x_shape", [
    (dict(in_channels=2, out_channels=3, kernel_size=3), (2, 2, 5, 5)),
    (dict(in_channels=4, out_channels=2, kernel_size=(2, 3), stride=(2, 1), padding=(1, 2), groups=2), (2, 4, 5, 4)),
    (dict(in_channels=3, out_channels=3, kernel_size=4, padding="same", dilation=(2, 1), groups=3), (1, 3, 7, 6)),
    (dict(in_channels=2, out_channels=2, kernel_size=3, padding=2, padding_mode="reflect", bias=False), (2, 2, 4, 3)),
    (dict(in_channels=2, out_channels=3, kernel_size=2, stride=3, padding=1, padding_mode="replicate"), (2, 2, 6, 5)),
    (dict(in_channels=1, out_channels=2, kernel_size=3, padding=(1, 3), padding_mode="circular"), (2, 1, 4, 3)),
])
def test_conv2d_gradcheck(kwargs, x_shape):
    layer = nn.Conv2d(**kwargs, rng=0)
    x = np.random.default_rng(1).standard_normal(x_shape)
    result = gradcheck(layer, x)
    assert result.ok and result.checked == sum(min(a.size, 64) for a in [x, *(p.data for p in layer.parameters())])


def test_backward_parameters_gives_backwards_gradients_and_accumulates(rng):
    layer = nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=rng, dtype=np.float64)
    x, gy = rng.standard_normal((2, 3, 7, 7)), rng.standard_normal((2, 4, 4, 4))
    layer(x)
    layer.backward(gy)
    once = {k: p.grad.copy() for k, p in layer.named_parameters()}
    layer(x)
    assert layer.backward_parameters(gy) is None
    for k, p in layer.named_parameters():
        np.testing.assert_array_equal(p.grad, 2 * once[k], err_msg=k)


def test_output_dtype_follows_the_layer():
    layer = nn.Conv2d(1, 2, 2, rng=0)
    y = layer(np.ones((1, 1, 3, 3)))
    assert y.dtype == np.float32 and layer.backward(np.ones_like(y)).dtype == np.float32
    assert layer.double()(np.ones((1, 1, 3, 3), dtype=np.float32)).dtype == np.float64


# ----------------------------------------------------------------------------- initialization
GROUPED = dict(in_channels=32, out_channels=48, kernel_size=(3, 5), groups=4)  # weight (48, 8, 3, 5)


def test_fans_are_torchs():
    layer, twin = nn.Conv2d(**GROUPED, rng=0), torch.nn.Conv2d(**GROUPED)
    fans = torch.nn.init._calculate_fan_in_and_fan_out(twin.weight)
    assert init.fan_in_and_fan_out(layer.weight.shape) == fans == (8 * 3 * 5, 48 * 3 * 5)


def _assert_uniform(w, bound):
    """Inside [-bound, bound], reaching its ends, with the variance bound^2 / 3 to 5 standard errors."""
    w = np.asarray(w, dtype=np.float64).ravel()
    se = math.sqrt(4 / 45) * bound**2 / math.sqrt(w.size)  # Var(X^2) = 4 b^4 / 45 for X ~ U[-b, b]
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert abs(w.var() - bound**2 / 3) < 5 * se


def _assert_normal_variance(w, var):
    w = np.asarray(w, dtype=np.float64).ravel()
    assert abs(w.var() - var) < 5 * math.sqrt(2 / w.size) * var


def test_default_init_is_torchs():
    torch.manual_seed(0)
    layer, twin = nn.Conv2d(**GROUPED, rng=0), torch.nn.Conv2d(**GROUPED)
    bound = 1 / math.sqrt(8 * 3 * 5)
    for w in (layer.weight.data, twin.weight.detach().numpy()):
        _assert_uniform(w, bound)
    for b in (layer.bias.data, twin.bias.detach().numpy()):
        assert np.abs(b).max() <= bound
    big = nn.Conv2d(4, 4096, 4, rng=1)  # a bias long enough for its statistics; fan_in 4 * 4 * 4
    _assert_uniform(big.bias.data, 1 / 8)


@pytest.mark.parametrize("name", ["kaiming_normal", "kaiming_uniform", "xavier_uniform", "xavier_normal"])
def test_named_init_uses_the_kernel_fans_as_torch(name):
    torch.manual_seed(0)
    layer, twin = nn.Conv2d(**GROUPED, init=name, rng=0), torch.nn.Conv2d(**GROUPED)
    getattr(torch.nn.init, name + "_")(twin.weight)
    fan_in, fan_out = 8 * 3 * 5, 48 * 3 * 5
    var = 2 / fan_in if name.startswith("kaiming") else 2 / (fan_in + fan_out)  # kaiming: a = 0, fan_in, ReLU gain
    for w in (layer.weight.data, twin.weight.detach().numpy()):
        if name.endswith("uniform"):
            _assert_uniform(w, math.sqrt(3 * var))
        else:
            _assert_normal_variance(w, var)


@pytest.mark.parametrize("shape_kwargs", [dict(in_channels=4, out_channels=6, kernel_size=2),   # rows 6 < 16
                                          dict(in_channels=2, out_channels=12, kernel_size=(1, 3))])  # 12 > 6
def test_orthogonal_init_on_the_flattened_kernel(shape_kwargs):
    torch.manual_seed(0)
    layer, twin = nn.Conv2d(**shape_kwargs, init="orthogonal", rng=0, dtype=np.float64), torch.nn.Conv2d(**shape_kwargs)
    torch.nn.init.orthogonal_(twin.weight)
    for w in (layer.weight.data, twin.weight.detach().double().numpy()):
        flat = w.reshape(w.shape[0], -1)
        gram = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
        np.testing.assert_allclose(gram, np.eye(len(gram)), atol=1e-6)


def test_init_callable_gets_the_kernel_shape():
    seen = []
    def zeros(shape, rng, dtype):
        seen.append(shape)
        return np.zeros(shape, dtype)

    assert not nn.Conv2d(4, 6, (2, 3), groups=2, init=zeros, rng=0).weight.data.any()
    assert seen == [(6, 2, 2, 3)]


# ----------------------------------------------------------------------------- shapes and the layer list
@pytest.mark.parametrize("kwargs,shape,out", [
    (dict(kernel_size=3), (2, 8, 8), (4, 6, 6)),
    (dict(kernel_size=(4, 2), padding="same"), (2, 7, 5), (4, 7, 5)),
    (dict(kernel_size=3, padding="valid", stride=2), (2, 8, 9), (4, 3, 4)),
    (dict(kernel_size=3, padding=(1, 0), dilation=(2, 1), stride=(1, 3)), (2, 6, 10), (4, 4, 3)),
])
def test_output_shape(kwargs, shape, out):
    layer = nn.Conv2d(2, 4, **kwargs, rng=0)
    assert layer.output_shape(shape) == out == layer(np.zeros((1, *shape))).shape[1:]


def test_layer_list_infers_in_channels_and_the_flattened_width():
    model = build_layers([{"type": "Conv2d", "out_channels": 4, "kernel_size": 3}, {"type": "Flatten"},
                          {"type": "Linear"}], (1, 8, 8), 3, np.random.SeedSequence(0))
    assert (model[0].in_channels, model[0].out_channels, model[2].in_features) == (1, 4, 4 * 6 * 6)
    assert model(np.zeros((5, 1, 8, 8), dtype=np.float32)).shape == (5, 3)
    pair = build_layers([{"type": "Conv2d", "out_channels": 2, "kernel_size": [3, 1], "padding": "same"}],
                        (3, 5, 5), None, np.random.SeedSequence(0))
    assert pair[0].kernel_size == (3, 1) and pair.output_shape((3, 5, 5)) == (2, 5, 5)


# ----------------------------------------------------------------------------- errors
NAME = r"Conv2d\(3, 4, kernel_size=\(3, 3\)\)"


@pytest.mark.parametrize("shape", [(2, 5, 8, 8), (3, 8, 8), (2, 3, 8)])
def test_forward_names_the_layer_and_the_expected_shape(shape):
    with pytest.raises(ValueError, match=rf"^{NAME} got input of shape \({', '.join(map(str, shape))}\); "
                                         r"expected \(N, 3, H, W\)$"):
        nn.Conv2d(3, 4, 3, rng=0)(np.zeros(shape))


def test_a_kernel_larger_than_the_padded_input_is_refused():
    with pytest.raises(ValueError, match=rf"^{NAME}: the padded input width \(4\) is smaller than the dilated "
                                         r"kernel \(5\)"):
        nn.Conv2d(3, 4, 3, padding=(0, 1), dilation=2, rng=0)(np.zeros((1, 3, 9, 2)))


def test_output_shape_names_the_expected_example_shape():
    with pytest.raises(ValueError, match=rf"^{NAME} expects examples of shape \(C, H, W\) = \(3, H, W\), got \(48,\)"):
        nn.Conv2d(3, 4, 3, rng=0).output_shape((48,))


def test_backward_checks_the_gradient_shape():
    layer = nn.Conv2d(3, 4, 3, rng=0)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.zeros((1, 4, 2, 2)))
    layer(np.zeros((2, 3, 5, 5)))
    with pytest.raises(ValueError, match=rf"^{NAME}.backward got a gradient of shape \(2, 4, 2, 2\); "
                                         r"expected the output's shape \(2, 4, 3, 3\)"):
        layer.backward(np.zeros((2, 4, 2, 2)))


@pytest.mark.parametrize("kwargs,message", [
    (dict(in_channels=0), "in_channels must be a positive integer, got 0"),
    (dict(out_channels=True), "out_channels must be a positive integer, got True"),
    (dict(groups=2), r"in_channels \(3\) must be divisible by groups \(2\)"),
    (dict(in_channels=4, groups=4), r"out_channels \(6\) must be divisible by groups \(4\)"),
    (dict(kernel_size=0), "kernel_size must be a positive integer or a pair of them, got 0"),
    (dict(kernel_size=(3, 3, 3)), r"kernel_size must be a positive integer or a pair of them, got \(3, 3, 3\)"),
    (dict(stride=(1, 0)), "stride must be a positive integer"),
    (dict(dilation=1.5), "dilation must be a positive integer"),
    (dict(padding=-1), "padding must be a non-negative integer"),
    (dict(padding="full"), "padding must be an integer, a pair of them, 'same' or 'valid', got 'full'"),
    (dict(padding="same", stride=2), r"padding='same' needs stride 1 \(as in torch\), got stride=\(2, 2\)"),
    (dict(padding_mode="mirror"), r"padding_mode must be one of \['zeros', 'reflect', 'replicate', 'circular'\]"),
    (dict(init="he"), "init must be a callable or one of"),
])
def test_constructor_refuses_bad_arguments(kwargs, message):
    kwargs = dict(dict(in_channels=3, out_channels=6, kernel_size=3), **kwargs)
    with pytest.raises(ValueError, match=message):
        nn.Conv2d(**kwargs)


@pytest.mark.parametrize("mode,padding,width,message", [
    ("reflect", 2, 2, r"padding_mode='reflect' needs the padding \(2\) smaller than the input width \(2\)"),
    ("circular", 3, 2, r"padding_mode='circular' needs the padding \(3\) at most the input width \(2\)"),
])
def test_padding_wider_than_torch_allows_is_refused(mode, padding, width, message):
    layer = nn.Conv2d(1, 1, 3, padding=(0, padding), padding_mode=mode, rng=0)
    with pytest.raises(ValueError, match=message):
        layer.output_shape((1, 5, width))
    twin = export.to_torch(layer)
    with pytest.raises(RuntimeError):  # torch refuses the same inputs
        twin(torch.zeros(1, 1, 5, width))
