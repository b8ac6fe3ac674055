import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from faaq_onnx.config import QuantConfig
from faaq_onnx.pipeline import quantize
from faaq_onnx.analysis.metrics import sqnr_db
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
    """Weight initializers read by a DequantizeLinear, directly or through a Cast."""
    casts = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast"}
    dq_inputs = {casts.get(n.input[0], n.input[0]) for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return [t for t in model.graph.initializer if t.name in dq_inputs and t.data_type != TensorProto.INT32
            and len(t.dims) >= 2]


def test_int4_weights_are_packed(tiny_mlp, mlp_calib):
    res = quantize(tiny_mlp, mlp_calib, config=QuantConfig(scheme="w4a8", progress=False))
    inits = _weight_inits(res.model)
    assert inits and all(t.data_type == TensorProto.INT4 for t in inits)
    elements = sum(int(np.prod(t.dims)) for t in inits)
    assert sum(len(t.raw_data) for t in inits) == sum((int(np.prod(t.dims)) + 1) // 2 for t in inits)
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


def test_w8a8_fuses_into_integer_kernels(tiny_cnn, cnn_calib):
    res = quantize(tiny_cnn, cnn_calib, config=QuantConfig(scheme="w8a8", progress=False))
    ops = optimized_op_types(res.model)
    assert ops.count("QLinearConv") == 2
    assert "QLinearAdd" in ops and "QGemm" in ops
    assert "Conv" not in ops and "FusedConv" not in ops
    assert res.report["int32_biases"] == 3
    assert sorted(res.report["dropped_clamps"]) == ["relu1", "relu2"]


def test_symmetric_activations_keep_relu(tiny_cnn, cnn_calib):
    res = quantize(tiny_cnn, cnn_calib, config=QuantConfig(scheme="w8a8", act_symmetric=True, progress=False))
    assert res.report["dropped_clamps"] == []
    assert sum(n.op_type == "Relu" for n in res.model.graph.node) == 2


def test_blocked_weights(tiny_mlp, mlp_calib):
    res = quantize(tiny_mlp, mlp_calib, config=QuantConfig(scheme="w4a8", weight_granularity="block",
                                                           block_size=16, progress=False))
    dq = [n for n in res.model.graph.node if n.op_type == "DequantizeLinear"
          and any(a.name == "block_size" for a in n.attribute)]
    assert len(dq) == 2 and all(onnx.helper.get_attribute_value(a) == 16 for n in dq for a in n.attribute
                                if a.name == "block_size")
    assert res.report["verify"]["outputs"]["y"]["sqnr_db"] > 12


def test_per_tensor_weights(tiny_cnn, cnn_calib):
    res = quantize(tiny_cnn, cnn_calib, config=QuantConfig(weight_granularity="per-tensor", progress=False))
    inits = {t.name: t for t in res.model.graph.initializer}
    weight_dq = [n for n in res.model.graph.node if n.op_type == "DequantizeLinear"
                 and len(inits.get(n.input[0], TensorProto()).dims) >= 2]
    assert len(weight_dq) == 3
    assert all(not n.attribute and len(inits[n.input[1]].dims) == 0 for n in weight_dq)
    assert res.report["verify"]["outputs"]["logits"]["sqnr_db"] > 25


def test_matmulnbits_through_the_pipeline(tiny_mlp, mlp_calib):
    cfg = QuantConfig(scheme="w4a8", weight_granularity="block", block_size=16, matmulnbits=True,
                      weight_only_matmul=True, progress=False)
    res = quantize(tiny_mlp, mlp_calib, config=cfg)
    ops = [n.op_type for n in res.model.graph.node]
    assert ops.count("MatMulNBits") == 2 and "MatMul" not in ops
    assert sorted(res.report["matmulnbits"]) == ["mm1", "mm2"]
    assert res.report["verify"]["outputs"]["y"]["sqnr_db"] > 12


@pytest.mark.parametrize("scheme,packed", [("w4a8", TensorProto.INT4), ("w3a8", TensorProto.INT4),
                                           ("w2a8", TensorProto.INT2)])
def test_low_bit_weights_are_packed_and_run_on_int8_kernels(tiny_cnn, cnn_calib, scheme, packed):
    """Cast storage: packed initializer -> Cast(int8) -> DQ, folded and fused by ORT at load."""
    res = quantize(tiny_cnn, cnn_calib, config=QuantConfig(scheme=scheme, progress=False))
    inits = _weight_inits(res.model)
    assert len(inits) == 3 and all(t.data_type == packed for t in inits)
    casts = [n for n in res.model.graph.node if n.op_type == "Cast"]
    assert len(casts) == 3 and all(n.attribute[0].i == TensorProto.INT8 for n in casts)
    ops = optimized_op_types(res.model)
    assert ops.count("QLinearConv") == 2 and "QGemm" in ops
    assert "Conv" not in ops and "Cast" not in ops
    assert all(w["storage"] == "cast" for w in res.report["verify"]["size"]["per_weight"].values())
    if packed == TensorProto.INT2:
        assert next(o.version for o in res.model.opset_import if o.domain == "") == 25
        assert res.model.ir_version == 11


def test_dequant_storage_keeps_int4_dq_and_runs_float(tiny_cnn, cnn_calib):
    cast = quantize(tiny_cnn, cnn_calib, config=QuantConfig(scheme="w4a8", progress=False))
    deq = quantize(tiny_cnn, cnn_calib, config=QuantConfig(scheme="w4a8", weight_storage="dequant", progress=False))
    assert not any(n.op_type == "Cast" for n in deq.model.graph.node)
    assert "Conv" in optimized_op_types(deq.model) or "FusedConv" in optimized_op_types(deq.model)
    # same integers, same scales: the two forms compute the same function
    x = {"input": cnn_calib["input"][:16]}
    a, b = run_model(cast.model, x)[0], run_model(deq.model, x)[0]
    assert sqnr_db(b, a) > 30 and np.mean(a.argmax(1) == b.argmax(1)) >= 0.9
    # and store the same packed weight bytes
    assert sorted(t.raw_data for t in _weight_inits(cast.model)) == sorted(t.raw_data for t in _weight_inits(deq.model))


def test_two_bit_falls_back_to_int4_without_int2(tiny_cnn, cnn_calib):
    res = quantize(tiny_cnn, cnn_calib, config=QuantConfig(scheme="w2a8", int2=False, progress=False))
    assert all(t.data_type == TensorProto.INT4 for t in _weight_inits(res.model))
    assert next(o.version for o in res.model.opset_import if o.domain == "") == 21
