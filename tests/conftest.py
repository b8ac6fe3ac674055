"""Tiny models built on the fly: the unit tests never need ../shared/data."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def _save(model: onnx.ModelProto, path) -> str:
    model.ir_version = 10
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def one_weight_model(op: str, w: np.ndarray, x_dims, y_dims, x="x", y="y") -> onnx.ModelProto:
    """`y = op(x, w)` with w an initializer: the one-node float model ORT runs (opset 17, IR 8)."""
    graph = helper.make_graph(
        [helper.make_node(op, [x, "w"], [y])],
        "g",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, x_dims)],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, y_dims)],
        [numpy_helper.from_array(w, "w")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def graph_model(
    nodes, x_dims, inits: dict, outputs=("y",), opset: int = 17, infer: bool = True
) -> onnx.ModelProto:
    """A one-input float model ('x' of `x_dims`) from nodes and {name: array} initializers,
    IR 10, with ONNX's inferred shapes where `infer`."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return onnx.shape_inference.infer_shapes(m) if infer else m


def build_dead_channel_conv(head: bool = False) -> onnx.ModelProto:
    """Conv (4 channels, channel 2's weights ~1e-8 under a bias of 0.5: a BatchNorm folded with
    a vanishing gamma) -> Relu [-> a 1x1 Conv to 2 channels]: its bias does not fit int32 at
    s_x * s_w unless the channel's weight scale is widened."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
    w[2] *= 1e-8
    b = np.array([0.1, -0.2, 0.5, 0.05], np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4, name="conv"),
        helper.make_node("Relu", ["c"], ["r" if head else "y"], name="relu"),
    ]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    if head:
        nodes.append(helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2"))
        w2 = rng.normal(0, 0.3, (2, 4, 1, 1)).astype(np.float32)
        inits.append(numpy_helper.from_array(w2, "w2"))
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2 if head else 4, 8, 8])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return m


def build_tiny_cnn(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """Conv-BN-Relu-MaxPool, a residual Conv-BN + Add-Relu, GAP, Flatten, Gemm: a ResNet in miniature."""
    rng = np.random.default_rng(seed)
    inits = []

    def init(name, arr):
        inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def bn(prefix, c):
        return [
            init(f"{prefix}.gamma", rng.uniform(0.5, 1.5, c)),
            init(f"{prefix}.beta", rng.uniform(-0.2, 0.2, c)),
            init(f"{prefix}.mean", rng.uniform(-0.3, 0.3, c)),
            init(f"{prefix}.var", rng.uniform(0.5, 2.0, c)),
        ]

    nodes = [
        helper.make_node(
            "Conv",
            ["input", init("c1.w", rng.normal(0, 0.3, (8, 3, 3, 3)))],
            ["c1"],
            pads=[1] * 4,
            name="conv1",
        ),
        helper.make_node("BatchNormalization", ["c1", *bn("bn1", 8)], ["b1"], name="bn1"),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node(
            "MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"
        ),
        helper.make_node(
            "Conv",
            [
                "p1",
                init("c2.w", rng.normal(0, 0.2, (8, 8, 3, 3))),
                init("c2.b", rng.normal(0, 0.1, 8)),
            ],
            ["c2"],
            pads=[1] * 4,
            name="conv2",
        ),
        helper.make_node("BatchNormalization", ["c2", *bn("bn2", 8)], ["b2"], name="bn2"),
        helper.make_node("Add", ["b2", "p1"], ["a2"], name="add2"),
        helper.make_node("Relu", ["a2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node(
            "Gemm",
            [
                "flat",
                init("fc.w", rng.normal(0, 0.5, (10, 8))),
                init("fc.b", rng.normal(0, 0.1, 10)),
            ],
            ["logits"],
            transB=1,
            name="fc",
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def build_tiny_mlp(seed: int = 0, opset: int = 17, k: int = 64, n: int = 32) -> onnx.ModelProto:
    """MatMul + Add + Relu + MatMul: weights in [K, N] MatMul layout, the transformer shape."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.2, (k, n)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (n,)).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.2, (n, 10)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
        helper.make_node("Relu", ["hb"], ["hr"], name="relu1"),
        helper.make_node("MatMul", ["hr", "w2"], ["y"], name="mm2"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.fixture
def tiny_cnn(tmp_path) -> str:
    return _save(build_tiny_cnn(), tmp_path / "tiny_cnn.onnx")


@pytest.fixture
def tiny_mlp(tmp_path) -> str:
    return _save(build_tiny_mlp(), tmp_path / "tiny_mlp.onnx")


@pytest.fixture
def cnn_calib() -> dict:
    return {"input": np.random.default_rng(1).standard_normal((48, 3, 16, 16)).astype(np.float32)}


@pytest.fixture
def mlp_calib() -> dict:
    return {"x": np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)}


