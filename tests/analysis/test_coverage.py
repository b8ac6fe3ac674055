"""Which ops get quantizers under each coverage policy (analysis/coverage.py): "ort", every op
ORT's own quantizer puts on an integer kernel; "gain", only where that removes float work."""

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper, numpy_helper

from faaq_onnx.analysis.discover import discover_groups

F32 = onnx.TensorProto.FLOAT


def _model(nodes, inits):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F32, [1, 6, 8])],
        [helper.make_tensor_value_info(o, F32, None) for o in ("side", "y")],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 10
    return ir.from_proto(onnx.shape_inference.infer_shapes(m))


def _w(seed):
    return np.random.default_rng(seed).standard_normal((8, 8)).astype(np.float32)


def _ops(model, coverage="gain"):
    q = discover_groups(model, coverage=coverage)
    return {op for g in q.groups.values() for op in g.ops}, q


def _swish_between_matmuls(product_input: str):
    """h = x·W1; `side` = h·W2 reads h, so h is quantized anyway; the product of
    `product_input` and Sigmoid(product_input) feeds y = m·W3."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "b"], ["hb"], name="bias"),
        helper.make_node("MatMul", ["h", "w2"], ["side"], name="mm2"),
        helper.make_node("Sigmoid", [product_input], ["s"], name="sig"),
        helper.make_node("Mul", [product_input, "s"], ["m"], name="swish"),
        helper.make_node("MatMul", ["m", "w3"], ["y"], name="mm3"),
    ]
    inits = {"w1": _w(1), "w2": _w(2), "w3": _w(3), "b": np.ones(8, np.float32)}
    return _model(nodes, inits)


def test_a_swish_of_a_quantized_tensor_feeding_a_matmul_is_quantized():
    ops, q = _ops(_swish_between_matmuls("h"))
    assert "swish" in ops
    acts = {t for a in q.activations.values() for t in a.tensors}
    assert {"h", "s", "m"} <= acts  # both factors and the product on grids: QLinearMul


def test_a_swish_of_a_tensor_nothing_else_quantizes_stays_float():
    """A transformer MLP's activation on its bias Add's output (a GELU, a QuickGelu): giving it
    a grid would put new quantization error where the float network had none."""
    ops, q = _ops(_swish_between_matmuls("hb"))
    assert "swish" not in ops
    acts = {t for a in q.activations.values() for t in a.tensors}
    assert "hb" not in acts and "s" not in acts


def test_a_constant_scale_on_a_quantized_tensor_is_quantized_with_its_constant():
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("MatMul", ["h", "w2"], ["side"], name="mm2"),
        helper.make_node("Mul", ["h", "scale"], ["m"], name="scale_mul"),
        helper.make_node("MatMul", ["m", "w3"], ["y"], name="mm3"),
    ]
    inits = {"w1": _w(1), "w2": _w(2), "w3": _w(3), "scale": np.array([0.125], np.float32)}
    ops, q = _ops(_model(nodes, inits))
    assert "scale_mul" in ops
    assert q.constants == {"scale_mul": [1]}


def test_a_product_whose_output_no_quantized_op_reads_stays_float():
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("MatMul", ["h", "w2"], ["side"], name="mm2"),
        helper.make_node("Sigmoid", ["h"], ["s"], name="sig"),
        helper.make_node("Mul", ["h", "s"], ["y"], name="swish"),
    ]
    ops, _ = _ops(_model(nodes, {"w1": _w(1), "w2": _w(2)}))
    assert "swish" not in ops


def test_ops_ort_could_run_on_integer_kernels_are_named_with_why_they_stay_float():
    """Every op ORT's quantizer would wrap in Q/DQ that faaq leaves float has a reason, by kind."""
    _, q = _ops(_swish_between_matmuls("hb"))
    why = q.left_float
    assert "product below rank 4" in why["swish"]
    assert "of a constant" in why["bias"]
    assert "the Sigmoid of a SiLU" in why["sig"]  # its product stays float: fused with it
    assert not {"mm1", "mm2", "mm3"} & set(why)  # quantized: nothing to explain
    _, q = _ops(_swish_between_matmuls("h"))
    assert "swish" not in q.left_float and "sig" not in q.left_float


