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
    """Exporters put a Pad before Convs and activation functions behind them: a Pad
    canonicalization cannot fold (pads computed from a dynamic shape) shares its input's scale,
    and every Conv's output is quantized so ORT can fuse DQ -> Conv -> Q, whatever reads it."""
    qg = _qgraph(foreign_cnn)
    first = _act_of(qg, "x_padded")
    assert first is not None and "input" in first.tensors  # Q/DQ before and after the computed Pad
    assert _act_of(qg, "hsw1") is not None  # the constant Pad was folded into the depthwise Conv
    # read by HardSwish, which canonicalization splits into HardSigmoid·Mul: the Mul of two
    # feature maps (QLinearMul) quantizes it, as in ORT's own quantized models
    act = _act_of(qg, "c3")
    assert act is not None
    owner = next(g for g in qg.groups.values() if act.name in g.activations)
    assert any(op.endswith("/Mul") for op in owner.ops), owner
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
    product (rank 3) stays float, as the tuned transformer results were measured. Each product
    is of a layer's output (a product of the graph input alone is the model's preprocessing,
    float either way: test_coverage)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def model(shape):
        k = shape[-1]
        w = numpy_helper.from_array(np.eye(k, dtype=np.float32), "w")
        first = (
            helper.make_node("Conv", ["x", "wc"], ["h"], name="conv")
            if len(shape) == 4
            else helper.make_node("MatMul", ["x", "w"], ["h"], name="mm0")
        )
        wc = np.eye(shape[1], dtype=np.float32)[:, :, None, None]
        nodes = [
            first,
            helper.make_node("Sigmoid", ["h"], ["s"], name="sig"),
            helper.make_node("Mul", ["h", "s"], ["m"], name="mul"),
            helper.make_node("MatMul", ["m", "w"], ["y"], name="mm"),
        ]
        g = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
            [w, numpy_helper.from_array(wc, "wc")],
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


# ---- discovery on small hand-built graphs, and its helpers one by one ----


def _ir(nodes, inputs, inits=(), outputs=None):
    """An onnx_ir model of `nodes` (shapes inferred), inputs as {name: (elem type, shape)}."""
    import onnx
    import onnx_ir as ir
    from onnx import helper, numpy_helper

    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(k, t, s) for k, (t, s) in inputs.items()],
        [helper.make_tensor_value_info(o, 0, None) for o in outputs or [nodes[-1].output[0]]],
        [numpy_helper.from_array(v, k) for k, v in dict(inits).items()],
    )
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)]
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 10
    return ir.from_proto(onnx.shape_inference.infer_shapes(m))


def _n(op, ins, outs, **attrs):
    from onnx import helper

    return helper.make_node(op, ins, outs, name=outs[0], **attrs)


def _w(*shape):
    return np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)


F32 = 1  # TensorProto.FLOAT


def _nodes_by_name(model):
    return {n.name: n for n in model.graph}


