"""runtime/kernels._fate: which op runs a node of the emitted graph after ORT's optimization."""

from onnx import helper

from faaq_onnx.runtime.kernels import _fate


def model(nodes):
    return helper.make_model(helper.make_graph(nodes, "g", [], []))


def test_fate_by_name_fused_name_or_output():
    conv = helper.make_node("Conv", ["x", "w"], ["c"])  # no name: found by its output
    q = helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"])
    relu = helper.make_node("Relu", ["c"], ["r"])
    original = model([conv, q, relu])
    fused = helper.make_node("QLinearConv", ["xq"], ["cq"], name="fused")
    kept = helper.make_node("Relu", ["c2"], ["r"], name="relu_kept")
    by_output = {"cq": fused, "r": kept}
    by_name = {"fused": fused, "relu_kept": kept}
    # the Conv's output went through the QuantizeLinear after it: the QLinearConv runs it
    assert _fate(conv, by_name, by_output, original) == "QLinearConv"
    named = helper.make_node("MatMul", ["a", "b"], ["m"], name="mm1")
    for opt_name in ("mm1", "mm1_token_3", "mm1_nchwc", "mm1/MatMulAddFusion"):
        n = helper.make_node("FusedMatMul", ["a"], ["zz"], name=opt_name)
        assert _fate(named, {opt_name: n}, {}, model([named])) == "FusedMatMul", opt_name
    other = helper.make_node("Gemm", ["a"], ["zz"], name="mm10")
    assert _fate(named, {"mm10": other}, {}, model([named])) is None
    assert _fate(helper.make_node("Add", ["p", "q"], ["gone"]), {}, {}, original) is None


def test_a_node_of_the_original_graph_is_not_taken_for_what_became_of_another():
    """tf2onnx nests names: 'net/conv/ExpandDims' (an Unsqueeze of the original graph) is not what
    ORT made of 'net/conv'; with no node of its own name left, the Conv is found by its output."""
    helper_node = helper.make_node("Unsqueeze", ["x", "ax"], ["u"], name="net/conv/ExpandDims")
    conv = helper.make_node("Conv", ["u", "w"], ["c"], name="net/conv")
    fused = helper.make_node("QLinearConv", ["uq"], ["c"], name="QLinearConv_0")
    by_name = {"net/conv/ExpandDims": helper_node, "QLinearConv_0": fused}
    assert _fate(conv, by_name, {"c": fused}, model([helper_node, conv])) == "QLinearConv"
