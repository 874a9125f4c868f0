"""Layers with hand-written forward and backward passes."""

from .module import Module, Sequential
from .parameter import Parameter