def test_weight_axes_per_op_and_attribute():
    """Output-channel and reduction axes: Conv (0, 1); ConvTranspose (1, 0), none per channel when
    grouped; Gemm by transB; MatMul by which input is the weight and its rank; others none."""
    from faaq_onnx.analysis.discover import weight_axes

    x4 = {"x": (F32, [1, 4, 6, 6])}
    m = _ir(
        [
            _n("Conv", ["x", "wc"], ["c"]),
            _n("ConvTranspose", ["x", "wt"], ["t"]),
            _n("ConvTranspose", ["x", "wt"], ["t1"], group=1),
            _n("ConvTranspose", ["x", "wg"], ["tg"], group=2),
            _n("Relu", ["x"], ["r"]),
        ],
        x4,
        {"wc": _w(3, 4, 3, 3), "wt": _w(4, 3, 2, 2), "wg": _w(4, 1, 2, 2)},
        ["c", "t", "t1", "tg", "r"],
    )
    n = _nodes_by_name(m)
    assert weight_axes(n["c"], (3, 4, 3, 3), 1) == (0, 1)
    assert weight_axes(n["t"], (4, 3, 2, 2), 1) == (1, 0)
    assert weight_axes(n["t1"], (4, 3, 2, 2), 1) == (1, 0)
    assert weight_axes(n["tg"], (4, 1, 2, 2), 1) == (None, 0)
    assert weight_axes(n["r"], (4,), 1) == (None, None)
    m = _ir(
        [
            _n("Gemm", ["a", "b"], ["g"]),
            _n("Gemm", ["a", "bt"], ["gt"], transB=1),
            _n("Gemm", ["a", "b"], ["g0"], transB=0),
            _n("MatMul", ["a", "b"], ["mm"]),
            _n("MatMul", ["x3", "b"], ["m3"]),
        ],
        {"a": (F32, [2, 4]), "x3": (F32, [2, 5, 4])},
        {"b": _w(4, 3), "bt": _w(3, 4)},
        ["g", "gt", "g0", "mm", "m3"],
    )
    n = _nodes_by_name(m)
    assert weight_axes(n["g"], (4, 3), 1) == (1, 0)
    assert weight_axes(n["gt"], (3, 4), 1) == (0, 1)
    assert weight_axes(n["g0"], (4, 3), 1) == (1, 0)
    assert weight_axes(n["mm"], (4, 3), 1) == (1, 0)
    assert weight_axes(n["mm"], (2, 4), 0) == (0, 1)
    assert weight_axes(n["m3"], (7, 4, 3), 1) == (None, 1)
    assert weight_axes(n["m3"], (7, 2, 5, 4), 0) == (None, None)


def test_op_macs_from_given_shapes():
    """MACs per sample, computed by hand: Conv out*prod(w[1:]); ConvTranspose in*prod(w[1:]);
    Gemm/MatMul out features (or out elements past batch) times K (transA picks a[0]);
    Add and pooling one per input element; unknown shapes and other ops 0."""
    from faaq_onnx.analysis.discover import op_macs

    m = _ir(
        [
            _n("Conv", ["x", "wc"], ["c"]),
            _n("ConvTranspose", ["x", "wt"], ["t"]),
            _n("Gemm", ["a", "b"], ["g"], transA=1),
            _n("Gemm", ["a2", "b"], ["g2"]),
            _n("MatMul", ["x3", "b"], ["m3"]),
            _n("MatMul", ["v", "b"], ["m1"]),
            _n("Add", ["x", "x"], ["s"]),
            _n("GlobalAveragePool", ["x"], ["p"]),
            _n("AveragePool", ["x"], ["ap"], kernel_shape=[2, 2]),
            _n("Relu", ["x"], ["r"]),
        ],
        {
            "x": (F32, [1, 4, 6, 6]),
            "a": (F32, [4, 2]),
            "a2": (F32, [2, 4]),
            "x3": (F32, [1, 5, 4]),
            "v": (F32, [4]),
        },
        {"wc": _w(3, 4, 3, 3), "wt": _w(4, 3, 2, 2), "b": _w(4, 3)},
        ["c", "t", "g", "g2", "m3", "m1", "s", "p", "ap", "r"],
    )
    n = _nodes_by_name(m)
    shapes = {
        "x": (1, 4, 6, 6),
        "c": (1, 3, 4, 4),
        "wc": (3, 4, 3, 3),
        "t": (1, 3, 7, 7),
        "wt": (4, 3, 2, 2),
        "a": (4, 2),
        "a2": (2, 4),
        "b": (4, 3),
        "g": (2, 3),
        "g2": (2, 3),
        "x3": (1, 5, 4),
        "m3": (1, 5, 3),
        "v": (4,),
        "m1": (3,),
        "s": (1, 4, 6, 6),
        "p": (1, 4, 1, 1),
        "ap": (1, 4, 5, 5),
        "r": (1, 4, 6, 6),
    }

    def of(v):
        return shapes.get(v.name)

    assert op_macs(n["c"], of) == (3 * 4 * 4) * (4 * 3 * 3)
    assert op_macs(n["t"], of) == (4 * 6 * 6) * (3 * 2 * 2)
    assert op_macs(n["g"], of) == 3 * 4  # transA: K is a[0] = 4
    assert op_macs(n["g2"], of) == 3 * 4
    assert op_macs(n["m3"], of) == (5 * 3) * 4
    assert op_macs(n["m1"], of) == 3 * 4  # rank-1 output: all of it per sample
    assert op_macs(n["s"], of) == 4 * 6 * 6
    assert op_macs(n["p"], of) == 4 * 6 * 6
    assert op_macs(n["ap"], of) == 4 * 6 * 6
    assert op_macs(n["r"], of) == 0
    assert op_macs(n["c"], lambda v: None) == 0
    for name, missing in [("c", "wc"), ("t", "x"), ("t", "wt"), ("g", "a"), ("g", "b"), ("s", "x")]:
        assert op_macs(n[name], lambda v, m=missing: None if v.name == m else of(v)) == 0
    assert op_macs(n["s"], lambda v: (5,) if v.name == "x" else of(v)) == 0  # rank 1 input
    assert op_macs(n["s"], lambda v: (3, 5) if v.name == "x" else of(v)) == 5  # per sample


