from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.errors import FaaqError
from faaq_onnx.model_io import load_model
from tests.conftest import build_tiny_cnn


def test_loads_a_valid_model(tiny_cnn):
    model = load_model(tiny_cnn)
    assert any(n.op_type == "Conv" for n in model.graph)


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "empty"),
        (b"this is not a protobuf at all \xff\xfe", "not"),
    ],
)
def test_not_onnx(tmp_path, content, match):
    p = tmp_path / "bad.onnx"
    p.write_bytes(content)
    with pytest.raises(FaaqError, match=match):
        load_model(p)


def test_truncated_file(tmp_path, tiny_cnn):
    data = Path(tiny_cnn).read_bytes()
    p = tmp_path / "trunc.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(FaaqError):
        load_model(p)


def test_missing_file(tmp_path):
    with pytest.raises(FaaqError, match="not found"):
        load_model(tmp_path / "nope.onnx")


def test_custom_domain_op_is_named(tmp_path):
    node = helper.make_node("FancyOp", ["x"], ["y"], domain="com.example", name="fancy")
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    m.ir_version = 10
    p = tmp_path / "custom.onnx"
    onnx.save(m, p)
    with pytest.raises(FaaqError, match=r"unsupported op 'FancyOp'.*fancy"):
        load_model(p)


def test_unsupported_opset(tmp_path):
    m = build_tiny_cnn(opset=17)
    m.opset_import[0].version = 99
    m.ir_version = 10
    p = tmp_path / "future.onnx"
    onnx.save(m, p)
    with pytest.raises(FaaqError, match="unsupported opset 99"):
        load_model(p)


def _external_model(tmp_path, location):
    """A one-initializer model whose weight is said to live in `location`."""
    import numpy as np
    from onnx import numpy_helper

    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        e = w.external_data.add()
        e.key, e.value = k, v
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    p = tmp_path / "m.onnx"
    p.write_bytes(m.SerializeToString())
    return p


@pytest.mark.parametrize(
    "location,match",
    [
        ("../../etc/passwd", "points outside the model's folder"),
        ("/etc/passwd", "points outside the model's folder"),
        ("missing.data", "is missing"),
    ],
)
def test_external_data_outside_folder_or_missing_is_one_line(tmp_path, location, match):
    with pytest.raises(FaaqError, match=match):
        load_model(_external_model(tmp_path, location))


def test_truncated_external_data(tmp_path):
    (tmp_path / "w.data").write_bytes(b"\0" * 8)
    with pytest.raises(FaaqError, match="shorter"):
        load_model(_external_model(tmp_path, "w.data"))


def _save_graph(tmp_path, nodes, inputs, outputs, inits=(), opsets=(("", 17),), name="m.onnx"):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    m.ir_version = 8
    p = tmp_path / name
    onnx.save(m, p)
    return p


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])


@pytest.mark.parametrize("opset, ok", [(6, False), (7, True), (23, True), (24, False)])
def test_opsets_from_7_to_23_are_read(tmp_path, opset, ok):
    p = _save_graph(
        tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [X], [Y], opsets=[("", opset)]
    )
    if ok:
        assert [n.op_type for n in load_model(p).graph] == ["Relu"]
    else:
        with pytest.raises(FaaqError, match=rf"unsupported opset {opset} \(supported: 7..23\)"):
            load_model(p)


def test_declared_shapes_that_disagree_with_the_ops_are_no_reason_to_refuse(tmp_path):
    """Exporters write loose output shapes; only the structural check runs (not full_check)."""
    wrong = helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])
    p = _save_graph(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [X], [wrong])
    assert len(list(load_model(p).graph)) == 1


