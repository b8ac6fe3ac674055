"""FoldPadIntoConvPass: a constant zero Pad on spatial axes goes into the Convs reading it
(their pads add up), the function unchanged; every other Pad stays."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from faaq_onnx.passes.fold_pad import FoldPadIntoConvPass
from tests.conftest import apply_pass_keeping_outputs, graph_model


def _model(nodes, x_shape, inits, outputs=("y",)):
    return graph_model(nodes, x_shape, inits, outputs, opset=18, infer=False)


def _run(proto, x_shape):
    """(modified, op types after, {conv name: pads after}); outputs must not change."""
    feeds = {"x": np.random.default_rng(0).standard_normal(x_shape).astype(np.float32)}
    modified, after = apply_pass_keeping_outputs(FoldPadIntoConvPass(), proto, feeds)
    pads = {
        n.name: list(next((a.ints for a in n.attribute if a.name == "pads"), []))
        for n in after.graph.node
        if n.op_type == "Conv"
    }
    return modified, [n.op_type for n in after.graph.node], pads


def _w(*shape):
    return np.random.default_rng(1).standard_normal(shape).astype(np.float32)


def _pad(pads, *extra, **attrs):
    inits = {"pads": np.array(pads, np.int64)}
    names = ["x", "pads"]
    for name, value in extra:  # optional inputs; None: left out
        names.append(name if value is not None else "")
        if value is not None:
            inits[name] = value
    return helper.make_node("Pad", names, ["p"], name="pad", **attrs), inits


def _conv(name="conv", x="p", y="y", **attrs):
    return helper.make_node("Conv", [x, "w"], [y], name=name, **attrs)


def test_pads_add_to_the_convs_own_and_fold_into_every_reader():
    """2-d: Pad begins (1, 2), ends (3, 1) plus the Conv's (1, 1, 1, 1): (2, 3, 4, 2); a second
    Conv reading the Pad without pads of its own gets the Pad's."""
    pad, inits = _pad([0, 0, 1, 2, 0, 0, 3, 1])
    nodes = [pad, _conv(pads=[1, 1, 1, 1]), _conv("c2", y="z", strides=[2, 2])]
    proto = _model(nodes, [1, 2, 6, 7], inits | {"w": _w(3, 2, 3, 3)}, ("y", "z"))
    modified, ops, pads = _run(proto, [1, 2, 6, 7])
    assert modified and ops == ["Conv", "Conv"]
    assert pads == {"conv": [2, 3, 4, 2], "c2": [1, 2, 3, 1]}


@pytest.mark.parametrize(
    "pads, x_shape, w_shape, expected",
    [
        ([0, 0, 2, 0, 0, 1], [1, 2, 9], (3, 2, 3), [2, 1]),
        ([0, 0, 1, 0, 2, 0, 0, 0, 1, 3], [1, 2, 4, 5, 6], (3, 2, 2, 2, 2), [1, 0, 2, 0, 1, 3]),
    ],
)
def test_1d_and_3d_pads_fold(pads, x_shape, w_shape, expected):
    pad, inits = _pad(pads)
    proto = _model([pad, _conv()], x_shape, inits | {"w": _w(*w_shape)})
    modified, ops, got = _run(proto, x_shape)
    assert modified and ops == ["Conv"] and got == {"conv": expected}


def test_an_explicit_zero_value_and_constant_mode_fold():
    pad, inits = _pad([0, 0, 1, 1, 0, 0, 1, 1], ("v", np.array(0.0, np.float32)), mode="constant")
    proto = _model([pad, _conv(auto_pad="NOTSET")], [1, 2, 5, 5], inits | {"w": _w(3, 2, 3, 3)})
    modified, ops, got = _run(proto, [1, 2, 5, 5])
    assert modified and ops == ["Conv"] and got == {"conv": [1, 1, 1, 1]}


