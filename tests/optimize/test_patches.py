"""AdaRound's layer loss on sampled positions: patches x weight must be the Conv's output there."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

from faaq_onnx.optimize import patches as P
from faaq_onnx.optimize.units import Unit

F32 = onnx.TensorProto.FLOAT


def _conv_model(c, cout, group, k, strides, dilations, pads, clamp):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((cout, c // group, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    nodes = [
        helper.make_node(
            "Conv",
            ["x", "w", "b"],
            ["h" if clamp else "y"],
            name="conv",
            group=group,
            strides=strides,
            dilations=dilations,
            pads=pads,
        )
    ]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    if clamp == "Relu":
        nodes.append(helper.make_node("Relu", ["h"], ["y"], name="act"))
    elif clamp == "Clip":
        inits += [
            numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
            numpy_helper.from_array(np.array(0.5, np.float32), "hi"),
        ]
        nodes.append(helper.make_node("Clip", ["h", "lo", "hi"], ["y"], name="act"))
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F32, [3, c, 9, 8])],
        [helper.make_tensor_value_info("y", F32, None)],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    unit = Unit("layer:conv", [n.name for n in nodes], ["x"], "y", ["w"])
    return m, unit, w


@pytest.mark.parametrize(
    "c,cout,group,k,strides,dilations,pads,clamp",
    [
        (4, 6, 1, 3, [1, 1], [1, 1], [1, 1, 1, 1], None),
        (4, 6, 1, 3, [2, 1], [1, 2], [0, 1, 2, 0], "Relu"),  # asymmetric pads, dilation, strides
        (6, 6, 6, 3, [2, 2], [1, 1], [1, 1, 1, 1], "Clip"),  # depthwise
        (4, 6, 2, 1, [1, 1], [1, 1], [0, 0, 0, 0], None),  # grouped 1x1
    ],
)
def test_patch_products_are_the_conv_output_at_the_sampled_positions(
    c, cout, group, k, strides, dilations, pads, clamp
):
    m, unit, w = _conv_model(c, cout, group, k, strides, dilations, pads, clamp)
    x = np.random.default_rng(1).standard_normal((3, c, 9, 8)).astype(np.float32)
    y = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    layer = P.conv_layer(m, unit)
    assert layer is not None and layer.groups == group
    xs, xf, target = P.patch_data(layer, x, x, y, seed=0)
    assert xf is not None and np.array_equal(xf[P.INPUT], xs[P.INPUT])
    assert xs[P.INPUT].shape == (len(target), group, c // group * k * k)
    out = P.patch_runner(layer)({P.INPUT: torch.from_numpy(xs[P.INPUT]), "w": torch.from_numpy(w)})
    np.testing.assert_allclose(out.numpy(), target, atol=1e-4)
    assert len(target) == y.shape[0] * y.shape[2] * y.shape[3]  # a small layer: every position


def test_positions_are_capped_by_the_patch_budget_and_seeded():
    few = P.sample_positions(10**7, per_position=P.PATCH_BUDGET // 1000, seed=3)
    assert len(few) == 1000 and len(np.unique(few)) == 1000 and few.max() < 10**7
    assert np.array_equal(few, P.sample_positions(10**7, P.PATCH_BUDGET // 1000, seed=3))
    assert not np.array_equal(few, P.sample_positions(10**7, P.PATCH_BUDGET // 1000, seed=4))
    assert len(P.sample_positions(50, per_position=10, seed=0)) == 50


def test_a_batch_is_32_positions_per_image_within_the_iteration_budget():
    assert P.batch_positions(27, images=32) == 32 * P.PER_IMAGE_BATCH  # a stem conv
    wide = 1152 * 25  # EfficientNet-Lite0's widest depthwise: memory-bound per iteration
    assert P.batch_positions(wide, images=32) == P.ITERATION_BUDGET // wide
    assert P.batch_positions(10**9, images=32) == 64


def test_only_a_lone_2d_conv_and_its_clamp_take_the_patch_loss():
    m, unit, _ = _conv_model(4, 6, 1, 3, [1, 1], [1, 1], [1, 1, 1, 1], "Relu")
    assert P.conv_layer(m, unit).clamp == (0.0, np.inf)
    block = Unit("block", ["conv", "act"], ["x", "x2"], "y", ["w"])  # two inputs: a block
    assert P.conv_layer(m, block) is None
    m.graph.node[1].op_type = "Sigmoid"  # not a clamp
    assert P.conv_layer(m, unit) is None
