"""The benchmarked networks, each built twice with the same weights: tricklab and its PyTorch twin.

A case is one network, loss, optimizer and batch size. ``build(case, rng)`` returns both sides
ready to train, plus the list of matrix products one step performs (for the floor measurement).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from tricklab import export, nn, optim

ACTIVATIONS = {"relu": (nn.ReLU, torch.nn.ReLU), "sigmoid": (nn.Sigmoid, torch.nn.Sigmoid)}
BIG = (784, 1024, 1024, 1024, 10)
SMALL = (784, 100, 100, 100, 10)


@dataclass(frozen=True)
class Case:
    """One benchmarked network. ``kind`` is "mlp", "lstm" or "conv" (``net`` one of CONV_NETS, on
    (1, 28, 28) images); ``mode`` "train" or "infer". ``examples`` caps the examples of an epoch
    (the conv nets' epochs are long); ``fold``: tricklab runs ``nn.fold_batchnorm`` of the model
    while the torch twin keeps its batch norm layers (torch's eager eval, as a torch user runs it)."""

    name: str
    title: str
    kind: str = "mlp"
    sizes: tuple[int, ...] = BIG
    activation: str = "relu"
    batch_norm: bool = False
    dropout: tuple[float, float] = (0.0, 0.0)  # (on the inputs, on every hidden layer)
    optimizer: str = "momentum"  # "momentum": SGD(lr=0.01, momentum=0.9); "adam": Adam(lr=1e-3)
    batch_size: int = 128
    mode: str = "train"
    augment: bool = False
    net: str = ""
    examples: int | None = None
    fold: bool = False
    extra: dict = field(default_factory=dict)


CASES = [
    Case("mlp-bn-dropout", "784-1024x3-10 ReLU, batch norm, dropout 0.2/0.5, SGD momentum, batch 128",
         batch_norm=True, dropout=(0.2, 0.5)),
    Case("mlp-plain", "784-1024x3-10 ReLU, no batch norm, no dropout, SGD momentum, batch 128"),
    Case("mlp-bn-dropout-adam", "784-1024x3-10 ReLU, batch norm, dropout 0.2/0.5, Adam, batch 128",
         batch_norm=True, dropout=(0.2, 0.5), optimizer="adam"),
    Case("small-sigmoid-bn", "784-100x3-10 sigmoid, batch norm, SGD momentum, batch 60",
         sizes=SMALL, activation="sigmoid", batch_norm=True, batch_size=60),
    Case("lstm", "LSTM(28, 128) over 28 steps of 28 pixels, last step -> Linear(128, 10), Adam, batch 128",
         kind="lstm", sizes=(28, 128, 10), optimizer="adam"),
    Case("inference", "eval mode, 784-1024x3-10 with batch norm and dropout, batch 1024 (one pass over the data)",
         batch_norm=True, dropout=(0.2, 0.5), batch_size=1024, mode="infer"),
    Case("inference-folded", "the inference case with tricklab's batch norm folded into the Linear layers "
         "(nn.fold_batchnorm; torch's twin unfolded)", batch_norm=True, dropout=(0.2, 0.5), batch_size=1024,
         mode="infer", fold=True),
    Case("lenet", "LeNet-5-style conv net on 28x28, SGD momentum, batch 128 (first 10,000 examples)",
         kind="conv", net="lenet", examples=10_000),
    Case("lenet-inference", "LeNet-5-style conv net, eval mode, batch 128 (first 10,000 examples)",
         kind="conv", net="lenet", examples=10_000, mode="infer"),
    Case("vgg-small", "4 x (3x3 conv, batch norm, ReLU) of 32-64 channels, 2 max-pools, Linear head, "
         "SGD momentum, batch 128 (first 5,000 examples)", kind="conv", net="vgg-small", examples=5_000),
    Case("vgg-small-inference", "vgg-small in eval mode, batch 128 (first 5,000 examples)",
         kind="conv", net="vgg-small", examples=5_000, mode="infer"),
    Case("vgg-small-inference-folded", "vgg-small in eval mode with tricklab's batch norm folded into the "
         "convolutions (torch's twin unfolded), batch 128 (first 5,000 examples)",
         kind="conv", net="vgg-small", examples=5_000, mode="infer", fold=True),
]
AUGMENT_CASE = Case("mlp-bn-dropout-augmented", "mlp-bn-dropout with rotation +-10 deg and shifts +-2 px",
                    batch_norm=True, dropout=(0.2, 0.5), augment=True)


def lstm_available() -> bool:
    try:
        from tricklab.nn.recurrent import LSTM  # noqa: F401  (written in parallel with this suite)
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------ MLPs
def tricklab_mlp(case: Case, rng: np.random.Generator, input_grad: bool = False) -> nn.Sequential:
    """The case's MLP. Its input is data (``input_grad=False``), as in the torch twin, whose input
    does not require grad: neither side computes dLoss/dx for the first layer. ``input_grad=True``
    is the model as a user builds it (Sequential's default), for the Trainer, which skips dLoss/dx
    of its data itself."""
    act = ACTIVATIONS[case.activation][0]
    p_in, p_hidden = case.dropout
    layers: list[nn.Module] = [nn.Dropout(p_in, rng=rng)] if p_in else []
    pairs = list(zip(case.sizes[:-1], case.sizes[1:]))
    for i, (n_in, n_out) in enumerate(pairs):
        layers.append(nn.Linear(n_in, n_out, rng=rng))
        if i < len(pairs) - 1:
            if case.batch_norm:
                layers.append(nn.BatchNorm1d(n_out))
            layers.append(act())
            if p_hidden:
                layers.append(nn.Dropout(p_hidden, rng=rng))
    return nn.Sequential(*layers, input_grad=input_grad)


def torch_mlp(model: nn.Sequential, activation: str) -> torch.nn.Sequential:
    """The same layers in torch, weights and buffers copied through ``state_dict``."""
    layers = []
    for m in model:
        if isinstance(m, nn.Linear):
            layers.append(torch.nn.Linear(m.in_features, m.out_features))
        elif isinstance(m, nn.BatchNorm1d):
            layers.append(torch.nn.BatchNorm1d(m.num_features, eps=m.eps, momentum=m.momentum))
        elif isinstance(m, nn.Dropout):
            layers.append(torch.nn.Dropout(m.p))
        else:
            layers.append(ACTIVATIONS[activation][1]())
    twin = torch.nn.Sequential(*layers)
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    return twin


# ------------------------------------------------------------------------------------ conv nets
def lenet(rng: np.random.Generator) -> list[nn.Module]:
    """LeNet-5 on 28x28 (LeCun et al. 1998, with ReLU and max-pooling, as torch's tutorial): conv 5x5
    to 6 channels (padding 2), pool, conv 5x5 to 16, pool, then 400-120-84-10."""
    return [nn.Conv2d(1, 6, 5, padding=2, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, rng=rng), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120, rng=rng), nn.ReLU(), nn.Linear(120, 84, rng=rng), nn.ReLU(), nn.Linear(84, 10, rng=rng)]


def vgg_small(rng: np.random.Generator) -> list[nn.Module]:
    """Two VGG blocks (Simonyan & Zisserman 2015) of two 3x3 conv-BN-ReLU layers, 32 then 64
    channels, each block ending in a 2x2 max-pool (28 -> 14 -> 7), then Linear(64*7*7, 10)."""
    layers: list[nn.Module] = []
    for c_in, c_out in ((1, 32), (32, 32), (32, 64), (64, 64)):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, rng=rng), nn.BatchNorm2d(c_out), nn.ReLU()]
        if c_out == c_in:
            layers.append(nn.MaxPool2d(2))
    return layers + [nn.Flatten(), nn.Linear(64 * 7 * 7, 10, rng=rng)]


