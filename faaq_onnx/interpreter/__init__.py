"""ONNX graphs run in torch (autograd for the Fisher metric and rounding optimization)."""

from faaq_onnx.interpreter.graph import TorchGraph, check_nodes, check_supported
from faaq_onnx.interpreter.ops import UnsupportedOp

__all__ = ["TorchGraph", "UnsupportedOp", "check_nodes", "check_supported"]