def test_static_shape_reads_a_sample_of_batch_one():
    """Constant: its shape; a dynamic batch becomes 1; any other unknown dim, or no shape: None."""
    from faaq_onnx.analysis.discover import _static_shape

    m = _ir(
        [_n("Relu", ["x"], ["r"]), _n("Relu", ["y"], ["ry"]), _n("Relu", ["s"], ["rs"])],
        {"x": (F32, ["b", 3, 5]), "y": (F32, [2, "h"]), "s": (F32, [])},
        {"w": _w(4, 2)},
        ["r", "ry", "rs"],
    )
    vals = {v.name: v for v in m.graph.inputs}
    assert _static_shape(vals["x"]) == (1, 3, 5)
    assert _static_shape(vals["y"]) is None
    assert _static_shape(vals["s"]) == ()
    assert _static_shape(m.graph.initializers["w"]) == (4, 2)
    assert _static_shape(None) is None
    vals["x"].shape = None
    assert _static_shape(vals["x"]) is None


def test_discovery_of_weights_biases_and_shared_weights():
    """Gemm's constant bias is recorded, an activation bias is not; a weight read by two MatMuls
    is one quantizer with both consumers and the MACs of both; its group holds both ops."""
    from faaq_onnx.analysis.discover import discover_groups

    m = _ir(
        [
            _n("Gemm", ["x", "w", "bias"], ["g"]),
            _n("Gemm", ["g", "w2", "x"], ["g2"]),
            _n("MatMul", ["g2", "ws"], ["m1"]),
            _n("MatMul", ["g2", "ws"], ["m2"]),
            _n("Add", ["m1", "m2"], ["out"]),
        ],
        {"x": (F32, [4, 4])},
        {"w": _w(4, 4), "bias": _w(4), "w2": _w(4, 4), "ws": _w(4, 2)},
        ["out"],
    )
    qg = discover_groups(m)
    assert qg.weights["w"].bias == "bias" and qg.weights["w2"].bias is None
    assert qg.weights["w"].activation == "act:x"
    ws = qg.weights["ws"]
    assert ws.consumers == ["m1", "m2"] and ws.macs == 2 * (2 * 4)
    assert qg.weights["w"].macs == 4 * 4
    g = next(g for g in qg.groups.values() if "m1" in g.ops)
    assert g.ops == ["m1", "m2"] and g.weights == ["ws"] and g.name == "g:m1"
    assert g.macs == 2 * 2 * 4 and g.weight_params == 4 * 2 and g.kind == "matmul"
    # the output Add reads only activations but feeds no quantized op: it is not worth quantizing
    assert all("out" not in g.ops for g in qg.groups.values())
    assert list(qg.groups) == ["g:g", "g:g2", "g:m1"]  # in graph order