CONV_NETS = {"lenet": lenet, "vgg-small": vgg_small}
IMAGE = (1, 28, 28)


def tricklab_conv(case: Case, rng: np.random.Generator, input_grad: bool = False) -> nn.Sequential:
    """The case's conv net; its input is data, as for the MLPs (see :func:`tricklab_mlp`)."""
    return nn.Sequential(*CONV_NETS[case.net](rng), input_grad=input_grad)


def layer_products(model: nn.Sequential, input_shape: tuple[int, ...], batch: int, train: bool):
    """The matrix products of ``model``'s Linear and Conv2d layers on ``batch`` examples of
    ``input_shape``, as the layers lay them out: a Linear layer's x W^T ("nt"), g W ("nn") and
    g^T x ("tn"); a Conv2d's (groups 1) W X ("nn") with the (C kh kw, N H' W') columns X,
    Gy X^T ("nt") and W^T Gy ("tn")."""
    out, shape = [], tuple(input_shape)
    for layer in model:
        next_shape = layer.output_shape(shape)
        if isinstance(layer, nn.Linear):
            k, m = layer.in_features, layer.out_features
            out.append(((batch, k), (k, m), "nt"))
            if train:
                out += [((batch, m), (m, k), "nn"), ((m, batch), (batch, k), "tn")]
        elif isinstance(layer, nn.Conv2d):
            o, k, n = layer.out_channels, layer.weight.data[0].size, batch * next_shape[1] * next_shape[2]
            out.append(((o, k), (k, n), "nn"))
            if train:
                out += [((o, n), (n, k), "nt"), ((k, o), (o, n), "tn")]
        shape = next_shape
    return out


