"""Quantized models on the CUDA execution provider agree with the CPU (needs onnxruntime-gpu and a GPU)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.passes.emit_matmulnbits import convert_to_matmulnbits
from faaq_onnx.runtime.profile import profile_models
from faaq_onnx.runtime.session import available_eps, make_session

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        "cuda" not in available_eps(), reason="onnxruntime has no CUDA execution provider here"
    ),
]

OUT_SCALE = 0.05


def qdq_conv_w8a8(c: int = 16) -> onnx.ModelProto:
    """Per-channel int8 Conv between uint8 activation Q/DQ pairs, output scale OUT_SCALE."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.2
    s_w = (np.abs(w).reshape(c, -1).max(1) / 127).astype(np.float32)
    q_w = np.clip(np.rint(w / s_w[:, None, None, None]), -127, 127).astype(np.int8)
    inits = [
        numpy_helper.from_array(q_w, "w_q"),
        numpy_helper.from_array(s_w, "w_s"),
        numpy_helper.from_array(np.zeros(c, np.int8), "w_z"),
        numpy_helper.from_array(np.array(0.03, np.float32), "x_s"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_z"),
        numpy_helper.from_array(np.array(OUT_SCALE, np.float32), "y_s"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xdq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], axis=0),
        helper.make_node("Conv", ["xdq", "w"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["h", "y_s", "x_z"], ["hq"]),
        helper.make_node("DequantizeLinear", ["hq", "y_s", "x_z"], ["y"]),
    ]
    shape = ["N", c, 16, 16]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 10
    return model


def test_w8a8_conv_cuda_matches_cpu():
    model = qdq_conv_w8a8()
    x = np.random.default_rng(1).standard_normal((4, 16, 16, 16)).astype(np.float32)
    cpu = make_session(model, ep="cpu").run(None, {"x": x})[0]
    gpu_sess = make_session(model, ep="cuda")
    assert gpu_sess.get_providers()[0] == "CUDAExecutionProvider"
    gpu = gpu_sess.run(None, {"x": x})[0]
    assert gpu.shape == cpu.shape
    # integer kernels on the CPU, float DQ->Conv->Q on the GPU: at most one output step apart
    diff = np.abs(gpu - cpu)
    assert diff.max() <= OUT_SCALE * 1.01
    assert (diff > 1e-6).mean() < 0.05


def test_matmulnbits_cuda_matches_cpu():
    import ml_dtypes

    rng = np.random.default_rng(2)
    k, n = 256, 128
    q = rng.integers(-8, 8, size=(k, n)).astype(ml_dtypes.int4)
    s = rng.uniform(0.01, 0.05, size=(k // 32, n)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("DequantizeLinear", ["q", "s"], ["w"], axis=0, block_size=32),
            helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
        [numpy_helper.from_array(q, "q"), numpy_helper.from_array(s, "s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    conv, names = convert_to_matmulnbits(model, accuracy_level=0)
    assert names == ["mm"]
    x = rng.standard_normal((8, k)).astype(np.float32)
    cpu = make_session(conv, ep="cpu").run(None, {"x": x})[0]
    gpu = make_session(conv, ep="cuda").run(None, {"x": x})[0]
    assert np.abs(gpu - cpu).max() / np.abs(cpu).max() < 1e-3


def test_profile_on_cuda(tmp_path):
    p = tmp_path / "w8a8.onnx"
    onnx.save(qdq_conv_w8a8(), str(p))
    rep = profile_models([p], eps=["cuda"], batches=[1, 4], warmup=2, runs=5, isolate=False)
    for r in rep["results"]:
        assert r["status"] == "ok" and r["providers"][0] == "CUDAExecutionProvider"
        assert r["median_ms"] > 0
