"""Layers with hand-written forward and backward passes (PyTorch names and semantics)."""

from . import init
from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .activity import ActivityL1, activity_penalty
from .constraints import MaxNorm, max_norm_
from .conv import Conv2d
from .dropconnect import DropConnect
from .dropout import Dropout, Dropout2d, fold_dropout_scaling
from .inference import inference_mode
from .linear import Flatten, Identity, Linear
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from .module import Module, Sequential
from .noise import GaussianNoise
from .normalization import BatchNorm1d, BatchNorm2d, fold_batchnorm, recompute_batchnorm_statistics
from .parameter import Parameter
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .recurrent import LSTM, RNN, SequenceEncoder
from .shakeout import Shakeout
from .whiteout import Whiteout

__all__ = [
    "init", "Module", "Sequential", "Parameter", "Linear", "Identity", "Flatten",
    "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Dropout", "fold_dropout_scaling",
    "BatchNorm1d", "recompute_batchnorm_statistics", "fold_batchnorm", "inference_mode",
    "CrossEntropyLoss", "MSELoss", "BCEWithLogitsLoss",
    "DropConnect", "Shakeout", "Whiteout", "GaussianNoise", "ActivityL1", "activity_penalty",
    "MaxNorm", "max_norm_", "RNN", "LSTM", "SequenceEncoder",
    "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm2d", "Dropout2d",
    "Conv2d",
]
