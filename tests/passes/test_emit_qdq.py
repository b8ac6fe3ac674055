import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from faaq_onnx.analysis.metrics import sqnr_db
from faaq_onnx.config import QuantConfig
from faaq_onnx.graph import through_cast
from faaq_onnx.pipeline import Compilation, quantize
from tests.conftest import optimized_op_types, run_model

# floors well below what each scheme reaches on the tiny models, far above broken output
SQNR_FLOOR = {"w8a8": 30, "w8a16": 30, "w6a6": 18, "w4a8": 12, "w4a4": 8, "w3a8": 6}


@pytest.mark.parametrize("scheme", list(SQNR_FLOOR))
def test_schemes_run_in_plain_ort(tiny_cnn, cnn_calib, scheme):
    res = quantize(tiny_cnn, cnn_calib, config=QuantConfig(scheme=scheme, progress=False))
    x = {"input": cnn_calib["input"][:16]}
    got = run_model(res.model, x)[0]
    ref = run_model(tiny_cnn, x)[0]
    assert sqnr_db(ref, got) > SQNR_FLOOR[scheme]
    assert res.report["verify"]["outputs"]["logits"]["sqnr_db"] > SQNR_FLOOR[scheme]


def _weight_inits(model: onnx.ModelProto):
    """Weight initializers read by a DequantizeLinear, directly or through a Cast [-> Add]."""
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    dq_inputs = {
        through_cast(n.input[0], producer, inits)[0]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
    }
    return [
        t
        for t in model.graph.initializer
        if t.name in dq_inputs and t.data_type != TensorProto.INT32 and len(t.dims) >= 2
    ]


def test_int4_weights_are_packed(tiny_mlp, mlp_calib):
    res = quantize(tiny_mlp, mlp_calib, config=QuantConfig(scheme="w4a8", progress=False))
    inits = _weight_inits(res.model)
    assert inits and all(t.data_type == TensorProto.INT4 for t in inits)
    elements = sum(int(np.prod(t.dims)) for t in inits)
    assert sum(len(t.raw_data) for t in inits) == sum(
        (int(np.prod(t.dims)) + 1) // 2 for t in inits
    )
    size = res.report["verify"]["size"]
    assert size["effective_weight_bits"] == 4.0
    # packed 4-bit data is 1/8 of float; scales add a little on top
    assert elements * 4 / 8 <= size["weight_stored_bytes"] < elements * 4 / 8 * 1.2


def test_odd_bits_keep_their_range_in_a_container(tiny_cnn, cnn_calib):
    res = quantize(tiny_cnn, cnn_calib, config=QuantConfig(scheme="w3a6", progress=False))
    for t in _weight_inits(res.model):
        assert t.data_type == TensorProto.INT4
        q = numpy_helper.to_array(t).astype(int)
        assert q.min() >= -4 and q.max() <= 3
    # 6-bit activations: a Clip bounds each QuantizeLinear to 64 codes of a uint8
    assert sum(n.op_type == "Clip" for n in res.model.graph.node) >= 3
    size = res.report["verify"]["size"]
    assert size["effective_weight_bits"] == 3.0 and size["stored_weight_bits"] > 4.0