def test_a_residual_add_read_only_by_a_layernorm_is_named_as_feeding_no_quantized_op():
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["x", "h"], ["r"], name="residual"),
        helper.make_node("LayerNormalization", ["r", "g"], ["side"], name="ln", axis=-1),
        helper.make_node("MatMul", ["x", "w2"], ["y"], name="mm2"),
    ]
    ops, q = _ops(_model(nodes, {"w1": _w(1), "w2": _w(2), "g": np.ones(8, np.float32)}))
    assert "residual" not in ops
    assert "feeds no quantized op (read by LayerNormalization)" in q.left_float["residual"]
    assert "ln" not in q.left_float  # ORT has no integer kernel for it: nothing left out


def test_the_written_model_carries_the_reasons_to_faaq_inspect(tmp_path):
    from faaq_onnx import quantize
    from faaq_onnx.config import QuantConfig
    from faaq_onnx.graph import to_proto
    from faaq_onnx.runtime.kernels import kernel_report

    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(to_proto(_swish_between_matmuls("hb")), src)
    calib = {"x": np.random.default_rng(0).standard_normal((16, 6, 8)).astype(np.float32)}
    config = QuantConfig(scheme="w8a8", coverage="gain", progress=False)
    result = quantize(str(src), calib, str(out), config)
    why = {u["node"]: u["why_float"] for u in kernel_report(str(out))["unquantized_nodes"]}
    assert "product below rank 4" in why["swish"]
    reported = {
        u["node"]: u["why_float"] for u in result.report["verify"]["kernels"]["unquantized"]
    }
    assert reported == why  # the quantize report reads the same reasons from the model it wrote


def _residual_before_layernorm():
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["x", "h"], ["r"], name="residual"),
        helper.make_node("LayerNormalization", ["r", "g"], ["side"], name="ln", axis=-1),
        helper.make_node("Softmax", ["side"], ["y"], name="softmax", axis=-1),
    ]
    return _model(nodes, {"w1": _w(1), "g": np.ones(8, np.float32)})


def test_ort_coverage_quantizes_every_op_ort_runs_on_an_integer_kernel():
    """The GELU-like product, its Sigmoid, the bias Add (with its constant) and the residual
    Add read only by a LayerNormalization all get Q/DQ in and out, as ORT's quantizer gives them."""
    ops, q = _ops(_swish_between_matmuls("hb"), coverage="ort")
    assert {"mm1", "bias", "mm2", "sig", "swish", "mm3"} <= ops
    acts = {t for a in q.activations.values() for t in a.tensors}
    assert {"h", "hb", "s", "m"} <= acts
    assert q.constants == {"bias": [1]}  # the bias, a uint8 operand of QLinearAdd
    assert q.left_float == {}
    ops, q = _ops(_residual_before_layernorm(), coverage="ort")
    acts = {t for a in q.activations.values() for t in a.tensors}
    assert {"residual", "softmax"} <= ops
    assert {"x", "h", "r", "side", "y"} <= acts  # outputs too: QLinearAdd, QLinearSoftmax
    assert "ln" not in ops and q.left_float == {}
    # outputs only float ops read belong to their op's group: the plan gives them bits
    grouped = {a for g in q.groups.values() for a in g.activations}
    assert grouped == set(q.activations)


def test_gain_coverage_is_the_default_and_leaves_those_ops_float():
    default = discover_groups(_residual_before_layernorm())
    assert not {"residual", "softmax"} & {op for g in default.groups.values() for op in g.ops}
    ops, q = _ops(_residual_before_layernorm(), coverage="gain")
    assert not {"residual", "softmax"} & ops
    assert set(q.left_float) == {"residual", "softmax"}