def test_discovery_skips_what_has_no_integer_kernel_and_says_why():
    """A Conv whose weight is computed, a Conv reading a constant, an integer MatMul and a
    custom-domain op are left in float; the first three are listed with the reason."""
    from onnx import helper

    from faaq_onnx.analysis.discover import discover_groups

    m = _ir(
        [
            _n("Relu", ["wx"], ["wr"]),
            _n("Conv", ["x", "wr"], ["c1"]),
            _n("Conv", ["k", "w"], ["c2"]),
            _n("MatMul", ["i", "wi"], ["mi"]),
            helper.make_node("Conv", ["x", "w"], ["cc"], name="custom", domain="com.example"),
            _n("Conv", ["x", "w"], ["ok"]),
        ],
        {"x": (F32, [1, 2, 5, 5]), "wx": (F32, [2, 2, 3, 3]), "i": (7, [2, 3])},
        {"w": _w(2, 2, 3, 3), "k": _w(1, 2, 5, 5), "wi": np.ones((3, 2), np.int64)},
        ["c1", "c2", "mi", "ok"],
    )
    qg = discover_groups(m)
    assert qg.skipped == [
        "c1: Conv without a constant float weight",
        "c2: Conv whose data input is not a float activation",
        "mi: MatMul weight is not a float initializer of rank >= 2",
    ]
    assert [g.ops for g in qg.groups.values()] == [["ok"]]
    assert list(qg.weights) == ["w"] and qg.weights["w"].consumers == ["ok"]


def test_concat_pool_and_attention_groups():
    """Concat joins its inputs' and output's scales (one activation quantizer); pooling reads only
    its first input; a MatMul of two activations is an 'attention' group; an Add of a constant
    over a feature map is quantized like any Add (its constant operand is listed for emission);
    only ops feeding a quantized op are kept among the optional ones."""
    from faaq_onnx.analysis.discover import discover_groups

    m = _ir(
        [
            _n("Conv", ["x", "w1"], ["c1"]),
            _n("Conv", ["x", "w2"], ["c2"]),
            _n("Concat", ["c1", "c2"], ["cat"], axis=1),
            _n("Conv", ["cat", "w3"], ["c3"]),
            _n("AveragePool", ["c3"], ["ap"], kernel_shape=[1, 1]),
            _n("Add", ["ap", "k"], ["ak"]),
            _n("GlobalAveragePool", ["ak"], ["gp"]),
            _n("Flatten", ["gp"], ["f"]),
            _n("MatMul", ["f", "f2"], ["att"]),
        ],
        {"x": (F32, [1, 2, 5, 5]), "f2": (F32, [4, 4])},
        {"w1": _w(2, 2, 1, 1), "w2": _w(2, 2, 1, 1), "w3": _w(4, 4, 1, 1), "k": _w(1, 4, 1, 1)},
        ["att"],
    )
    qg = discover_groups(m)
    cat = next(a for a in qg.activations.values() if "cat" in a.tensors)
    assert {"c1", "c2", "cat"} <= set(cat.tensors)
    assert cat.name == "act:c1" and cat.tensors == ["c1", "c2", "cat"]
    got = {g.name: (g.kind, g.ops, g.weights, g.activations, g.macs) for g in qg.groups.values()}
    assert got == {
        # c1 and c2 read the same input: one group
        "g:c1": ("conv", ["c1", "c2"], ["w1", "w2"], ["act:x"], 2 * (2 * 25 * 2)),
        # the Concat and c3 read one scale; c3's output is the AveragePool's input, a group of
        # its own, as are the constant Add and the pooling it feeds
        "g:cat": ("conv", ["cat", "c3"], ["w3"], ["act:c1"], 0 + 4 * 25 * 4),  # Concat: no MACs
        "g:ap": ("pool", ["ap"], [], ["act:c3"], 4 * 25),
        "g:ak": ("eltwise", ["ak"], [], ["act:ap"], 4 * 25),
        "g:gp": ("pool", ["gp"], [], ["act:ak"], 4 * 25),
        "g:att": ("attention", ["att"], [], ["act:f2", "act:gp"], 4 * 4),
    }
    assert qg.constants == {"ak": [1]}
    assert qg.group_of_activation("act:c3") == "g:ap"
    assert qg.group_of_activation("act:x") == "g:c1"


def test_a_tensor_nobody_reads_still_decides_the_range():
    """Only tensors read by clamps alone leave the range to the clamps; an unread Split output
    and a graph output count."""
    from faaq_onnx.analysis.discover import discover_groups

    m = _ir(
        [
            _n("Conv", ["x", "w"], ["c"]),
            _n("Split", ["c"], ["s0", "s1"], axis=1, num_outputs=2),
            _n("Relu", ["s0"], ["r"]),
            _n("Conv", ["r", "w2"], ["y"]),
        ],
        {"x": (F32, [1, 2, 5, 5])},
        {"w": _w(4, 2, 1, 1), "w2": _w(2, 2, 1, 1)},
        ["y", "c"],
    )
    qg = discover_groups(m)
    act = next(a for a in qg.activations.values() if "s1" in a.tensors)
    assert "s1" in act.range_tensors and "c" in act.range_tensors
    assert "s0" not in act.range_tensors and "r" in act.range_tensors
    assert act.droppable == ["r"]


