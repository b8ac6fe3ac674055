"""stages/prepare.py's helpers: the int2 fallback of canonicalization, its options, and the
message when there is nothing to quantize."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.errors import FaaqError
from faaq_onnx.runtime import capabilities
from faaq_onnx.stages import prepare


@pytest.fixture
def canon(monkeypatch):
    calls = []

    def fake(model, target_opset, **options):
        calls.append((target_opset, options))
        if target_opset == 25 and getattr(model, "refuse25", False):
            raise FaaqError("opset 25 refused")
        return f"canonical@{target_opset}", ["w0"]

    monkeypatch.setattr(prepare, "canonicalize", fake)
    return calls


def cfg(optimize=(), cle_relu6="keep", simplify=True):
    return SimpleNamespace(optimize=list(optimize), cle_relu6=cle_relu6, simplify=simplify)


def test_int2_at_opset_25_where_this_runtime_takes_it(canon, monkeypatch):
    monkeypatch.setattr(capabilities, "int2_unsupported_reason", lambda: None)
    model, warnings, int2 = prepare._canonicalize(SimpleNamespace(), 25, cfg())
    assert (model, warnings, int2) == ("canonical@25", ["w0"], True)
    assert [c[0] for c in canon] == [25]


def test_int2_falls_back_to_int4_containers_with_the_reason(canon, monkeypatch):
    monkeypatch.setattr(capabilities, "int2_unsupported_reason", lambda: "no int2 here")
    model, warnings, int2 = prepare._canonicalize(SimpleNamespace(), 25, cfg())
    assert (model, int2) == ("canonical@21", False)
    assert warnings == ["w0", "2-bit weights stored in int4 containers: no int2 here"]
    monkeypatch.setattr(capabilities, "int2_unsupported_reason", lambda: None)
    canon.clear()
    model, warnings, int2 = prepare._canonicalize(SimpleNamespace(refuse25=True), 25, cfg())
    assert [c[0] for c in canon] == [25, 21] and not int2
    assert warnings[-1] == "2-bit weights stored in int4 containers: opset 25 refused"


def test_below_opset_25_no_int2_question_is_asked(canon, monkeypatch):
    def boom():
        raise AssertionError("not asked below opset 25")

    monkeypatch.setattr(capabilities, "int2_unsupported_reason", boom)
    assert prepare._canonicalize(SimpleNamespace(), 21, cfg()) == ("canonical@21", ["w0"], False)
    assert prepare._canonicalize(SimpleNamespace(), 13, cfg())[0] == "canonical@13"


def test_canonicalization_options():
    assert prepare._canon_options(cfg()) == {"simplify": True, "cle": None, "zero_biases": False}
    assert prepare._canon_options(
        cfg(optimize=("cle", "bias-correction"), cle_relu6="replace", simplify=False)
    ) == {"simplify": False, "cle": "replace", "zero_biases": True}


def _model_with_subgraph_ops():
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")

    def branch(name, ops):
        nodes, x = [], "x"
        for i, op in enumerate(ops):
            nodes.append(helper.make_node(op, [x, "w"], [f"{name}{i}"]))
            x = f"{name}{i}"
        return helper.make_graph(
            nodes, name, [], [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)]
        )

    nodes = [
        helper.make_node(
            "If",
            ["c"],
            ["y"],
            then_branch=branch("then", ["MatMul", "MatMul"]),
            else_branch=branch("else", ["Gemm", "Add"]),
        )
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_nothing_to_quantize_names_the_weighted_ops_inside_control_flow():
    assert prepare._nothing_to_quantize(_model_with_subgraph_ops()) == (
        "found nothing to quantize outside control flow: the model's weighted ops "
        "(1 Gemm, 2 MatMul) are all inside If branches, which only `faaq quantize` with a "
        "uniform --scheme quantizes (branch by branch); sensitivity sweeps and budgets do not "
        "reach them"
    )
    # the same If, inside a Loop body: nothing of it can be quantized
    proto = ir.to_proto(_model_with_subgraph_ops())
    body = helper.make_graph(
        [helper.make_node("Identity", ["cin"], ["cout"]), *proto.graph.node],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cin", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("cout", TensorProto.BOOL, []),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
        ],
    )
    loop = helper.make_graph(
        [helper.make_node("Loop", ["n", "c"], ["yy"], body=body)],
        "g",
        [
            helper.make_tensor_value_info("n", TensorProto.INT64, []),
            *proto.graph.input,
        ],
        [helper.make_tensor_value_info("yy", TensorProto.FLOAT, None)],
        list(proto.graph.initializer),
    )
    looped = ir.from_proto(helper.make_model(loop, opset_imports=proto.opset_import))
    assert prepare._nothing_to_quantize(looped) == (
        "found nothing to quantize outside control flow: the model's weighted ops "
        "(1 Gemm, 2 MatMul) are all inside If/Loop/Scan subgraphs, which faaq does not quantize"
    )
    plain = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = ir.from_proto(helper.make_model(plain))
    assert prepare._nothing_to_quantize(model) == (
        "found nothing to quantize: no Conv, Gemm, MatMul or other quantizable op with float inputs"
    )