def run_model(path_or_proto, feeds: dict) -> list:
    import onnxruntime as ort

    payload = (
        path_or_proto.SerializeToString()
        if isinstance(path_or_proto, onnx.ModelProto)
        else str(path_or_proto)
    )
    sess = ort.InferenceSession(payload, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def apply_pass_keeping_outputs(graph_pass, proto: onnx.ModelProto, feeds: dict):
    """(modified, model after) of an onnx-ir pass on `proto`; the outputs on `feeds` must not
    change (a canonicalization rewrites, never changes the function)."""
    import onnx_ir as ir

    from faaq_onnx.graph import to_proto

    before = run_model(proto, feeds)
    model = ir.from_proto(proto)
    modified = graph_pass(model).modified
    after = to_proto(model)
    for a, b in zip(run_model(after, feeds), before):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    return modified, after


def optimized_op_types(path_or_proto) -> list[str]:
    """Op types of the graph ORT actually runs after its optimizations."""
    import os
    import tempfile

    import onnxruntime as ort

    payload = (
        path_or_proto.SerializeToString()
        if isinstance(path_or_proto, onnx.ModelProto)
        else str(path_or_proto)
    )
    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.optimized_model_filepath = os.path.join(d, "opt.onnx")
        so.log_severity_level = 3
        ort.InferenceSession(payload, so, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]


def build_foreign_cnn(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """What other exporters write: TF-style SAME padding as a Pad whose pads are computed at
    run time from the input's Shape (dynamic height and width: nothing folds; the pads
    are right for 16x16 inputs), HardSigmoid*Mul
    (TorchScript's hardswish), a constant Pad before a depthwise Conv, ReLU6 as Clip,
    HardSwish, GAP and a classifier as MatMul + bias Add (Paddle's way)."""
    rng = np.random.default_rng(seed)
    inits = []

    def init(name, arr, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(arr).astype(dtype), name))
        return name

    nodes = [
        helper.make_node("Shape", ["input"], ["shape"], name="shape"),
        helper.make_node(
            "Slice",
            ["shape", init("hw_from", [2], np.int64), init("hw_to", [4], np.int64)],
            ["hw"],
            name="hw",
        ),
        helper.make_node(
            "Sub", [init("same_total", [17, 17], np.int64), "hw"], ["pad_total"], name="pad_total"
        ),
        helper.make_node(
            "Div", ["pad_total", init("two", [2], np.int64)], ["pad_begin"], name="pad_begin"
        ),
        helper.make_node("Sub", ["pad_total", "pad_begin"], ["pad_end"], name="pad_end"),
        helper.make_node(
            "Concat",
            [
                init("zeros2", [0, 0], np.int64),
                "pad_begin",
                init("zeros2b", [0, 0], np.int64),
                "pad_end",
            ],
            ["pads"],
            axis=0,
            name="pads",
        ),
        helper.make_node("Pad", ["input", "pads"], ["x_padded"], name="same_pad"),
        helper.make_node(
            "Conv",
            [
                "x_padded",
                init("c1.w", rng.normal(0, 0.3, (8, 3, 3, 3))),
                init("c1.b", rng.normal(0, 0.1, 8)),
            ],
            ["c1"],
            strides=[2, 2],
            name="conv1",
        ),
        helper.make_node("HardSigmoid", ["c1"], ["hs1"], alpha=1 / 6, beta=0.5, name="hsig1"),
        helper.make_node("Mul", ["c1", "hs1"], ["hsw1"], name="hswish1"),
        helper.make_node(
            "Pad",
            ["hsw1", init("dw_pads", [0, 0, 1, 1, 0, 0, 1, 1], np.int64)],
            ["hsw1_padded"],
            name="dw_pad",
        ),
        helper.make_node(
            "Conv",
            [
                "hsw1_padded",
                init("c2.w", rng.normal(0, 0.3, (8, 1, 3, 3))),
                init("c2.b", rng.normal(0, 0.1, 8)),
            ],
            ["c2"],
            group=8,
            name="conv2_dw",
        ),
        helper.make_node("Clip", ["c2", init("zero", 0.0), init("six", 6.0)], ["r2"], name="relu6"),
        helper.make_node(
            "Conv",
            [
                "r2",
                init("c3.w", rng.normal(0, 0.3, (16, 8, 1, 1))),
                init("c3.b", rng.normal(0, 0.1, 16)),
            ],
            ["c3"],
            name="conv3",
        ),
        helper.make_node("HardSwish", ["c3"], ["hsw3"], name="hswish3"),
        helper.make_node("GlobalAveragePool", ["hsw3"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node(
            "MatMul", ["flat", init("fc.w", rng.normal(0, 0.5, (16, 10)))], ["fc_mm"], name="fc"
        ),
        helper.make_node(
            "Add", ["fc_mm", init("fc.b", rng.normal(0, 0.1, 10))], ["logits"], name="fc_bias"
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "foreign_cnn",
        [
            helper.make_tensor_value_info(
                "input", TensorProto.FLOAT, ["batch", 3, "height", "width"]
            )
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.fixture
def foreign_cnn(tmp_path) -> str:
    return _save(build_foreign_cnn(), tmp_path / "foreign_cnn.onnx")


@pytest.fixture
def losing_rounding(monkeypatch) -> list:
    """AdaRound/BRECQ rigged to lose: each unit's h(V) ends on the wrong side of 0.5 everywhere,
    so every unit measures worse than its start and keeps it. Returns the list of the weights
    of each unit the optimizer was called on."""
    from faaq_onnx.optimize import rounding

    called: list = []

    def flipping(run_unit, weights, acts, inputs, target, settings, **kw):
        called.append(sorted(weights))
        for w in weights.values():
            w.v.data = 10 * (w.h() < 0.5).float() - 10 * (w.h() >= 0.5).float()
        return 0.0

    monkeypatch.setattr(rounding, "reconstruct", flipping)
    return called
