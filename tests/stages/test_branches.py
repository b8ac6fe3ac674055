"""Models whose weighted ops all sit inside If branches (silero-vad's layout): each branch the
calibration samples take is quantized on its own and put back; the rest stays float."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from faaq_onnx.config import QuantConfig
from faaq_onnx.errors import FaaqError
from faaq_onnx.pipeline import quantize
from faaq_onnx.runtime.kernels import kernel_report
from faaq_onnx.runtime.session import make_session
from faaq_onnx.stages.branches import branch_sites, outer_reads, rename_scope

RNG = np.random.default_rng(0)


def _branch(name: str, x: str, seed: int) -> onnx.GraphProto:
    rng = np.random.default_rng(seed)
    w = nh.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    w2 = nh.from_array(rng.normal(0, 0.3, (4, 4, 1, 1)).astype(np.float32), "w2")
    return h.make_graph(
        [
            h.make_node("Conv", [x, "w"], ["c"], pads=[1] * 4, name="conv"),
            h.make_node("Relu", ["c"], ["r"], name="relu"),
            h.make_node("Conv", ["r", "w2"], ["out"], name="conv2"),
        ],
        name,
        [],
        [h.make_tensor_value_info("out", T.FLOAT, ["B", 4, 8, 8])],
        [w, w2],
    )


def sr_model(pre_relu: bool = False) -> onnx.ModelProto:
    """y = If(sr == 16000, conv net A, conv net B) on x (or on Relu(x) computed outside)."""
    x = "x"
    nodes = [
        h.make_node("Constant", [], ["k"], value=nh.from_array(np.array(16000, np.int64))),
        h.make_node("Equal", ["sr", "k"], ["is16k"]),
    ]
    if pre_relu:
        nodes.append(h.make_node("Relu", ["x"], ["xr"]))
        x = "xr"
    nodes.append(
        h.make_node(
            "If",
            ["is16k"],
            ["y"],
            then_branch=_branch("a", x, 1),
            else_branch=_branch("b", x, 2),
            name="rate",
        )
    )
    g = h.make_graph(
        nodes,
        "g",
        [
            h.make_tensor_value_info("x", T.FLOAT, ["B", 3, 8, 8]),
            h.make_tensor_value_info("sr", T.INT64, []),
        ],
        [h.make_tensor_value_info("y", T.FLOAT, ["B", 4, 8, 8])],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _calib(n: int, rates) -> dict:
    return {
        "x": RNG.normal(0, 1, (n, 3, 8, 8)).astype(np.float32),
        "sr": np.array([rates[i % len(rates)] for i in range(n)], np.int64),
    }


def _sqnr(a, b) -> float:
    return float(10 * np.log10((a**2).sum() / max(((a - b) ** 2).sum(), 1e-30)))


def _ops(graph: onnx.GraphProto) -> list[str]:
    return [n.op_type for n in graph.node]


def _branches(model: onnx.ModelProto) -> dict[str, onnx.GraphProto]:
    node = next(n for n in model.graph.node if n.op_type == "If")
    return {a.name: a.g for a in node.attribute}


@pytest.mark.parametrize("scheme", ["w8a8", "w4a8"])
def test_the_branch_the_samples_take_is_quantized_and_the_other_stays_float(tmp_path, scheme):
    src = tmp_path / "m.onnx"
    onnx.save(sr_model(), src)
    before = src.read_bytes()
    out = tmp_path / "q.onnx"
    result = quantize(
        str(src),
        _calib(24, [16000]),
        str(out),
        QuantConfig(scheme=scheme, progress=False, verify_samples=8, calib_size=16),
    )
    assert src.read_bytes() == before
    q = onnx.load(str(out))
    onnx.checker.check_model(q, full_check=True)
    branches = _branches(q)
    assert "DequantizeLinear" in _ops(branches["then_branch"])
    assert _ops(branches["else_branch"]) == ["Conv", "Relu", "Conv"]  # never reached: float
    assert not branches["then_branch"].input  # reads x from the main graph, as before
    ref, got = make_session(str(src)), make_session(str(out))
    for rate, floor in ((16000, 25 if scheme == "w8a8" else 12), (8000, None)):
        feed = {"x": RNG.normal(0, 1, (2, 3, 8, 8)).astype(np.float32), "sr": np.array(rate)}
        a, b = ref.run(None, feed)[0], got.run(None, feed)[0]
        if floor is None:
            np.testing.assert_array_equal(a, b)  # the float branch computes what it did
        else:
            assert _sqnr(a, b) > floor
    entries = {e["branch"]: e for e in result.report["branches"]}
    assert (
        entries["then_branch"]["quantized"] and entries["then_branch"]["calibration_samples"] == 16
    )
    assert not entries["else_branch"]["quantized"]
    assert "no calibration sample takes it" in entries["else_branch"]["why"]
    assert any("else_branch" in w and "left in float" in w for w in result.report["warnings"])
    from faaq_onnx.cli.summary import summary_line

    assert (
        "branches: rate then_branch quantized (16 samples, 2 groups); rate else_branch float "
        "(no calibration sample takes it ('is16k' was true on all 16))"
    ) in summary_line(result.report)
    # the verification is of the whole model as written, on the held-out samples
    assert result.report["verify"]["samples"] == 8
    assert result.report["calibration"]["verification_held_out"]  # 24 given, 16 calibrate
    assert result.report["verify"]["kernels"]["quantized"] == 2
    weighted = kernel_report(str(out))["weighted_ops"]
    assert weighted["integer"] == 2


def test_both_branches_reached_are_each_quantized_with_their_own_samples(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(sr_model(), src)
    result = quantize(
        str(src),
        _calib(40, [16000, 16000, 16000, 8000]),
        None,
        QuantConfig(scheme="w8a8", progress=False, verify_samples=8, calib_size=32),
    )
    q = result.model
    onnx.checker.check_model(q, full_check=True)
    branches = _branches(q)
    for g in branches.values():
        assert _ops(g).count("DequantizeLinear") >= 3
    defined = [o for g in branches.values() for n in g.node for o in n.output] + [
        t.name for g in branches.values() for t in g.initializer
    ]
    assert len(defined) == len(set(defined))  # each branch's names are its own
    counts = {e["branch"]: e["calibration_samples"] for e in result.report["branches"]}
    assert counts == {"then_branch": 24, "else_branch": 8}
    assert result.report["groups"] == 4
    path = tmp_path / "q.onnx"
    onnx.save(q, path)
    ref, got = make_session(str(src)), make_session(str(path))
    for rate in (16000, 8000):
        feed = {"x": RNG.normal(0, 1, (2, 3, 8, 8)).astype(np.float32), "sr": np.array(rate)}
        assert _sqnr(ref.run(None, feed)[0], got.run(None, feed)[0]) > 25


def test_a_branch_reading_a_value_computed_outside_it_is_calibrated_on_that_value(tmp_path):
    """The branch reads Relu(x), computed in the main graph: its calibration is what that
    value was per sample (ORT reports it), so it meets no negative inputs it never sees."""
    src = tmp_path / "m.onnx"
    onnx.save(sr_model(pre_relu=True), src)
    result = quantize(
        str(src),
        _calib(24, [16000]),
        None,
        QuantConfig(scheme="w8a8", progress=False, verify_samples=8, calib_size=16),
    )
    then = _branches(result.model)["then_branch"]
    q = next(n for n in then.node if n.op_type == "QuantizeLinear" and n.input[0] == "xr")
    zero_point = next(nh.to_array(t) for t in then.initializer if t.name == q.input[2])
    assert zero_point.dtype == np.uint8 and int(zero_point) == 0  # a range from 0: ReLU's
    assert _sqnr_of(result) > 25


def _sqnr_of(result) -> float:
    return next(iter(result.report["verify"]["outputs"].values()))["sqnr_db"]


def test_budgets_and_plans_are_refused_in_one_line(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(sr_model(), src)
    with pytest.raises(FaaqError, match=r"inside If branches.*budget or a saved plan"):
        quantize(
            str(src), _calib(8, [16000]), None, QuantConfig(progress=False), budget="avg-bits=6"
        )


def test_no_sample_taking_a_weighted_branch_is_refused(tmp_path):
    src = tmp_path / "m.onnx"
    m = sr_model()
    # the else branch holds nothing weighted: a run where every sample takes it has nothing to do
    _branches(m)["else_branch"].CopyFrom(
        h.make_graph(
            [h.make_node("Identity", ["x"], ["out"])],
            "b",
            [],
            [h.make_tensor_value_info("out", T.FLOAT, ["B", 3, 8, 8])],
        )
    )
    onnx.save(m, src)
    out = tmp_path / "q.onnx"
    with pytest.raises(FaaqError, match="no calibration sample takes"):
        quantize(str(src), _calib(8, [8000]), str(out), QuantConfig(progress=False))
    assert not out.exists()


def test_only_ifs_holding_weighted_ops_with_none_outside_are_sites():
    m = sr_model()
    assert branch_sites(m) == [2]
    m.graph.node.insert(0, h.make_node("MatMul", ["p", "q"], ["pq"]))
    assert branch_sites(m) == []  # the main graph has its own weighted op: quantized there


def test_outer_reads_and_renaming_leave_what_the_branch_reads_alone():
    inner = h.make_graph(
        [h.make_node("Add", ["v", "z"], ["u"])],
        "inner",
        [],
        [h.make_tensor_value_info("u", T.FLOAT, None)],
    )
    g = h.make_graph(
        [
            h.make_node("Mul", ["a", "w"], ["v"], name="m"),
            h.make_node("If", ["c"], ["o"], then_branch=inner, else_branch=inner, name="i"),
        ],
        "b",
        [],
        [h.make_tensor_value_info("o", T.FLOAT, None)],
        [nh.from_array(np.ones(1, np.float32), "w")],
    )
    assert outer_reads(g) == ["a", "c", "z"]
    rename_scope(g, "p/", {"a", "c", "z"})
    assert list(g.node[0].input) == ["a", "p/w"] and list(g.node[0].output) == ["p/v"]
    assert g.initializer[0].name == "p/w" and g.output[0].name == "p/o"
    then = next(a.g for a in g.node[1].attribute if a.name == "then_branch")
    assert list(then.node[0].input) == ["p/v", "z"] and then.output[0].name == "p/u"
    assert g.node[0].name == "p/m"


def test_the_model_imports_every_domain_a_quantized_branch_uses():
    """A branch written with com.microsoft ops (MatMulNBits) adds that domain to the model; the
    default domain takes the higher version of the two."""
    from faaq_onnx.stages.branches import _merge_opsets

    model = h.make_model(h.make_graph([], "g", [], []), opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    branch = h.make_model(
        h.make_graph([], "b", [], []),
        opset_imports=[h.make_opsetid("", 21), h.make_opsetid("com.microsoft", 1)],
    )
    branch.ir_version = 10
    _merge_opsets(model, branch)
    assert {o.domain: o.version for o in model.opset_import} == {"": 21, "com.microsoft": 1}
    assert model.ir_version == 10
    _merge_opsets(model, branch)  # already imported: nothing doubles, nothing lowers
    assert sorted((o.domain, o.version) for o in model.opset_import) == [
        ("", 21),
        ("com.microsoft", 1),
    ]


def test_a_branch_no_held_out_sample_takes_is_still_quantized(tmp_path):
    """Calibration samples take both rates, the held-out ones only 16 kHz: the 8 kHz branch is
    quantized on its calibration samples alone; the branches read Relu(x), a probed value (an
    empty held-out part of it failed to stack)."""
    src = tmp_path / "m.onnx"
    onnx.save(sr_model(pre_relu=True), src)
    calib = _calib(24, [16000, 8000])
    calib["sr"][16:] = 16000  # the 8 held-out samples
    result = quantize(
        str(src), calib, None, QuantConfig(scheme="w8a8", progress=False, calib_size=16)
    )
    counts = {
        e["branch"]: (e["quantized"], e["calibration_samples"], e["verification_samples"])
        for e in result.report["branches"]
    }
    assert counts == {"then_branch": (True, 8, 8), "else_branch": (True, 8, 0)}


def test_verification_on_calibration_samples_is_reported_as_not_held_out(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(sr_model(), src)
    result = quantize(str(src), _calib(12, [16000]), None, QuantConfig(progress=False))
    assert not result.report["calibration"]["verification_held_out"]  # nothing was left over
