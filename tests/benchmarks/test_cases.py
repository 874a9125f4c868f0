"""benchmarks/cases.py: the conv and folded inference cases compute what their torch twins compute,
and the floor counts their layers' matrix products."""

import dataclasses

import numpy as np
import pytest
import torch

from benchmarks import run
from benchmarks.cases import CASES, IMAGE, build, flops, products
from tricklab import nn

BY_NAME = {c.name: c for c in CASES}


@pytest.mark.parametrize("name", ["lenet", "vgg-small", "vgg-small-inference", "inference"])
def test_each_side_computes_the_same_network(name, rng):
    """In float64 (both sides converted), so that the comparison is to 1e-10."""
    case = BY_NAME[name]
    model, _, _, twin, _ = build(case, np.random.default_rng(0))
    model.to(np.float64)
    twin.double()
    x = rng.standard_normal((6, *IMAGE) if case.kind == "conv" else (6, 784))
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["vgg-small-inference-folded", "inference-folded"])
def test_a_folded_case_runs_the_folded_model_against_the_unfolded_twin(name):
    case = BY_NAME[name]
    model, _, _, twin, _ = build(case, np.random.default_rng(0))
    unfolded, _, _, _, _ = build(dataclasses.replace(case, fold=False), np.random.default_rng(0))
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model.modules())
    assert any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in twin.modules())
    for key, value in nn.fold_batchnorm(unfolded).state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[key], value, err_msg=key)


def test_the_conv_floor_counts_every_layers_products():
    lenet, vgg = BY_NAME["lenet"], BY_NAME["vgg-small-inference"]
    b = 128
    lenet_forward = 2 * b * (6 * 25 * 28 * 28 + 16 * 150 * 10 * 10 + 400 * 120 + 120 * 84 + 84 * 10)
    assert flops(products(lenet, b)) == 3 * lenet_forward  # forward, weight and input gradient of each layer
    vgg_forward = 2 * b * (32 * 9 * 784 + 32 * 288 * 784 + 64 * 288 * 196 + 64 * 576 * 196 + 3136 * 10)
    assert flops(products(vgg, b)) == vgg_forward


@pytest.mark.parametrize("name", ["lenet", "vgg-small-inference-folded"])
def test_a_conv_case_runs_all_its_sides(name, rng):
    X = rng.standard_normal((20, 784)).astype(np.float32)
    y = rng.integers(0, 10, 20)
    sides = run.case_sides(BY_NAME[name], X, y)
    times = run.interleave(sides, epochs=1, warmup=1, turn=1)
    assert set(times) == {"tricklab", "torch", "floor", "torch_floor"} and all(len(t) == 1 for t in times.values())
