"""UnshareBiasPass: layers that shared one bias initializer get a copy each (the function
unchanged), so each bias can be quantized at its own layer's scale; quantized, both run on
integer kernels."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx import quantize
from faaq_onnx.config import QuantConfig
from faaq_onnx.passes.unshare_bias import UnshareBiasPass
from faaq_onnx.runtime.kernels import kernel_report
from tests.conftest import apply_pass_keeping_outputs


def _two_gemms_one_bias() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = {
        "w1": rng.standard_normal((16, 16)).astype(np.float32),
        "w2": rng.standard_normal((16, 16)).astype(np.float32),
        "b": rng.standard_normal(16).astype(np.float32),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b"], ["y"], name="fc2", transB=1),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return m


def test_a_shared_bias_becomes_one_per_layer():
    feeds = {"x": np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)}
    modified, after = apply_pass_keeping_outputs(UnshareBiasPass(), _two_gemms_one_bias(), feeds)
    assert modified
    biases = [n.input[2] for n in after.graph.node if n.op_type == "Gemm"]
    assert len(set(biases)) == 2
    again, _ = apply_pass_keeping_outputs(UnshareBiasPass(), after, feeds)
    assert not again  # nothing shared any more


def test_layers_that_shared_a_bias_both_run_on_integer_kernels(tmp_path):
    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(_two_gemms_one_bias(), src)
    calib = {"x": np.random.default_rng(2).standard_normal((32, 16)).astype(np.float32)}
    quantize(str(src), calib, str(out), QuantConfig(scheme="w8a8", progress=False))
    weighted = kernel_report(str(out))["weighted_ops"]
    assert weighted["total"] == 2 and weighted["integer"] == 2, weighted["float"]
