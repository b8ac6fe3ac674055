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
    xs, xf, target, samples = P.patch_data(layer, x, x, y, seed=0)
    assert xf is not None and np.array_equal(xf[P.INPUT], xs[P.INPUT])
    assert xs[P.INPUT].shape == (len(target), group, c // group * k * k)
    out = P.patch_runner(layer)({P.INPUT: torch.from_numpy(xs[P.INPUT]), "w": torch.from_numpy(w)})
    np.testing.assert_allclose(out.numpy(), target, atol=1e-4)
    assert len(target) == y.shape[0] * y.shape[2] * y.shape[3]  # a small layer: every position
    assert np.array_equal(samples, np.repeat(np.arange(3), y.shape[2] * y.shape[3]))


def test_patches_and_targets_of_tensors_kept_in_files_are_the_same(monkeypatch):
    """A feature map kept in a file (runtime.spill) is read one sample at a time: the same
    patches and targets, at sampled positions too."""
    from faaq_onnx.runtime.spill import SpilledArray

    m, unit, _ = _conv_model(4, 6, 1, 3, [2, 1], [1, 2], [0, 1, 2, 0], "Relu")
    x = np.random.default_rng(2).standard_normal((39, 4, 9, 8)).astype(np.float32)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    y = np.concatenate([sess.run(None, {"x": x[i : i + 3]})[0] for i in range(0, 39, 3)])

    def spilled(a):
        s = SpilledArray(len(a), a.shape[1:], a.dtype)
        s.write(0, a)
        return s

    layer = P.conv_layer(m, unit)
    assert layer is not None
    monkeypatch.setattr(P, "PATCH_BUDGET", 1)  # the fewest positions, drawn from every image
    want = P.patch_data(layer, x, None, y, seed=4)
    got = P.patch_data(layer, spilled(x), None, spilled(y), seed=4)
    assert len(want[2]) == 256 < y.shape[0] * y.shape[2] * y.shape[3]
    np.testing.assert_array_equal(got[0][P.INPUT], want[0][P.INPUT])
    np.testing.assert_array_equal(got[2], want[2])
    np.testing.assert_array_equal(got[3], want[3])
    assert set(want[3]) == set(range(39))  # positions drawn from every image


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


def test_documented_budgets_in_numbers():
    """128 MB of float32 patches per unit (2**25 floats), at least 256 positions; a batch is
    32 positions per image within 2**22 patch floats, at least 64."""
    assert len(P.sample_positions(10**9, per_position=1024, seed=0)) == 2**25 // 1024
    assert len(P.sample_positions(10**6, per_position=2**30, seed=0)) == 256
    assert len(P.sample_positions(2**26, per_position=0, seed=0)) == 2**25  # no per-position size
    assert P.batch_positions(27, images=4) == 4 * 32
    assert P.batch_positions(1152 * 25, images=32) == 145  # 4,194,304 // 28,800
    assert P.batch_positions(0, images=1) == 32


def _bare_conv(n_inputs=2, attrs=None, w_shape=(6, 4, 3, 3), clip_inputs=None, clip_attrs=None):
    """x -> Conv(w[, b]) [-> Clip] with the attributes given (none by default)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(w_shape).astype(np.float32), "w")]
    ins = ["x", "w"]
    if n_inputs == 3:
        ins.append("b")
        inits.append(numpy_helper.from_array(np.ones(w_shape[0], np.float32), "b"))
    nodes = [helper.make_node("Conv", ins, ["h"], name="conv", **(attrs or {}))]
    names = ["conv"]
    if clip_inputs is not None or clip_attrs is not None:
        for name, v in (clip_inputs or {}).items():
            if v is not None:
                inits.append(numpy_helper.from_array(np.array(v, np.float32), name))
        nodes.append(
            helper.make_node(
                "Clip", ["h", *(clip_inputs or {})], ["y"], "act", **(clip_attrs or {})
            )
        )
        names.append("act")
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F32, None)],
        [helper.make_tensor_value_info(nodes[-1].output[0], F32, None)],
        inits,
    )
    return helper.make_model(g), Unit("layer:conv", names, ["x"], nodes[-1].output[0], ["w"])


def test_a_conv_without_attributes_or_bias_takes_the_onnx_defaults():
    m, unit = _bare_conv()
    layer = P.conv_layer(m, unit)
    assert layer is not None and layer.bias is None and layer.clamp is None
    assert (layer.kernel, layer.strides, layer.dilations) == ((3, 3), (1, 1), (1, 1))
    assert (layer.pads, layer.groups) == ((0, 0, 0, 0), 1)
    m, unit = _bare_conv(3)
    np.testing.assert_array_equal(P.conv_layer(m, unit).bias, np.ones(6, np.float32))


def test_what_the_patch_loss_leaves_to_whole_maps():
    """auto_pad, a 1-D conv, a weight the unit does not own, a bias or clip bound computed at
    run time: no patch loss (None)."""
    m, unit = _bare_conv(attrs={"auto_pad": "SAME_UPPER"})
    assert P.conv_layer(m, unit) is None
    m, unit = _bare_conv(w_shape=(6, 4, 3))
    assert P.conv_layer(m, unit) is None
    m, unit = _bare_conv()
    assert P.conv_layer(m, Unit("layer:conv", ["conv"], ["x"], "h", ["other"])) is None
    m, unit = _bare_conv(3)
    del m.graph.initializer[1]  # the bias comes from elsewhere
    assert P.conv_layer(m, unit) is None
    m, unit = _bare_conv(clip_inputs={"lo": None, "hi": 6.0})
    m.graph.node[1].input[1] = "computed"
    assert P.conv_layer(m, unit) is None


def test_clip_bounds_from_inputs_or_attributes():
    m, unit = _bare_conv(clip_inputs={"": None, "hi": 6.0})  # no min: only a max
    assert P.conv_layer(m, unit).clamp == (-np.inf, 6.0)
    m, unit = _bare_conv(clip_inputs={"lo": -1.0})  # a min only
    assert P.conv_layer(m, unit).clamp == (-1.0, np.inf)
    m, unit = _bare_conv(clip_attrs={"min": 0.0, "max": 6.0})  # before opset 11
    assert P.conv_layer(m, unit).clamp == (0.0, 6.0)


def test_a_unit_of_three_nodes_is_no_lone_conv():
    m, _, _ = _conv_model(4, 6, 1, 3, [1, 1], [1, 1], [1, 1, 1, 1], "Relu")
    m.graph.node[1].output[0] = "r"
    m.graph.node.append(helper.make_node("Relu", ["r"], ["y"], name="act2"))
    three = Unit("layer:conv", ["conv", "act", "act2"], ["x"], "y", ["w"])
    assert P.conv_layer(m, three) is None


def test_a_batch_of_one_float_patches_fills_the_iteration_budget():
    assert P.batch_positions(1, images=200_000) == 2**22  # 6.4 M asked, 2**22 floats allowed
    assert P.batch_positions(0, images=200_000) == 2**22  # a size of 0 counts as 1


def test_positions_are_distinct_even_when_most_are_taken():
    got = P.sample_positions(300, per_position=P.PATCH_BUDGET, seed=0)  # the 256 floor of 300
    assert len(got) == 256 and len(np.unique(got)) == 256 and got.max() < 300


def test_a_non_square_kernel_keeps_its_height_and_width():
    m, unit = _bare_conv(w_shape=(6, 4, 3, 1))
    assert P.conv_layer(m, unit).kernel == (3, 1)


def test_bf16_products_only_for_large_ungrouped_layers_where_they_are_fast(monkeypatch):
    monkeypatch.setattr(P, "_bf16_fast", True)
    big = P.BF16_MIN_MACS
    assert P.bf16_products(1024, big // (1024 * 512), 512, groups=1)
    assert not P.bf16_products(1024, big // (1024 * 512) - 1, 512, groups=1)  # under the floor
    assert not P.bf16_products(1024, 4608, 512, groups=2)  # grouped: products stay float32
    monkeypatch.setattr(P, "_bf16_fast", False)  # a CPU without native bfloat16
    assert not P.bf16_products(1024, 4608, 512, groups=1)


def test_the_speed_check_runs_once(monkeypatch):
    calls = []
    monkeypatch.setattr(P, "_bf16_fast", None)
    monkeypatch.setattr(P, "_bf16_speedup", lambda: calls.append(1) or 10.0)
    assert P.bf16_products(1024, 4608, 512, 1) and P.bf16_products(1024, 4608, 512, 1)
    assert calls == [1]
    monkeypatch.setattr(P, "_bf16_fast", None)
    monkeypatch.setattr(P, "_bf16_speedup", lambda: P.BF16_GAIN - 0.5)
    assert not P.bf16_products(1024, 4608, 512, 1)


def test_bf16_runner_is_the_conv_within_bf16_precision_and_passes_float32_gradients():
    m, unit, w = _conv_model(16, 8, 1, 3, [1, 1], [1, 1], [1, 1, 1, 1], "Relu")
    layer = P.conv_layer(m, unit)
    x = np.random.default_rng(1).standard_normal((3, 16, 9, 8)).astype(np.float32)
    y = np.zeros((3, 8, 9, 8), np.float32)
    xs, _, _, _ = P.patch_data(layer, x, None, y, seed=0)
    feeds = {P.INPUT: torch.from_numpy(xs[P.INPUT])}
    wt = torch.from_numpy(w).requires_grad_(True)
    ref = P.patch_runner(layer)({**feeds, "w": wt})
    out = P.patch_runner(layer, bf16=True)({**feeds, "w": wt})
    assert out.dtype == torch.float32
    scale = float(ref.abs().max())
    assert float((out - ref).abs().max()) < 0.02 * scale  # bfloat16: 8 bits of mantissa
    assert float((out - ref).abs().max()) > 0  # it is another product, not the float32 one
    out.sum().backward()
    assert wt.grad is not None and wt.grad.dtype == torch.float32