# ------------------------------------------------------------------------------------ LSTM
class LastStepClassifier(nn.Module):
    """Rows of a 28x28 image as 28 time steps; the LSTM's last output goes through a Linear layer.

    ``input_grad=False`` as in Sequential: the input is data, so backward skips dLoss/dx (the LSTM's
    first-layer product dLoss/da W_ih), as the torch twin does for an input without requires_grad."""

    def __init__(self, lstm, head: nn.Linear, input_grad: bool = False):
        super().__init__(dtype=lstm.dtype)
        self.lstm, self.head = lstm, head
        self.input_grad = bool(input_grad)
        self._shape = None

    def forward(self, x):
        x = np.asarray(x).reshape(len(x), -1, self.lstm.input_size)
        out, _ = self.lstm(x)
        self._shape = out.shape
        return self.head(out[:, -1])

    def backward(self, grad_output):
        if not self.input_grad:
            return self.backward_parameters(grad_output)
        return self.lstm.backward(self._grad_sequence(grad_output))

    def backward_parameters(self, grad_output) -> None:
        self.lstm.backward_parameters(self._grad_sequence(grad_output))

    def _grad_sequence(self, grad_output) -> np.ndarray:
        g_out = np.zeros(self._saved("_shape"), dtype=self.dtype)
        g_out[:, -1] = self.head.backward(grad_output)
        return g_out


class TorchLastStep(torch.nn.Module):
    def __init__(self, input_size: int, hidden: int, classes: int):
        super().__init__()
        self.lstm = torch.nn.LSTM(input_size, hidden, batch_first=True)
        self.head = torch.nn.Linear(hidden, classes)
        self.input_size = input_size

    def forward(self, x):
        out, _ = self.lstm(x.reshape(len(x), -1, self.input_size))
        return self.head(out[:, -1])


# ------------------------------------------------------------------------------------ build
def build(case: Case, rng: np.random.Generator, input_grad: bool = False):
    """(tricklab model, tricklab loss, tricklab optimizer, torch model, torch optimizer); ``input_grad``
    as in :func:`tricklab_mlp` and :class:`LastStepClassifier`."""
    if case.kind == "lstm":
        from tricklab.nn.recurrent import LSTM

        n_in, hidden, classes = case.sizes
        model = LastStepClassifier(LSTM(n_in, hidden, rng=rng), nn.Linear(hidden, classes, rng=rng), input_grad)
        twin = TorchLastStep(n_in, hidden, classes)
        twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    elif case.kind == "conv":
        model = tricklab_conv(case, rng, input_grad)
        twin = export.to_torch(model)
    else:
        model = tricklab_mlp(case, rng, input_grad)
        twin = torch_mlp(model, case.activation)
    if case.mode == "infer":
        model.eval()
        twin.eval()
        if case.fold:
            model = nn.fold_batchnorm(model)
    if case.optimizer == "adam":
        opt, topt = optim.Adam(model.parameters(), lr=1e-3), torch.optim.Adam(twin.parameters(), lr=1e-3)
    else:
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        topt = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
    return model, nn.CrossEntropyLoss(), opt, twin, topt


def products(case: Case, batch: int) -> list[tuple[tuple[int, int], tuple[int, int], str]]:
    """The matrix products of one step on ``batch`` examples: ((m, k), (k, n), layout) each.

    Layouts follow the layers' code: "nt" is x @ W.T (W stored (out, in)), "nn" is g @ W, "tn" is
    g.T @ x. An MLP step has three per Linear layer (forward, input gradient, weight gradient; the
    issue's 6 x weights FLOPs); inference only the forward ones.
    """
    if case.kind == "lstm":
        n_in, H, C = case.sizes
        T = 784 // n_in
        G = 4 * H
        return ([((T * batch, n_in), (n_in, G), "nt")] + [((batch, H), (H, G), "nt")] * T
                + [((batch, H), (H, C), "nt"), ((batch, C), (C, H), "nn"), ((C, batch), (batch, H), "tn")]
                + [((batch, G), (G, H), "nn")] * T
                + [((G, T * batch), (T * batch, n_in), "tn"), ((G, T * batch), (T * batch, H), "tn"),
                   ((T * batch, G), (G, n_in), "nn")])
    if case.kind == "conv":
        return layer_products(tricklab_conv(case, np.random.default_rng(0)), IMAGE, batch, case.mode == "train")
    out = []
    for n_in, n_out in zip(case.sizes[:-1], case.sizes[1:]):
        out.append(((batch, n_in), (n_in, n_out), "nt"))
        if case.mode == "train":
            out += [((batch, n_out), (n_out, n_in), "nn"), ((n_out, batch), (batch, n_in), "tn")]
    return out


def flops(prods) -> float:
    return float(sum(2 * m * k * n for (m, k), (_, n), _ in prods))
