"""Cross-layer equalization keeps the function and equalizes per-channel ranges."""

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.graph import to_proto
from faaq_onnx.passes.cle import CrossLayerEqualizationPass
from tests.conftest import run_model


def _chain(depthwise: bool, act: str = "Relu"):
    rng = np.random.default_rng(0)
    c = 6
    w1 = rng.normal(0, 1, (c, 3, 3, 3)) * rng.uniform(0.05, 5, (c, 1, 1, 1))  # unbalanced channels
    w2 = rng.normal(0, 1, (c, 1, 3, 3)) if depthwise else rng.normal(0, 1, (4, c, 1, 1))
    inits = [
        numpy_helper.from_array(w1.astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, c).astype(np.float32), "b1"),
        numpy_helper.from_array(w2.astype(np.float32), "w2"),
    ]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1] * 4, name="c1")]
    if act == "Relu":
        nodes.append(helper.make_node("Relu", ["h"], ["a"], name="act"))
    else:
        inits += [
            numpy_helper.from_array(np.array(0, np.float32), "lo"),
            numpy_helper.from_array(np.array(6, np.float32), "hi"),
        ]
        nodes.append(helper.make_node("Clip", ["h", "lo", "hi"], ["a"], name="act"))
    nodes.append(
        helper.make_node(
            "Conv",
            ["a", "w2"],
            ["y"],
            pads=[1] * 4 if depthwise else [0] * 4,
            group=c if depthwise else 1,
            name="c2",
        )
    )
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return m


@pytest.mark.parametrize("depthwise", [False, True])
def test_function_kept_and_ranges_equalized(depthwise):
    proto = _chain(depthwise)
    model = ir.from_proto(proto)
    p = CrossLayerEqualizationPass()
    assert p(model).modified and p.pairs == 1
    out = to_proto(model)
    x = {"x": np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    np.testing.assert_allclose(run_model(out, x)[0], run_model(proto, x)[0], rtol=1e-4, atol=1e-4)
    inits = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    r1 = np.abs(inits["w1"]).reshape(6, -1).max(1)
    w2 = inits["w2"]
    r2 = np.abs(w2).reshape(6, -1).max(1) if depthwise else np.abs(w2).max(axis=(0, 2, 3))
    np.testing.assert_allclose(r1, r2, rtol=1e-4)
    before = np.abs(numpy_helper.to_array(proto.graph.initializer[0])).reshape(6, -1).max(1)
    assert r1.max() / r1.min() < before.max() / before.min()


def test_relu6_pairs_are_kept_unless_replacement_is_asked():
    proto = _chain(False, act="Clip")
    model = ir.from_proto(proto)
    assert CrossLayerEqualizationPass()(model).modified is False
    replace = CrossLayerEqualizationPass(relu6="replace")
    assert replace(model).modified and replace.replaced_clips == ["act"] and replace.pairs == 1
    assert "Relu" in [n.op_type for n in model.graph]


def _pair_model(nodes, inits, outputs=("y",)):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return m


def _w(*shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, shape) * rng.uniform(0.05, 5, (shape[0],) + (1,) * (len(shape) - 1))


def test_one_sweep_scales_by_the_square_root_of_the_range_ratio():
    """Without an activation, after the pass: channel c of conv1 divided by s_c and its bias too,
    input channel c of conv2 multiplied by s_c, s_c = sqrt(r1_c / r2_c) -- repeated SWEEPS
    times, which leaves equal ranges after the first. A channel whose range is 0 keeps s = 1."""
    w1, w2, b1 = _w(4, 3, 1, 1), _w(5, 4, 1, 1, seed=1), np.arange(4.0) + 1
    w1[2] = 0.0  # a dead channel
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="c1"),
        helper.make_node("Conv", ["h", "w2"], ["y"], name="c2"),
    ]
    proto = _pair_model(nodes, {"w1": w1, "b1": b1, "w2": w2})
    model = ir.from_proto(proto)
    p = CrossLayerEqualizationPass()
    assert p(model).modified and p.pairs == 1
    out = to_proto(model)
    x = {"x": np.random.default_rng(2).standard_normal((1, 3, 6, 6)).astype(np.float32)}
    np.testing.assert_allclose(run_model(out, x)[0], run_model(proto, x)[0], rtol=1e-4, atol=1e-4)
    r1, r2 = np.abs(w1).reshape(4, -1).max(1), np.abs(w2).max(axis=(0, 2, 3))
    s = np.where(r1 > 0, np.sqrt(r1 / r2), 1.0)
    got = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    np.testing.assert_allclose(got["w1"], w1 / s[:, None, None, None], rtol=1e-5)
    np.testing.assert_allclose(got["b1"], b1 / s, rtol=1e-5)
    np.testing.assert_allclose(got["w2"], w2 * s[None, :, None, None], rtol=1e-5)