def test_an_unknown_coverage_is_one_clear_error():
    import pytest

    from faaq_onnx.config import QuantConfig
    from faaq_onnx.errors import FaaqError

    with pytest.raises(FaaqError, match="unknown --coverage 'all'"):
        QuantConfig(coverage="all")


def test_the_reasons_say_how_to_get_orts_coverage_and_ort_coverage_names_what_it_still_leaves():
    """Under `gain` each reason points to --coverage ort; under `ort` what stays float (a Where:
    faaq puts no Q/DQ around it) is named without that pointer, with the op types ort covers."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Greater", ["h", "zero"], ["pos"], name="gt"),
        helper.make_node("Where", ["pos", "h", "x"], ["wh"], name="where"),
        helper.make_node("Neg", ["wh"], ["y"], name="neg"),  # read by no quantized op
        helper.make_node("MatMul", ["h", "w1"], ["side"], name="mm3"),
    ]
    inits = {"w1": _w(1), "zero": np.zeros(1, np.float32)}
    _, gain = _ops(_model(nodes, inits), coverage="gain")
    _, ort = _ops(_model(nodes, inits), coverage="ort")
    assert gain.left_float["where"].endswith("; --coverage ort quantizes it as ORT does")
    assert "Sigmoid, Softmax and LeakyRelu get them" in ort.left_float["where"]
    assert "--coverage" not in ort.left_float["where"]


def test_ort_coverage_names_a_constant_too_large_for_a_uint8_operand():
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "big"], ["hb"], name="big_add"),  # 96,000 constants
        helper.make_node("Neg", ["hb"], ["y"], name="neg"),
        helper.make_node("MatMul", ["h", "w1"], ["side"], name="mm3"),
    ]
    inits = {"w1": _w(1), "big": np.ones((2000, 6, 8), np.float32)}
    ops, q = _ops(_model(nodes, inits), coverage="ort")
    assert "big_add" not in ops
    assert "QLinearAdd holds at most 65,536 values" in q.left_float["big_add"]


def _normalized_input_conv(pool_beside: bool = False):
    """The model's own preprocessing on an NHWC image, x·(1/255) - mean, then / std per
    channel (Keras' Rescaling + Normalization through tf2onnx), Transpose to NCHW, Conv; with
    `pool_beside`, an AveragePool of the normalized image feeds a second Conv too."""
    c = 3
    inits = {
        "k": np.array(1 / 255, np.float32),
        "mean": np.array([0.485, 0.456, 0.406], np.float32),
        "inv_std": np.array([4.4, 4.5, 4.4], np.float32),
        "w": np.random.default_rng(1).standard_normal((4, c, 3, 3)).astype(np.float32),
        "w2": np.random.default_rng(2).standard_normal((4, c, 1, 1)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["r"], name="rescale"),
        helper.make_node("Sub", ["r", "mean"], ["s"], name="center"),
        helper.make_node("Mul", ["s", "inv_std"], ["n"], name="scale"),
        helper.make_node("Transpose", ["n"], ["t"], name="nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    outs = ["y"]
    if pool_beside:
        nodes += [
            helper.make_node("AveragePool", ["t"], ["p"], name="pool", kernel_shape=[2, 2]),
            helper.make_node("Conv", ["p", "w2"], ["side"], name="conv2"),
        ]
        outs.append("side")
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F32, [1, 8, 8, c])],
        [helper.make_tensor_value_info(o, F32, None) for o in outs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 10
    return m


def test_the_models_own_input_normalization_stays_float_and_the_conv_reads_the_first_grid():
    from faaq_onnx.passes.canonicalize import canonicalize

    model, _ = canonicalize(ir.from_proto(_normalized_input_conv()), target_opset=18)
    ops, q = _ops(model)
    names = {n.op_type: n.name for n in model.graph}
    assert "conv" in ops and not {"rescale", "scale"} & ops
    acts = {t for a in q.activations.values() for t in a.tensors}
    assert "x" not in acts and "n" in acts  # one grid, where the Conv reads the image
    assert "graph inputs alone" in q.left_float["rescale"], names
    assert "graph inputs alone" in q.left_float["scale"]


def test_an_op_reading_a_tensor_a_weighted_op_quantizes_anyway_is_not_preprocessing():
    from faaq_onnx.passes.canonicalize import canonicalize

    model, _ = canonicalize(ir.from_proto(_normalized_input_conv(pool_beside=True)), 18)
    ops, q = _ops(model)
    assert "pool" in ops  # QLinearAveragePool on the grid the Conv reads anyway
    assert "pool" not in q.left_float and "rescale" not in ops


def _gelu_on_nhwc(order: str):
    """A ConvNeXt MLP on an NHWC map (rank 4): h = x·W1 + b, GELU(h) = h·(1 + erf(h/√2))·0.5 in
    one exporter's order of its products, y = GELU(h)·W2; beside it, a rank-4 swish
    h·Sigmoid(h) into a MatMul (`side`), which QLinearMul pays for."""
    tail = {  # the products after a = erf(h/√2) + 1, as each exporter writes them
        "torchscript": [
            helper.make_node("Mul", ["h", "a"], ["p"], name="gelu_x"),
            helper.make_node("Mul", ["p", "half"], ["g"], name="gelu_half"),
        ],
        "dynamo": [
            helper.make_node("Mul", ["half", "a"], ["p"], name="gelu_half"),
            helper.make_node("Mul", ["h", "p"], ["g"], name="gelu_x"),
        ],
        "huggingface": [
            helper.make_node("Mul", ["h", "half"], ["p"], name="gelu_half"),
            helper.make_node("Mul", ["p", "a"], ["g"], name="gelu_x"),
        ],
    }[order]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["hm"], name="mm1"),
        helper.make_node("Add", ["hm", "b"], ["h"], name="bias"),
        helper.make_node("Div", ["h", "sqrt2"], ["d"], name="div"),
        helper.make_node("Erf", ["d"], ["e"], name="erf"),
        helper.make_node("Add", ["e", "one"], ["a"], name="plus_one"),
        *tail,
        helper.make_node("MatMul", ["g", "w2"], ["y"], name="mm2"),
        helper.make_node("Sigmoid", ["h"], ["s"], name="sig"),
        helper.make_node("Mul", ["h", "s"], ["m"], name="swish"),
        helper.make_node("MatMul", ["m", "w3"], ["side"], name="mm3"),
    ]
    inits = {
        "w1": _w(1),
        "w2": _w(2),
        "w3": _w(3),
        "b": np.ones(8, np.float32),
        "sqrt2": np.array(np.sqrt(2.0), np.float32),
        "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32),
    }
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F32, [1, 4, 4, 8])],
        [helper.make_tensor_value_info(o, F32, None) for o in ("side", "y")],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 10
    return ir.from_proto(onnx.shape_inference.infer_shapes(m))


@pytest.mark.parametrize("order", ["torchscript", "dynamo", "huggingface"])
def test_a_gelus_products_on_a_feature_map_stay_float_for_orts_fused_gelu(order):
    """Rank 4 makes a Mul a feature map's (QLinearMul pays on a CNN's swish, kept here), but
    quantizers inside a GELU break ORT's fusion into one Gelu kernel: its products stay float
    whatever order the exporter wrote them in, and the report says why."""
    ops, q = _ops(_gelu_on_nhwc(order))
    assert "swish" in ops and "mm2" in ops
    assert not {"gelu_x", "gelu_half", "plus_one"} & ops
    acts = {t for a in q.activations.values() for t in a.tensors}
    assert "g" in acts and not {"p", "a"} & acts  # the GELU's output feeds mm2: quantized
    for name in ("gelu_x", "gelu_half"):
        assert "inside a GELU" in q.left_float[name]
    # ORT's quantizer would quantize them all: --coverage ort still does
    ort_ops, _ = _ops(_gelu_on_nhwc(order), coverage="ort")
    assert {"gelu_x", "gelu_half"} <= ort_ops


def test_a_concat_with_a_constant_input_is_named_for_that():
    """A ViT's class token joined to the patch tokens: a constant input, so no quantizers; the
    reason says so (it had said Concat gets no quantizers at all)."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Concat", ["cls", "h"], ["joined"], name="join", axis=1),
        helper.make_node("MatMul", ["joined", "w2"], ["y"], name="mm2"),
        helper.make_node("MatMul", ["h", "w3"], ["side"], name="mm3"),
    ]
    inits = {"w1": _w(1), "w2": _w(2), "w3": _w(3), "cls": np.ones((1, 1, 8), np.float32)}
    ops, q = _ops(_model(nodes, inits))
    assert "join" not in ops
    assert "a Concat with a constant input" in q.left_float["join"]