def test_a_matmul_weight_may_come_first_but_must_be_a_matrix():
    """W @ x with a constant W: the weight is input 0 (axes (0, 1)), x the data; a 1-d constant
    is no weight (the MatMul is skipped with the reason)."""
    from faaq_onnx.analysis.discover import discover_groups

    m = _ir(
        [_n("MatMul", ["w", "x"], ["y"]), _n("MatMul", ["y", "v"], ["z"])],
        {"x": (F32, [4, 3])},
        {"w": _w(5, 4), "v": _w(3)},
        ["z"],
    )
    qg = discover_groups(m)
    w = qg.weights["w"]
    assert (w.channel_axis, w.block_axis, w.activation) == (0, 1, "act:x")
    assert list(qg.weights) == ["w"]
    assert qg.skipped == ["z: MatMul weight is not a float initializer of rank >= 2"]


def test_a_relu_behind_a_layout_transpose_still_sets_the_range(tmp_path):
    """tf2onnx: Conv -> Transpose to NHWC -> Relu -> Transpose back -> Conv. Only the values the
    Relu keeps matter, so the grid is the Relu output's ([0, max]) and the Relu is dropped in
    the written model: nothing float between the two integer Convs."""
    import onnx
    from onnx import helper

    from faaq_onnx import quantize
    from faaq_onnx.config import QuantConfig
    from tests.conftest import graph_model, optimized_op_types

    rng = np.random.default_rng(0)
    inits = {
        "w1": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "w2": rng.standard_normal((4, 8, 1, 1)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Transpose", ["c"], ["t"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Relu", ["t"], ["r"], name="relu"),
        helper.make_node("Transpose", ["r"], ["b"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["b", "w2"], ["y"], name="conv2"),
    ]
    path = tmp_path / "m.onnx"
    onnx.save(graph_model(nodes, [1, 3, 8, 8], inits), path)
    shared = next(a for a in _qgraph(str(path)).activations.values() if "c" in a.tensors)
    assert set(shared.range_tensors) <= {"r", "b"}, shared.range_tensors
    calib = {"x": rng.standard_normal((16, 3, 8, 8)).astype(np.float32)}
    quantize(str(path), calib, str(tmp_path / "q.onnx"), QuantConfig(scheme="w8a8", progress=False))
    ops = optimized_op_types(tmp_path / "q.onnx")
    assert "Relu" not in ops and "DequantizeLinear" not in ops[: ops.index("QLinearConv") + 2], ops


def test_a_relu_whose_input_another_op_reads_gets_a_grid_of_its_own(tmp_path):
    """NASNet: a Conv's output goes into a Relu and into an Add. The Add needs the negative
    values, so the Relu stays whatever the grids; its output on a grid of its own ([0, max])
    is finer than the shared one, and ORT folds the Relu into the QuantizeLinear behind it."""
    import onnx
    from onnx import helper

    from faaq_onnx import quantize
    from faaq_onnx.config import QuantConfig
    from tests.conftest import graph_model, optimized_op_types

    rng = np.random.default_rng(0)
    inits = {
        "w1": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "w2": rng.standard_normal((8, 8, 1, 1)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["d"], name="conv2"),
        helper.make_node("Add", ["c", "d"], ["y"], name="add"),
    ]
    path = tmp_path / "m.onnx"
    onnx.save(graph_model(nodes, [1, 3, 8, 8], inits), path)
    acts = _qgraph(str(path)).activations.values()
    own = next(a for a in acts if "r" in a.tensors)
    assert "c" not in own.tensors
    calib = {"x": rng.standard_normal((16, 3, 8, 8)).astype(np.float32)}
    quantize(str(path), calib, str(tmp_path / "q.onnx"), QuantConfig(scheme="w8a8", progress=False))
    assert "Relu" not in optimized_op_types(tmp_path / "q.onnx")