def test_a_shared_bias_is_not_scaled():
    """conv1's bias read by another node too keeps its values (the function is kept where it can
    be: the pair is still equalized through its weights)."""
    w1, w2, b1 = _w(4, 3, 1, 1), _w(5, 4, 1, 1, seed=1), np.arange(4.0) + 1
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="c1"),
        helper.make_node("Conv", ["h", "w2"], ["y"], name="c2"),
        helper.make_node("Identity", ["b1"], ["z"]),
    ]
    model = ir.from_proto(_pair_model(nodes, {"w1": w1, "b1": b1, "w2": w2}, ("y", "z")))
    CrossLayerEqualizationPass()(model)
    got = {t.name: numpy_helper.to_array(t) for t in to_proto(model).graph.initializer}
    np.testing.assert_array_equal(got["b1"], b1.astype(np.float32))
    assert not np.allclose(got["w1"], w1)


CASES = {
    "conv output read twice": (["h"], ("y", "z")),
    "conv output is a graph output": ([], ("y", "h")),
    "relu output read twice": (["a"], ("y", "z")),
    "second conv reads it as its weight": ([], ("y",)),
    "grouped conv2 that is not depthwise": ([], ("y",)),
    "Add after the conv": ([], ("y",)),
    "clip not from zero": ([], ("y",)),
    "shared weight": ([], ("y", "z")),
    "computed weight": ([], ("y",)),
}


@pytest.mark.parametrize("case", CASES)
def test_pairs_cle_must_not_touch(case):
    """No pair where scaling would change what another reader sees, or conv2 cannot take s."""
    extra, outputs = CASES[case]
    inits = {"w1": _w(4, 3, 1, 1), "w2": _w(4, 4, 1, 1, seed=1), "w2g": _w(4, 2, 1, 1, seed=1)}
    inits |= {"lo": np.array(0.5), "hi": np.array(6.0), "w0": _w(4, 3, 1, 1)}
    act = "Relu"
    c2 = helper.make_node("Conv", ["a", "w2"], ["y"], name="c2")
    first = helper.make_node("Conv", ["x", "w1"], ["h"], name="c1")
    nodes = []
    if case == "second conv reads it as its weight":
        c2 = helper.make_node("Conv", ["x4", "a"], ["y"], name="c2")
        nodes.append(helper.make_node("Conv", ["x", "w0"], ["x4"], name="c0"))
        first = helper.make_node("Conv", ["x4", "w2"], ["h"], name="c1")
        inits["w2"] = _w(4, 4, 1, 1)
    if case == "grouped conv2 that is not depthwise":
        c2 = helper.make_node("Conv", ["a", "w2g"], ["y"], name="c2", group=2)
    if case == "Add after the conv":
        act = "Add"
    if case == "shared weight":
        nodes.append(helper.make_node("Conv", ["x", "w1"], ["z"], name="c3"))
    if case == "computed weight":
        nodes.append(helper.make_node("Neg", ["w0"], ["wn"]))
        first = helper.make_node("Conv", ["x", "wn"], ["h"], name="c1")
    if case == "clip not from zero":
        act_node = helper.make_node("Clip", ["h", "lo", "hi"], ["a"], name="act")
    elif act == "Add":
        act_node = helper.make_node("Add", ["h", "h"], ["a"], name="act")
    else:
        act_node = helper.make_node("Relu", ["h"], ["a"], name="act")
    nodes += [first, act_node, c2]
    nodes += [helper.make_node("Neg", [e], ["z"]) for e in extra]
    proto = _pair_model(nodes, inits, outputs)
    model = ir.from_proto(proto)
    p = CrossLayerEqualizationPass(relu6="replace")
    modified = p(model).modified
    assert list(to_proto(model).graph.initializer) == list(proto.graph.initializer)
    assert p.replaced_clips == []
    if case != "grouped conv2 that is not depthwise":  # found as a pair, then left as it is
        assert not modified and p.pairs == 0


