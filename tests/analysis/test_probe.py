"""analysis/probe.py and runtime/probe_session.py on a hand-made graph: configurations fed as data,
off means bit for bit the float model, on means the fake-quant formula computed here in numpy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.analysis import probe as probe_mod
from faaq_onnx.analysis.probe import (
    build_probe,
    disabled_params,
    enabled_params,
    param_name,
    probe_feeds,
    root_tensors,
)
from faaq_onnx.groups import ActivationQuantizer, QuantizerGraph, WeightQuantizer
from faaq_onnx.runtime.probe_session import ProbeSession
from faaq_onnx.runtime.session import make_session

W = np.array([[0.5, -1.0, 0.25], [1.5, 0.75, -0.5]], np.float32)  # (2, 3)


def model() -> onnx.ModelProto:
    """x (N, 2) -> MatMul(w) -> h -> Relu -> r -> Reshape -> y (an output) ; r also -> Neg -> z."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["y"], name="reshape"),
        helper.make_node("Neg", ["r"], ["z"], name="neg"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 3]),
        ],
        [
            numpy_helper.from_array(W, "w"),
            numpy_helper.from_array(np.array([-1, 3], np.int64), "shape"),
        ],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def qgraph(tensors=("h", "r", "y")) -> QuantizerGraph:
    return QuantizerGraph(
        weights={"w": WeightQuantizer("w", ["mm"], "MatMul", (2, 3), 1, 0, 6)},
        activations={"act:h": ActivationQuantizer("act:h", list(tensors), list(tensors))},
        groups={},
    )


def fq(x, s, zp, qmin, qmax):
    return ((np.clip(np.round(x / s) + zp, qmin, qmax) - zp) * s).astype(np.float32)


def test_parameters_and_feeds():
    assert param_name("act:conv1") == "fq:conv1__fq_params"
    off = disabled_params()
    assert off.dtype == np.float32
    np.testing.assert_array_equal(off, np.array([2.0**-100, 0.0, -3.0e38, 3.0e38], np.float32))
    np.testing.assert_array_equal(enabled_params(0.5, 3, -8, 7), [0.5, 3, -8, 7])
    assert enabled_params(0.5, 3, -8, 7).dtype == np.float32
    on = enabled_params(0.1, 0, 0, 255)
    feeds = probe_feeds(["act:a", "act:b"], {"w": W}, {"act:b": on})
    assert set(feeds) == {"fq:a__fq_params", "fq:b__fq_params", "w"}
    np.testing.assert_array_equal(feeds["fq:a__fq_params"], disabled_params())
    np.testing.assert_array_equal(feeds["fq:b__fq_params"], on)
    assert feeds["w"] is W
    assert set(probe_feeds(["act:a"])) == {"fq:a__fq_params"}


def test_roots_skip_tensors_a_pass_through_op_makes_from_the_same_set():
    assert root_tensors(model(), ["h", "r", "y"]) == ["h"]
    assert root_tensors(model(), ["r", "y"]) == ["r"]
    assert root_tensors(model(), ["y", "z"]) == ["y", "z"]  # Neg is not pass-through
    assert root_tensors(model(), ["x", "h"]) == ["x", "h"]  # MatMul is not pass-through


def test_probe_graph_inputs_and_renamed_outputs():
    p = build_probe(model(), qgraph(tensors=("r", "y", "z")))
    names = [i.name for i in p.graph.input]
    assert names == ["x", "w", "fq:h__fq_params"]
    w_in = p.graph.input[1].type.tensor_type
    assert w_in.elem_type == TensorProto.FLOAT and [d.dim_value for d in w_in.shape.dim] == [2, 3]
    # z is a root of the set (Neg is not pass-through) and a graph output: read through an Identity
    assert [o.name for o in p.graph.output] == ["y", "z__probe_out"]
    assert model().graph.output[1].name == "z"  # the model given is not changed
    onnx.checker.check_model(p)


def run_probe(p, x, feeds):
    s = make_session(p, opt_level="extended")
    names = {i.name for i in s.get_inputs() + s.get_overridable_initializers()}
    return s.run(None, {"x": x, **{k: v for k, v in feeds.items() if k in names}})