@pytest.mark.parametrize("scheme", ["w8a4", "w8a6", "w4a6"])
def test_narrow_activations_keep_integer_kernels(tiny_cnn, cnn_calib, scheme):
    """A4/A6: the Clip that bounds the codes sits between Q and DQ, on uint8 codes, so ORT still
    fuses every Conv into QLinearConv (a float Clip before the Q ran them as float Convs)."""
    res = quantize(tiny_cnn, cnn_calib, config=QuantConfig(scheme=scheme, progress=False))
    ops = optimized_op_types(res.model)
    assert ops.count("QLinearConv") == 2, ops
    assert "Conv" not in ops and "FusedConv" not in ops
    producer = {o: n for n in res.model.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in res.model.graph.initializer}
    bits = int(scheme.split("a")[1])
    clips = [n for n in res.model.graph.node if n.op_type == "Clip"]
    assert len(clips) >= 3
    for clip in clips:
        assert producer[clip.input[0]].op_type == "QuantizeLinear"
        lo, hi = (inits[b] for b in clip.input[1:])
        assert lo.dtype == hi.dtype == np.uint8 and int(hi) - int(lo) == 2**bits - 1
    kinds = {k["activation_type"] for k in res.report["verify"]["kernels"]["nodes"]}
    assert kinds == {f"uint8 ({bits}-bit codes)"}, kinds
    # every narrow activation dequantizes to at most 2**bits values: the Clip's codes, not 8 bits
    probe = onnx.ModelProto()
    probe.CopyFrom(res.model)
    q_nodes = {n.output[0]: n for n in probe.graph.node if n.op_type == "QuantizeLinear"}
    dqs = [
        n
        for n in probe.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in {c.output[0] for c in clips}
    ]
    for dq in dqs:
        probe.graph.output.append(onnx.ValueInfoProto(name=dq.output[0]))
    outs = dict(zip([o.name for o in probe.graph.output], run_model(probe, cnn_calib), strict=True))
    for dq in dqs:
        clip = producer[dq.input[0]]
        q = q_nodes[clip.input[0]]
        scale, zp = float(inits[q.input[1]]), int(inits[q.input[2]])
        codes = np.round(outs[dq.output[0]] / scale).astype(int) + zp
        assert len(np.unique(codes)) <= 2**bits
        assert codes.min() >= int(inits[clip.input[1]]) and codes.max() <= int(inits[clip.input[2]])


def test_w8a8_fuses_into_integer_kernels(tiny_cnn, cnn_calib):
    res = quantize(tiny_cnn, cnn_calib, config=QuantConfig(scheme="w8a8", progress=False))
    ops = optimized_op_types(res.model)
    assert ops.count("QLinearConv") == 2
    assert "QLinearAdd" in ops and "QGemm" in ops
    assert "Conv" not in ops and "FusedConv" not in ops
    assert res.report["int32_biases"] == 3
    assert sorted(res.report["dropped_clamps"]) == ["relu1", "relu2"]


@pytest.mark.parametrize("input_scale", [1.0, 1e-3])
def test_symmetric_activations_keep_relu(tiny_cnn, cnn_calib, input_scale):
    """A signed grid represents negatives, so the Relu must stay, however small the
    range (tiny ranges make the representable negatives tiny too)."""
    calib = {"input": cnn_calib["input"] * input_scale}
    res = quantize(
        tiny_cnn, calib, config=QuantConfig(scheme="w8a8", act_symmetric=True, progress=False)
    )
    assert res.report["dropped_clamps"] == []
    assert sum(n.op_type == "Relu" for n in res.model.graph.node) == 2


def test_blocked_weights(tiny_mlp, mlp_calib):
    res = quantize(
        tiny_mlp,
        mlp_calib,
        config=QuantConfig(
            scheme="w4a8", weight_granularity="block", block_size=16, progress=False
        ),
    )
    dq = [
        n
        for n in res.model.graph.node
        if n.op_type == "DequantizeLinear" and any(a.name == "block_size" for a in n.attribute)
    ]
    assert len(dq) == 2 and all(
        onnx.helper.get_attribute_value(a) == 16
        for n in dq
        for a in n.attribute
        if a.name == "block_size"
    )
    assert res.report["verify"]["outputs"]["y"]["sqnr_db"] > 12


def test_per_tensor_weights(tiny_cnn, cnn_calib):
    res = quantize(
        tiny_cnn, cnn_calib, config=QuantConfig(weight_granularity="per-tensor", progress=False)
    )
    inits = {t.name: t for t in res.model.graph.initializer}
    weight_dq = [
        n
        for n in res.model.graph.node
        if n.op_type == "DequantizeLinear" and len(inits.get(n.input[0], TensorProto()).dims) >= 2
    ]
    assert len(weight_dq) == 3
    assert all(not n.attribute and len(inits[n.input[1]].dims) == 0 for n in weight_dq)
    assert res.report["verify"]["outputs"]["logits"]["sqnr_db"] > 25