KEEP = {
    "non-zero value": lambda: _pad([0, 0, 1, 1, 0, 0, 1, 1], ("v", np.array(0.5, np.float32))),
    "reflect mode": lambda: _pad([0, 0, 1, 1, 0, 0, 1, 1], mode="reflect"),
    "edge mode": lambda: _pad([0, 0, 1, 1, 0, 0, 1, 1], mode="edge"),
    "axes input": lambda: _pad([1, 1, 1, 1], ("v", None), ("axes", np.array([2, 3], np.int64))),
    "negative pads": lambda: _pad([0, 0, -1, 0, 0, 0, 1, 1]),
    "channel pads": lambda: _pad([0, 1, 1, 1, 0, 0, 1, 1]),
    "batch pads": lambda: _pad([0, 0, 1, 1, 1, 0, 1, 1]),
}


@pytest.mark.parametrize("case", KEEP)
def test_a_pad_conv_cannot_express_stays(case):
    pad, inits = KEEP[case]()
    c = 3 if case == "channel pads" else 2  # what the Conv reads
    proto = _model([pad, _conv()], [1, 2, 5, 5], inits | {"w": _w(3, c, 3, 3)})
    modified, ops, _ = _run(proto, [1, 2, 5, 5])
    assert not modified and ops == ["Pad", "Conv"]


def test_a_pad_read_by_other_ops_an_output_or_an_auto_pad_conv_stays():
    pad, inits = _pad([0, 0, 1, 1, 0, 0, 1, 1])
    inits["w"] = _w(3, 2, 3, 3)
    shape = [1, 2, 5, 5]
    cases = [
        ([pad, _conv(), helper.make_node("Relu", ["p"], ["r"])], ("y", "r")),
        ([pad, _conv()], ("y", "p")),
        ([pad, _conv(auto_pad="VALID")], ("y",)),
        ([pad, helper.make_node("MaxPool", ["p"], ["y"], kernel_shape=[2, 2])], ("y",)),
    ]
    for nodes, outputs in cases:
        modified, ops, _ = _run(_model(nodes, shape, inits, outputs), shape)
        assert not modified and ops[0] == "Pad", nodes[1:]


def test_computed_pads_stay():
    nodes = [
        helper.make_node("Identity", ["pads0"], ["pads"]),
        helper.make_node("Pad", ["x", "pads"], ["p"]),
        _conv(),
    ]
    inits = {"pads0": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "w": _w(3, 2, 3, 3)}
    modified, ops, _ = _run(_model(nodes, [1, 2, 5, 5], inits), [1, 2, 5, 5])
    assert not modified and "Pad" in ops


@pytest.mark.parametrize(
    "pads,folds",
    [
        (
            [0, 0, 0, 0, 0, 1, 1, 0],
            True,
        ),  # NHWC: H and W padded at the end (Keras 'same', stride 2)
        ([0, 1, 1, 0, 0, 1, 1, 0], True),
        ([0, 0, 0, 1, 0, 0, 0, 1], False),  # the channel axis (NHWC's last): no Conv pads it
    ],
)
def test_an_nhwc_pad_folds_through_the_layout_transpose(pads, folds):
    """tf2onnx: Pad (NHWC) -> Transpose to NCHW -> strided Conv; the pads go through the
    permutation into the Conv, the Transpose reads the unpadded tensor."""
    x_shape = [1, 7, 7, 3]
    pad, inits = _pad(pads)
    inits["w"] = _w(4, 3 + pads[3] + pads[7], 3, 3)
    nodes = [
        pad,
        helper.make_node("Transpose", ["p"], ["t"], name="nchw", perm=[0, 3, 1, 2]),
        _conv(x="t", strides=[2, 2]),
    ]
    modified, ops, conv_pads = _run(_model(nodes, x_shape, inits), x_shape)
    assert modified == folds and ("Pad" in ops) != folds
    if folds:
        begin, end = pads[:4], pads[4:]
        assert conv_pads["conv"] == [begin[1], begin[2], end[1], end[2]]