def test_off_is_the_float_model_bit_for_bit_and_on_is_fake_quant():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 2)).astype(np.float32) * 3
    p = build_probe(model(), qgraph())
    y_off, z_off = run_probe(p, x, probe_feeds(["act:h"]))
    h = x @ W
    np.testing.assert_array_equal(y_off, np.maximum(h, 0))
    np.testing.assert_array_equal(z_off, -np.maximum(h, 0))
    on = enabled_params(0.25, 2, 0, 15)
    y_on, z_on = run_probe(p, x, probe_feeds(["act:h"], act_params={"act:h": on}))
    hq = fq(h, 0.25, 2, 0, 15)
    np.testing.assert_allclose(y_on, np.maximum(hq, 0), rtol=1e-6)
    np.testing.assert_allclose(z_on, -np.maximum(hq, 0), rtol=1e-6)
    # a fed weight replaces the stored one
    w2 = W * 2
    (y_w, _) = run_probe(p, x, probe_feeds(["act:h"], weights={"w": w2}))
    np.testing.assert_allclose(y_w, np.maximum(x @ w2, 0), rtol=1e-6)


def test_a_cycle_is_refused():
    g = model().graph
    g.node[0].input[0] = "z"  # MatMul now reads what comes after it
    with pytest.raises(RuntimeError, match="cycle or a missing input"):
        probe_mod._toposort(g)


def test_probe_session_runs_configurations_as_data():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 2)).astype(np.float32)
    p = build_probe(model(), qgraph())
    whole = ProbeSession(p, {"x": x}, ["act:h"], batch_size=3)
    assert whole.output_names == ["y", "z"] and whole._full is not None
    y, _z = whole.run()
    np.testing.assert_array_equal(y, np.maximum(x @ W, 0))
    on = enabled_params(0.5, 0, -8, 7)
    (yq,) = whole.run(act_params={"act:h": on}, outputs=["y"])
    np.testing.assert_allclose(yq, np.maximum(fq(x @ W, 0.5, 0, -8, 7), 0), rtol=1e-6)
    other = rng.standard_normal((2, 2)).astype(np.float32)
    (y2, _) = whole.run(inputs={"x": other})
    np.testing.assert_array_equal(y2, np.maximum(other @ W, 0))
    (m,) = whole.channel_means({"w": -W}, {}, ["y"])
    np.testing.assert_allclose(m, np.maximum(x @ -W, 0).mean(0), rtol=1e-5, atol=1e-7)
    (mq,) = whole.channel_means({}, {"act:h": on}, ["z"])
    np.testing.assert_allclose(mq, -np.maximum(fq(x @ W, 0.5, 0, -8, 7), 0).mean(0), rtol=1e-5)


def test_prefix_session_builds_one_part_per_output_set():
    x = np.random.default_rng(2).standard_normal((5, 2)).astype(np.float32)
    p = build_probe(model(), qgraph())
    part = ProbeSession(p, {"x": x}, ["act:h"], prefix=True)
    assert part._full is None
    (r,) = part.run(outputs=["r"])
    first = part._part
    assert first is not None and first[0] == ("r",)
    part.run(outputs=["r"])
    assert part._part is first  # same outputs: the same session
    (h,) = part.run(outputs=["h"])
    assert part._part[0] == ("h",) and part._full is None
    np.testing.assert_array_equal(r, np.maximum(h, 0))
    y, _z = part.run()  # no outputs named: the whole probe
    assert part._full is not None
    np.testing.assert_array_equal(y, r)
    assert part.feed_values()["fq:h__fq_params"].tolist() == disabled_params().tolist()


def test_probe_accuracy_is_top1_of_each_plan_memoized():
    from types import SimpleNamespace

    from faaq_onnx.analysis.accuracy import probe_accuracy
    from faaq_onnx.config import Candidate

    rng = np.random.default_rng(3)
    x = rng.standard_normal((20, 2)).astype(np.float64)  # cast to float32 for the probe
    float_pred = np.maximum(x.astype(np.float32) @ W, 0).argmax(1)
    y = float_pred.copy()
    y[:5] = (y[:5] + 1) % 3  # 15 of 20 right for the float model
    asked = []

    class Prober:
        def feeds(self, choices):
            asked.append(dict(choices))
            return {"w": -W}, {}  # a "plan" that negates the weight

    comp = SimpleNamespace(
        inputs={"x": x[:2]},
        float_proto=model(),
        qgraph=qgraph(),
        config=SimpleNamespace(batch_size=4),
        prober=Prober(),
    )
    acc = probe_accuracy(comp, (x, y))
    assert acc(None) == 0.75 and asked == []
    plan = {"g": Candidate(4, 8)}
    neg_pred = np.maximum(x.astype(np.float32) @ -W, 0).argmax(1)
    assert acc(plan) == float(np.mean(neg_pred == y))
    assert acc(dict(plan)) == acc(plan) and len(asked) == 1  # one run per distinct plan
    acc({"g": Candidate(8, 8)})
    assert len(asked) == 2