def test_weight_only_scheme_becomes_matmulnbits_with_no_activation_qdq(tiny_mlp, mlp_calib):
    cfg = QuantConfig(
        scheme="w4",
        weight_granularity="block",
        block_size=16,
        weight_symmetric=False,
        progress=False,
    )
    res = quantize(tiny_mlp, mlp_calib, config=cfg)
    ops = [n.op_type for n in res.model.graph.node]
    assert ops.count("MatMulNBits") == 2 and "MatMul" not in ops
    assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops
    assert sorted(res.report["matmulnbits"]) == ["mm1", "mm2"]
    assert res.report["verify"]["outputs"]["y"]["sqnr_db"] > 12


@pytest.mark.parametrize("kernel", ["int8", "nbits", "auto"])
def test_matmul_kernel_choice(tiny_mlp, mlp_calib, kernel):
    res = quantize(
        tiny_mlp, mlp_calib, config=QuantConfig(scheme="w4a8", matmul_kernel=kernel, progress=False)
    )
    ops = [n.op_type for n in res.model.graph.node]
    if kernel == "int8":
        assert "MatMulNBits" not in ops and res.report["verify"]["kernels"]["summary"][
            0
        ].startswith("all")
    elif kernel == "nbits":
        assert ops.count("MatMulNBits") == 2 and "MatMul" not in ops
    else:
        measured = res.report["matmul_kernel"]["measured"]
        assert len(measured) == 2 and all(
            m["choice"] in ("int8", "nbits") for m in measured.values()
        )
        assert ops.count("MatMulNBits") == sum(m["choice"] == "nbits" for m in measured.values())


@pytest.mark.parametrize(
    "schemes,cfg,int2,opset",
    [
        (["w8a8"], {}, False, 13),
        (["w6a8", "w8a8"], {}, True, 13),  # int8 containers: opset 13
        (["w4a8"], {}, False, 21),
        (["w8a16"], {}, False, 21),  # int4 / int16 types
        (["w8a8"], {"weight_granularity": "block"}, False, 21),  # blocked scales
        (["w2a8", "w8a8"], {}, True, 25),  # int2 containers, cast storage
        (["w2a8"], {}, False, 21),  # int2 not allowed: int4 containers
        (["w2a8"], {"weight_storage": "dequant"}, True, 21),  # DQ(int2) storage keeps int4
        (["w2a8"], {"weight_granularity": "block"}, True, 21),
        (["w8a8", "float"], {}, False, 13),
    ],
)
def test_needed_opset_is_the_lowest_with_every_type(schemes, cfg, int2, opset):
    from faaq_onnx.config import Candidate
    from faaq_onnx.passes.emit_qdq import needed_opset
    from faaq_onnx.plan import BitPlan

    plan = BitPlan({f"g{i}": Candidate.parse(s) for i, s in enumerate(schemes)})
    assert needed_opset(plan, QuantConfig(**cfg), int2) == opset


def test_weight_that_is_also_a_graph_output_stays(tmp_path):
    """Quantizing a weight's consumers must not delete an initializer the graph still
    exposes: the output keeps the float weight, bit for bit."""
    from onnx import helper

    from tests.conftest import _save

    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 6)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 6]),
        ],
        [numpy_helper.from_array(w, "w")],
    )
    src = _save(
        helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "wout.onnx"
    )
    x = rng.standard_normal((32, 8)).astype(np.float32)
    quantize(src, {"x": x}, str(tmp_path / "q.onnx"), QuantConfig(scheme="w4a8", progress=False))
    q = onnx.load(str(tmp_path / "q.onnx"))
    mm = next(n for n in q.graph.node if n.op_type == "MatMul")
    producer = {o: n for n in q.graph.node for o in n.output}
    assert (
        producer[mm.input[1]].op_type == "DequantizeLinear"
    )  # the MatMul reads the quantized copy
    y, w_out = run_model(tmp_path / "q.onnx", {"x": x[:4]})
    np.testing.assert_array_equal(w_out, w)
    assert sqnr_db(x[:4] @ w, y) > 12