def test_what_is_refused_and_why(tmp_path):
    relu = helper.make_node("Relu", ["x"], ["y"], name="r")
    cases = [
        (_save_graph(tmp_path, [relu], [X], [Y], opsets=[("com.microsoft", 1)], name="a.onnx"),
         "no default-domain opset import"),
        (_save_graph(tmp_path, [helper.make_node("NoSuchOp", ["x"], ["y"], name="n")], [X], [Y],
                     name="b.onnx"), "invalid ONNX model: No Op registered for NoSuchOp"),
        (_save_graph(tmp_path, [relu], [X], [Y],
                     [numpy_helper.from_array(np.zeros((2, 3), np.float32), "x")],
                     name="c.onnx"), "the graph has no inputs to calibrate with"),
    ]  # fmt: skip
    for path, message in cases:
        with pytest.raises(FaaqError, match=message):
            load_model(path)


def test_custom_ops_inside_subgraphs_are_found(tmp_path):
    """An If's branch holding an op of an unknown domain is refused like a top-level one."""
    branch = helper.make_graph(
        [helper.make_node("Fancy", ["x"], ["t"], domain="com.example", name="inner")],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 3])],
    )
    other = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 3])],
    )
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
        helper.make_node("Cast", ["m"], ["c"], to=TensorProto.BOOL),
        helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other),
    ]
    p = _save_graph(tmp_path, nodes, [X], [Y], opsets=[("", 17), ("com.example", 1)])
    with pytest.raises(FaaqError, match=r"custom domain 'com.example' in node 'inner'"):
        load_model(p)


def test_ml_and_microsoft_domains_are_known(tmp_path):
    nodes = [
        helper.make_node("Gelu", ["x"], ["g"], domain="com.microsoft"),
        helper.make_node("Relu", ["g"], ["y"]),
    ]
    p = _save_graph(
        tmp_path, nodes, [X], [Y], opsets=[("", 17), ("com.microsoft", 1), ("ai.onnx.ml", 3)]
    )
    assert [n.op_type for n in load_model(p).graph] == ["Gelu", "Relu"]


def test_a_model_quantized_already_is_refused_in_one_line_and_still_inspected(tiny_cnn, tmp_path):
    """faaq's own output, or ORT's: quantize and analyze refuse it before any work, write
    nothing; inspect and profile still read it."""
    from click.testing import CliRunner

    from faaq_onnx import quantize
    from faaq_onnx.cli import main
    from faaq_onnx.config import QuantConfig

    q, again = tmp_path / "q.onnx", tmp_path / "qq.onnx"
    quantize(tiny_cnn, "random:4", str(q), QuantConfig(scheme="w8a8", progress=False))
    r = CliRunner().invoke(main, ["quantize", str(q), "-o", str(again), "--calib", "random:4"])
    assert r.exit_code == 2 and not again.exists()
    line = r.stderr.strip()
    assert "\n" not in line and "quantized already" in line and "DequantizeLinear" in line
    r = CliRunner().invoke(
        main, ["analyze", str(q), "--calib", "random:4", "--report", str(tmp_path / "rep")]
    )
    assert r.exit_code == 2 and "quantized already" in r.stderr
    assert not (tmp_path / "rep").exists()
    assert CliRunner().invoke(main, ["inspect", str(q), "--kernels"]).exit_code == 0


def test_a_graph_output_that_is_not_a_tensor_is_refused_in_one_line(tmp_path):
    """skl2onnx's default classifier output: ZipMap's sequence of maps (onnx-ir cannot read
    such a graph: a traceback before)."""
    m = build_tiny_cnn()
    seq = helper.make_sequence_type_proto(
        helper.make_map_type_proto(
            TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])
        )
    )
    m.graph.node.append(
        helper.make_node(
            "ZipMap",
            [m.graph.output[0].name],
            ["zipped"],
            domain="ai.onnx.ml",
            classlabels_int64s=list(range(10)),
        )
    )
    m.graph.output.append(helper.make_value_info("zipped", seq))
    m.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    p = tmp_path / "zipmap.onnx"
    onnx.save(m, p)
    with pytest.raises(FaaqError, match=r"output 'zipped' is a sequence, not a tensor .*zipmap"):
        load_model(p)
