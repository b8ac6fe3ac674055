import numpy as np

from faaq_onnx.analysis.discover import discover_groups
from faaq_onnx.model_io import load_model
from faaq_onnx.passes.canonicalize import canonicalize


def _qgraph(path):
    model, _ = canonicalize(load_model(path))
    return discover_groups(model)


def test_tiny_cnn_groups(tiny_cnn):
    qg = _qgraph(tiny_cnn)
    assert len(qg.weights) == 3  # conv1, conv2, fc
    # conv2 and the residual Add read the same pooled tensor: one group, one bit width
    g = next(g for g in qg.groups.values() if "conv2" in g.ops)
    assert "add2" in g.ops
    # Relu and MaxPool are pass-through: conv1's output, relu1 and pool1 share one scale
    shared = next(a for a in qg.activations.values() if "p1" in a.tensors)
    assert {"r1", "p1"} <= set(shared.tensors) and "relu1" in shared.droppable


def test_macs_from_shapes(tiny_cnn):
    qg = _qgraph(tiny_cnn)
    conv1 = next(g for g in qg.groups.values() if g.ops == ["conv1"])
    assert conv1.macs == 8 * 16 * 16 * 3 * 3 * 3
    fc = next(g for g in qg.groups.values() if "fc" in g.ops)
    assert fc.macs == 80 and fc.kind == "gemm"


def test_matmul_weights_axes(tiny_mlp):
    qg = _qgraph(tiny_mlp)
    w1 = qg.weights["w1"]
    assert (w1.channel_axis, w1.block_axis) == (1, 0)  # [K, N]: per output column, blocks along K
    # the bias Add has a constant input: it stays float, it is not a quantizer group
    assert all("bias1" not in g.ops for g in qg.groups.values())


def _act_of(qg, tensor):
    return next((a for a in qg.activations.values() if tensor in a.tensors), None)


def test_quantization_follows_pads_and_feeds_every_conv(foreign_cnn):
    """Exporters put a Pad before Convs and float activation functions behind them: a Pad
    canonicalization cannot fold (pads computed from a dynamic shape) shares its input's scale, and every Conv's output is
    quantized so ORT can fuse DQ -> Conv -> Q, whatever float op reads it."""
    qg = _qgraph(foreign_cnn)
    first = _act_of(qg, "x_padded")
    assert first is not None and "input" in first.tensors  # Q/DQ before and after the computed Pad
    assert _act_of(qg, "hsw1") is not None  # the constant Pad was folded into the depthwise Conv
    act = _act_of(
        qg, "c3"
    )  # read by HardSwish alone, a float op: the Conv's own group decides its width
    group = next(g for g in qg.groups.values() if "conv3" in g.ops)
    assert act is not None and act.name in group.activations
    act = _act_of(
        qg, "c1"
    )  # read by HardSigmoid (float) and the hardswish Mul of two feature maps (QLinearMul)
    mul = next(g for g in qg.groups.values() if "hswish1" in g.ops)
    assert (
        act is not None
        and act.name in mul.activations
        and _act_of(qg, "hs1").name in mul.activations
    )


def test_conv_output_read_by_a_quantized_op_keeps_its_own_group(tiny_cnn):
    """conv1's output (through Relu/MaxPool) is conv2's input: it must not merge two groups."""
    qg = _qgraph(tiny_cnn)
    g1 = next(g for g in qg.groups.values() if "conv1" in g.ops)
    g2 = next(g for g in qg.groups.values() if "conv2" in g.ops)
    assert g1.name != g2.name


def test_interpolating_resize_and_nonzero_pad_do_not_share_a_scale():
    import onnx_ir as ir
    from onnx import TensorProto, helper, numpy_helper

    from faaq_onnx.analysis.discover import passes_grid_through

    def node(op, inputs, **attrs):
        inits = [numpy_helper.from_array(v, k) for k, v in inputs.items() if v is not None]
        names = ["x", *inputs]
        g = helper.make_graph(
            [helper.make_node(op, names, ["y"], **attrs)],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            inits,
        )
        model = ir.from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]))
        return next(iter(model.graph))

    pads = np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)
    assert passes_grid_through(node("Pad", {"pads": pads}))
    assert passes_grid_through(node("Pad", {"pads": pads, "value": np.array(0.0, np.float32)}))
    assert not passes_grid_through(node("Pad", {"pads": pads, "value": np.array(0.3, np.float32)}))
    assert passes_grid_through(node("Pad", {"pads": pads}, mode="reflect"))
    scales = {"roi": np.array([], np.float32), "scales": np.array([1, 1, 2, 2], np.float32)}
    assert passes_grid_through(node("Resize", scales, mode="nearest"))
    assert not passes_grid_through(node("Resize", scales, mode="linear"))


def test_mul_of_two_feature_maps_is_quantized_a_transformers_is_not(tmp_path):
    """QLinearMul pays on conv feature maps (HardSwish, squeeze-excite); a transformer's GELU
    product (rank 3) stays float, as the tuned transformer results were measured."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def model(shape):
        k = shape[-1]
        w = numpy_helper.from_array(np.eye(k, dtype=np.float32), "w")
        nodes = [
            helper.make_node("Sigmoid", ["x"], ["s"], name="sig"),
            helper.make_node("Mul", ["x", "s"], ["m"], name="mul"),
            helper.make_node("MatMul", ["m", "w"], ["y"], name="mm"),
        ]
        g = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
            [w],
        )
        path = tmp_path / f"m{len(shape)}.onnx"
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 10
        onnx.save(m, path)
        return str(path)

    def quantized_ops(path):
        return {op for g in _qgraph(path).groups.values() for op in g.ops}

    assert "mul" in quantized_ops(model([1, 2, 4, 4]))
    assert "mul" not in quantized_ops(model([1, 6, 4]))


def test_range_comes_from_the_clamped_tensors(tiny_cnn):
    """conv1's raw output only feeds its Relu: the quantizer's range is that of the Relu's
    output (and what follows), not of the negative values the clamp removes."""
    qg = _qgraph(tiny_cnn)
    shared = next(a for a in qg.activations.values() if "p1" in a.tensors)
    assert "c1" in shared.tensors and "c1" not in shared.range_tensors
    assert {"r1", "p1"} <= set(shared.range_tensors)


def test_rank3_matmul_weight_axes_and_macs(tmp_path):
    """A transformer's [T, K] x [K, N] projection (no bias Add, so it stays a MatMul): per output
    column scales, blocks along K, and T*K*N MACs per sample."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32), "w"
    )
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 5, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 5, 6])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    path = tmp_path / "proj.onnx"
    onnx.save(m, path)
    qg = _qgraph(str(path))
    wq = qg.weights["w"]
    assert (wq.channel_axis, wq.block_axis) == (1, 0) and wq.op_type == "MatMul"
    assert wq.macs == 5 * 8 * 6