def _groupnorm_silu(normalized: bool):
    """Conv -> [Reshape -> InstanceNormalization -> Reshape] -> Mul γ -> Add β -> SiLU -> Conv:
    torch's GroupNorm + SiLU as exported. Without the norm, the same affine and SiLU follow the
    Conv directly (a CNN's swish: quantized)."""
    c = 8
    rng = np.random.default_rng(0)
    w = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
    norm = [
        helper.make_node("Reshape", ["h", "grouped"], ["hg"], name="to_groups"),
        helper.make_node("InstanceNormalization", ["hg", "ones", "zeros"], ["n"], name="norm"),
        helper.make_node("Reshape", ["n", "back"], ["hn"], name="from_groups"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1] * 4, name="conv1"),
        *(norm if normalized else [helper.make_node("Identity", ["h"], ["hn"], name="same")]),
        helper.make_node("Mul", ["hn", "gamma"], ["m"], name="gamma"),
        helper.make_node("Add", ["m", "beta"], ["a"], name="beta"),
        helper.make_node("Sigmoid", ["a"], ["s"], name="sig"),
        helper.make_node("Mul", ["a", "s"], ["silu"], name="silu"),
        helper.make_node("Conv", ["silu", "w2"], ["y"], pads=[1] * 4, name="conv2"),
    ]
    inits = {
        "w1": w,
        "w2": w,
        "grouped": np.array([1, 4, -1], np.int64),
        "back": np.array([1, c, 6, 6], np.int64),
        "ones": np.ones(4, np.float32),
        "zeros": np.zeros(4, np.float32),
        "gamma": rng.standard_normal((c, 1, 1)).astype(np.float32),
        "beta": rng.standard_normal((c, 1, 1)).astype(np.float32),
    }
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F32, [1, c, 6, 6])],
        [helper.make_tensor_value_info("y", F32, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 10
    return ir.from_proto(onnx.shape_inference.infer_shapes(m))


def test_a_groupnorms_affine_and_silu_stay_float_up_to_the_next_conv():
    """ORT has no integer normalization: behind it the affine and the SiLU run faster as float
    ops (the SiLU fused) with one QuantizeLinear before the Conv than as QLinear ops started
    early; after a Conv the same ops are a CNN's and stay quantized."""
    ops, q = _ops(_groupnorm_silu(normalized=True))
    assert {"conv1", "conv2"} <= ops and not {"gamma", "beta", "silu"} & ops
    acts = {t for a in q.activations.values() for t in a.tensors}
    assert "silu" in acts and not {"m", "a", "s"} & acts  # one grid, in front of conv2
    for name in ("gamma", "beta", "silu"):
        assert "a normalization's float output" in q.left_float[name]
    assert "the Sigmoid of a SiLU" in q.left_float["sig"]
    ops, _ = _ops(_groupnorm_silu(normalized=False))
    assert {"gamma", "beta", "silu"} <= ops