def test_two_bit_weights_stored_in_int2_where_ort_takes_them(tiny_cnn, cnn_calib):
    """W2 with int2 allowed: INT2 initializers at opset 25 that ORT folds and fuses into
    QLinearConv; where this ORT cannot load int2, INT4 containers and a warning instead."""
    from faaq_onnx.runtime.capabilities import int2_unsupported_reason

    res = quantize(tiny_cnn, cnn_calib, config=QuantConfig(scheme="w2a8", progress=False))
    inits = _weight_inits(res.model)
    why = int2_unsupported_reason()
    expected = TensorProto.INT4 if why else TensorProto.INT2
    assert inits and all(t.data_type == expected for t in inits)
    per_byte = 2 if why else 4
    assert sum(len(t.raw_data) for t in inits) == sum(
        -(-int(np.prod(t.dims)) // per_byte) for t in inits
    )
    opset = next(o.version for o in res.model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset == (21 if why else 25)
    assert bool(why) == any("int2" in w for w in res.report["warnings"])
    assert "QLinearConv" in optimized_op_types(res.model)
    no_int2 = quantize(
        tiny_cnn, cnn_calib, config=QuantConfig(scheme="w2a8", int2=False, progress=False)
    )
    assert all(t.data_type == TensorProto.INT4 for t in _weight_inits(no_int2.model))


def test_dropped_relu_at_the_graph_output_keeps_the_output_name(tmp_path):
    """MatMul -> Relu -> (output y, and MatMul -> output z): the Relu is folded into the
    Q/DQ of y, and the model still answers to the output name `y`, with values >= 0."""
    from onnx import helper

    from tests.conftest import _save

    rng = np.random.default_rng(0)
    w, w2 = (
        rng.standard_normal((8, 6)).astype(np.float32),
        rng.standard_normal((6, 4)).astype(np.float32),
    )
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
            helper.make_node("Relu", ["h"], ["y"], name="relu"),
            helper.make_node("MatMul", ["y", "w2"], ["z"], name="mm2"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 4]),
        ],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w2, "w2")],
    )
    src = _save(
        helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
        tmp_path / "relu_out.onnx",
    )
    x = rng.standard_normal((64, 8)).astype(np.float32)
    res = quantize(
        src, {"x": x}, str(tmp_path / "q.onnx"), QuantConfig(scheme="w8a8", progress=False)
    )
    q = onnx.load(str(tmp_path / "q.onnx"))
    assert [o.name for o in q.graph.output] == ["y", "z"]
    assert res.report["dropped_clamps"] == ["relu"] and not any(
        n.op_type == "Relu" for n in q.graph.node
    )
    y, z = run_model(tmp_path / "q.onnx", {"x": x[:8]})
    ref = np.maximum(x[:8] @ w, 0)
    assert y.min() >= 0 and sqnr_db(ref, y) > 25 and sqnr_db(ref @ w2, z) > 20