def test_relu6_setting_is_checked():
    with pytest.raises(ValueError):
        CrossLayerEqualizationPass(relu6="maybe")


def test_1d_convs_and_a_clip_with_only_a_floor_take_part():
    """Conv1d pairs are equalized too, and Clip(x, 0) with no upper bound is a ReLU to replace."""
    w1, w2 = _w(4, 3, 3), _w(5, 4, 1, seed=1)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], name="c1", pads=[1, 1]),
        helper.make_node("Clip", ["h", "lo"], ["a"], name="floor"),
        helper.make_node("Conv", ["a", "w2"], ["y"], name="c2"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(w1.astype(np.float32), "w1"),
            numpy_helper.from_array(w2.astype(np.float32), "w2"),
            numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        ],
    )
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 10
    model = ir.from_proto(proto)
    p = CrossLayerEqualizationPass(relu6="replace")
    assert p(model).modified and p.pairs == 1 and p.replaced_clips == ["floor"]
    out = to_proto(model)
    x = {"x": np.random.default_rng(3).standard_normal((1, 3, 8)).astype(np.float32)}
    np.testing.assert_allclose(run_model(out, x)[0], run_model(proto, x)[0], rtol=1e-4, atol=1e-4)
    got = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    r1, r2 = np.abs(got["w1"]).reshape(4, -1).max(1), np.abs(got["w2"]).max(axis=(0, 2))
    np.testing.assert_allclose(r1, r2, rtol=1e-4)


def test_a_channel_the_next_conv_ignores_keeps_scale_one():
    """conv2 reads input channel 1 with all-zero weights (r2 = 0): that channel keeps s = 1
    (no division by zero), the others equalize, and the function is kept."""
    w1, w2, b1 = _w(4, 3, 1, 1), _w(5, 4, 1, 1, seed=1), np.arange(4.0) + 1
    w2[:, 1] = 0.0
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="c1"),
        helper.make_node("Conv", ["h", "w2"], ["y"], name="c2"),
    ]
    proto = _pair_model(nodes, {"w1": w1, "b1": b1, "w2": w2})
    model = ir.from_proto(proto)
    assert CrossLayerEqualizationPass()(model).modified
    out = to_proto(model)
    got = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    assert all(np.isfinite(v).all() for v in got.values())
    np.testing.assert_allclose(got["w1"][1], w1[1], rtol=1e-6)
    np.testing.assert_allclose(got["b1"][1], b1[1], rtol=1e-6)
    x = {"x": np.random.default_rng(2).standard_normal((1, 3, 6, 6)).astype(np.float32)}
    np.testing.assert_allclose(run_model(out, x)[0], run_model(proto, x)[0], rtol=1e-4, atol=1e-4)


def test_small_ranges_are_equalized_too():
    """Ranges below 1 on either side are still equalized: after the pass, each channel's range
    in conv1 equals its range in conv2 (the point of CLE)."""
    w1, w2 = 0.1 * _w(4, 3, 1, 1), 0.05 * _w(5, 4, 1, 1, seed=1)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], name="c1"),
        helper.make_node("Conv", ["h", "w2"], ["y"], name="c2"),
    ]
    proto = _pair_model(nodes, {"w1": w1, "w2": w2})
    model = ir.from_proto(proto)
    assert CrossLayerEqualizationPass()(model).modified
    got = {t.name: numpy_helper.to_array(t) for t in to_proto(model).graph.initializer}
    r1 = np.abs(got["w1"]).reshape(4, -1).max(1)
    r2 = np.abs(got["w2"]).max(axis=(0, 2, 3))
    np.testing.assert_allclose(r1, r2, rtol=1e-4)
    assert not np.allclose(np.abs(w1).reshape(4, -1).max(1), np.abs(w2).max(axis=(0, 2, 3)))