def test_relu6_clip_is_dropped_when_the_grid_fits_inside_it(tmp_path):
    """MatMul -> Clip(0, 6) -> MatMul: the calibrated range lies in [0, 6], so the Clip folds
    into the activation Q/DQ (QLinear kernels clamp by construction)."""
    from onnx import helper

    from tests.conftest import _save

    rng = np.random.default_rng(0)
    w, w2 = (
        rng.standard_normal((8, 6)).astype(np.float32),
        rng.standard_normal((6, 4)).astype(np.float32),
    )
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
            helper.make_node("Clip", ["h", "lo", "hi"], ["r"], name="clip"),
            helper.make_node("MatMul", ["r", "w2"], ["z"], name="mm2"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 4])],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
            numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
        ],
    )
    src = _save(
        helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "clip.onnx"
    )
    x = rng.standard_normal((64, 8)).astype(np.float32)
    res = quantize(
        src, {"x": x}, str(tmp_path / "q.onnx"), QuantConfig(scheme="w8a8", progress=False)
    )
    assert res.report["dropped_clamps"] == ["clip"]
    # its bounds went with it: ORT warns at every session about an initializer nothing reads
    written = onnx.load(tmp_path / "q.onnx")
    read = {i for n in written.graph.node for i in n.input}
    assert {"lo", "hi"}.isdisjoint(t.name for t in written.graph.initializer)
    assert all(t.name in read for t in written.graph.initializer)
    (z,) = run_model(tmp_path / "q.onnx", {"x": x[:8]})
    assert sqnr_db(np.clip(x[:8] @ w, 0, 6) @ w2, z) > 20


def test_a_group_kept_float_reads_its_float_weight(tiny_cnn, cnn_calib):
    """A plan with one group at `float`: its weight stays a float initializer feeding its op
    directly, the rest is quantized, and the model still matches float closely."""
    from faaq_onnx.config import Candidate
    from faaq_onnx.plan import BitPlan

    comp = Compilation(tiny_cnn, cnn_calib, QuantConfig(progress=False))
    kept = next(g for g in comp.qgraph.groups.values() if g.weights)
    plan = BitPlan(
        {
            g: (Candidate.parse("float") if g == kept.name else Candidate(8, 8))
            for g in comp.qgraph.groups
        }
    )
    res = comp.emit(plan)
    producer = {o: n for n in res.model.graph.node for o in n.output}
    inits = {t.name: t for t in res.model.graph.initializer}
    w = kept.weights[0]
    assert w in inits and inits[w].data_type == TensorProto.FLOAT and w not in producer
    assert any(
        w in n.input and n.op_type not in ("DequantizeLinear", "Cast") for n in res.model.graph.node
    )
    assert min(o["sqnr_db"] for o in res.report["verify"]["outputs"].values()) > 25


def test_a_bias_too_large_for_int32_widens_its_channels_weight_scale(tmp_path):
    """A channel with tiny weights (BN-folded, as in EfficientNet-Lite0, PP-OCRv4 det and rec)
    has a tiny weight scale, so its int32 bias overflows. Computed in float32 the bound rounded to
    2**31 and the bias wrapped to -2**31 (a sign flip); saturated, it came out as ~0 and the
    channel's constant output was lost. The channel's weight scale is widened instead (as ORT's
    quantizer does): its tiny weights round to 0 and the bias survives."""
    import warnings

    from tests.conftest import build_dead_channel_conv

    rng = np.random.default_rng(0)
    m = build_dead_channel_conv()
    b = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "b"))
    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(m, src)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = quantize(
            str(src),
            {"x": rng.standard_normal((16, 3, 8, 8)).astype(np.float32)},
            str(out),
            QuantConfig(scheme="w8a8", progress=False),
        )
    # the report and the summary say what was done to which layer
    from faaq_onnx.cli.summary import summary_line

    assert res.report["widened_for_bias"] == {"w": 1}
    assert "int32 biases: 1 channel(s) in 1 layer(s)" in summary_line(res.report)
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer}
    bias, scale = inits["b_quantized"], inits["b_scale"]
    assert np.all(np.abs(bias) <= 2**30) and np.all(np.sign(bias) == np.sign(b))
    np.testing.assert_allclose(bias * scale, b, rtol=1e-3)  # every channel's bias survives
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    (got,) = run_model(str(out), {"x": x})
    (ref,) = run_model(str(src), {"x": x})
    np.testing.assert_allclose(got[:, 2], ref[:, 2], atol=0.01)  # the dead channel's constant
