"""Latency tables: kernel classes, the plan estimate, which group each emitted node's time goes
to, the cache key and the batched feeds."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from onnx import TensorProto, helper

import faaq_onnx.passes.emit_matmulnbits as emit_nbits
import faaq_onnx.runtime.node_costs as node_costs
from faaq_onnx.analysis import latency as lat
from faaq_onnx.analysis.latency import (
    LatencyTable,
    _batch_feeds,
    attribute_nodes,
    kernel_class,
    latency_key,
)
from faaq_onnx.config import Candidate, QuantConfig
from faaq_onnx.groups import QuantizerGraph, QuantizerGroup
from faaq_onnx.plan import BitPlan
from faaq_onnx.runtime.node_costs import NodeCosts


@pytest.mark.parametrize(
    "cand, config, cls",
    [
        ("float", {}, "float"),
        ("w4", {}, "weight-only-w4"),
        ("w8a32", {}, "weight-only-w8"),
        ("w4a8", {}, "int8w/a8"),
        ("w8a8", {}, "int8w/a8"),
        ("w2a16", {}, "int8w/a16"),
        ("w8a6", {}, "int8w/a6-clip"),
        ("w8a7", {}, "int8w/a7-clip"),
        ("w4a8", {"weight_granularity": "block"}, "block-w4/a8"),
        ("w4a8", {"weight_storage": "dequant"}, "dq-w4/a8"),
        ("w3a16", {"weight_storage": "dequant"}, "dq-w3/a16"),
        ("w5a8", {"weight_storage": "dequant"}, "int8w/a8"),
        ("w4", {"weight_granularity": "block"}, "weight-only-w4"),
    ],
)
def test_kernel_class(cand, config, cls):
    """Cast-stored weights of any width run the int8 kernel; A16 is float between Q/DQ; activations
    below 8 bits carry a Clip; blocked and DQ-int4 weights have their own kernels."""
    assert kernel_class(Candidate.parse(cand), QuantConfig(**config)) == cls


def _table():
    return LatencyTable(
        group_us={
            "g1": {"int8w/a8": 100.0, "int8w/a16": 300.0},
            "g2": {"int8w/a8": 50.0, "int8w/a16": 80.0},
        },
        other_us={"int8w/a8": 20.0, "int8w/a16": 30.0},
        wall_ms={"int8w/a8": 0.2, "int8w/a16": 0.5},
        classes={"w8a8": "int8w/a8", "w4a8": "int8w/a8", "w8a16": "int8w/a16"},
        meta={"ep": "cpu"},
    )


def test_plan_estimate_is_the_reference_overhead_plus_the_chosen_group_costs():
    """W8A8 wall 200 us, its groups 150 us: 50 us overhead; g1 at A16 (300) + g2 at W4A8 (50)."""
    t = _table()
    w8a8, w4a8, w8a16 = Candidate(8, 8), Candidate(4, 8), Candidate(8, 16)
    assert t.cost("g1", w8a16) == 300.0 and t.cost("g2", w4a8) == 50.0
    assert t.plan_ms({"g1": w8a16, "g2": w4a8}, w8a8) == pytest.approx((50 + 300 + 50) / 1e3)
    assert t.plan_ms({"g1": w8a8, "g2": w8a8}, w8a8) == pytest.approx(0.2)
    # against the A16 model: 500 - 380 = 120 us of overhead
    assert t.plan_ms({"g1": w8a8, "g2": w8a8}, w8a16) == pytest.approx((120 + 150) / 1e3)


def test_table_round_trips_through_a_dict():
    t = _table()
    back = LatencyTable.from_dict(t.to_dict())
    assert back == t
    d = t.to_dict()
    del d["meta"]
    assert LatencyTable.from_dict(d).meta == {}


def _qgraph():
    def g(name, ops):
        return QuantizerGroup(name, "conv", ops, [], [], 0, 0)

    return QuantizerGraph({}, {}, {"g:a": g("g:a", ["conv_a"]), "g:b": g("g:b", ["conv_b", "add"])})


def test_each_emitted_node_goes_to_the_group_it_serves():
    """Q/DQ/Clip/Cast go to the first group downstream (through pass-through ops, six steps at
    most); a pass-through op (Relu, Reshape) goes to the op it follows back to; others to none."""
    n = helper.make_node
    nodes = [
        n("QuantizeLinear", ["x", "s"], ["xq"], name="q_in"),
        n("DequantizeLinear", ["xq", "s"], ["xd"], name="dq_in"),
        n("Cast", ["w"], ["wc"], name="cast_w"),
        n("DequantizeLinear", ["wc", "s"], ["wd"], name="dq_w"),
        n("Conv", ["xd", "wd"], ["a"], name="conv_a"),
        n("Relu", ["a"], ["ar"], name="relu_a"),
        n("QuantizeLinear", ["ar", "s"], ["aq"], name="q_a"),
        n("DequantizeLinear", ["aq", "s"], ["ad"], name="dq_a"),
        n("Reshape", ["ad", "shape"], ["r1"], name="reshape"),
        n("Conv", ["r1", "wd"], ["b"], name="conv_b"),
        n("Add", ["b", "b"], ["c"], name="add"),
        n("Softmax", ["c"], ["y"], name="softmax"),
        n("QuantizeLinear", ["y", "s"], ["yq"], name="q_out"),
    ]

    def chain(steps):  # a Q, `steps` Identity nodes, then a group's op
        out = [n("QuantizeLinear", ["x", "s"], ["k0"], name="q_far")]
        out += [n("Identity", [f"k{i}"], [f"k{i + 1}"], name=f"id{i}") for i in range(steps)]
        return [*out, n("Conv", [f"k{steps}", "wd"], ["z"], name="conv_b")]

    model = helper.make_model(helper.make_graph(nodes, "g", [], []))
    got = attribute_nodes(model, _qgraph())
    assert got == {
        "q_in": "g:a",
        "dq_in": "g:a",
        "cast_w": "g:a",  # its first reader is conv_a
        "dq_w": "g:a",
        "conv_a": "g:a",
        "relu_a": "g:a",
        "q_a": "g:b",  # through Reshape to conv_b
        "dq_a": "g:b",
        "reshape": "g:a",  # pass-through: the op it follows back to
        "conv_b": "g:b",
        "add": "g:b",
    }

    def q_far(steps):
        model = helper.make_model(helper.make_graph(chain(steps), "g", [], []))
        return attribute_nodes(model, _qgraph()).get("q_far")

    assert q_far(5) == "g:b" and q_far(6) is None  # six steps downstream at most


def test_batched_feeds_repeat_or_cut_the_samples():
    x = {"a": np.arange(3 * 2).reshape(3, 2), "b": np.arange(3)}
    out = _batch_feeds(x, 2)
    np.testing.assert_array_equal(out["a"], [[0, 1], [2, 3]])
    out = _batch_feeds(x, 7)
    np.testing.assert_array_equal(out["b"], [0, 1, 2, 0, 1, 2, 0])
    assert out["a"].shape == (7, 2) and out["a"].flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(_batch_feeds(x, 3)["b"], [0, 1, 2])
    np.testing.assert_array_equal(_batch_feeds({"b": np.arange(1)}, 3)["b"], [0, 0, 0])


def test_latency_key_follows_what_changes_the_kernels_only():
    proto = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        )
    )
    c = [Candidate(8, 8), Candidate(4, 8)]
    base = latency_key(proto, QuantConfig(), c, "cpu", 1, None)
    assert len(base) == 24
    same = [
        latency_key(proto, QuantConfig(progress=False, verify_samples=9), c, "cpu", 1, None),
        latency_key(proto, QuantConfig(scheme="w4a8", preset="cifar10"), c, "cpu", 1, None),
        latency_key(proto, QuantConfig(), c[::-1], "cpu", 1, None),
    ]
    assert same == [base] * 3
    other = [
        latency_key(proto, QuantConfig(weight_storage="dequant"), c, "cpu", 1, None),
        latency_key(proto, QuantConfig(), c[:1], "cpu", 1, None),
        latency_key(proto, QuantConfig(), c, "cuda", 1, None),
        latency_key(proto, QuantConfig(), c, "cpu", 2, None),
        latency_key(proto, QuantConfig(), c, "cpu", 1, 2),
    ]
    assert len({base, *other}) == 6


# --- build_latency_table and matmul_kernel_choice, the profiler stubbed: which models are built
# and measured, how each node's time is summed per group and class, the cache, and which
# MatMul/Gemm groups go to MatMulNBits


def _float_proto():
    return helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        )
    )


def _group(name, ops, weights=("w",)):
    return QuantizerGroup(name, "conv", list(ops), list(weights), [], 10, 10)


def _table_comp():
    built = []

    def build(plan, **kw):
        built.append((plan, kw))
        return f"model-{plan}", None

    return SimpleNamespace(
        float_proto=_float_proto(),
        config=QuantConfig(),
        inputs={"x": np.arange(6, dtype=np.float32).reshape(3, 2)},
        qgraph=QuantizerGraph({}, {}, {"g1": _group("g1", ["n1"]), "g2": _group("g2", ["n3"])}),
        uniform=lambda cand: str(cand),
        build=build,
        built=built,
    )


# per built model: microseconds of each measured node, the unmapped time, the wall time
COSTS = {
    "model-w4a8": NodeCosts({"n1": 10.0, "n2": 5.0, "n4": 7.0}, 3.0, 0.25),
    "model-w8a8": NodeCosts({"n1": 12.0}, 0.0, 0.5),
    "model-w8a16": NodeCosts({"n1": 20.0, "n3": 8.0, "n4": 1.0}, 0.5, 0.75),
}
OWNER = {"n1": "g1", "n2": "g1", "n3": "g2"}  # n4: no group


@pytest.fixture
def stub_profiler(monkeypatch):
    calls = []

    def measure(proto, feeds, ep="cpu", runs=20, threads=None, **kw):
        calls.append({"proto": proto, "feeds": feeds, "ep": ep, "runs": runs, "threads": threads})
        return COSTS[proto]

    monkeypatch.setattr(node_costs, "measure_node_costs", measure)
    monkeypatch.setattr(lat, "attribute_nodes", lambda proto, qgraph: dict(OWNER))
    return calls


def test_one_profile_per_kernel_class_summed_per_group(stub_profiler, tmp_path):
    """W4A8 and W8A8 share the int8 kernel class (profiled once, as its first candidate W4A8),
    W8A16 has its own; each node's time goes to its group, the rest to other_us."""
    comp = _table_comp()
    cands = [Candidate(8, 16), Candidate(4, 8)]
    t = lat.build_latency_table(comp, cands, ep="cpu", batch=5, runs=7, threads=2, cache_dir=False)
    assert [p for p, _ in comp.built] == ["w4a8", "w8a16"]
    assert [c["runs"] for c in stub_profiler] == [7, 7]
    assert [c["threads"] for c in stub_profiler] == [2, 2]
    feeds = stub_profiler[0]["feeds"]["x"]
    np.testing.assert_array_equal(feeds, [[0, 1], [2, 3], [4, 5], [0, 1], [2, 3]])
    assert t.classes == {"w4a8": "int8w/a8", "w8a8": "int8w/a8", "w8a16": "int8w/a16"}
    assert t.group_us == {
        "g1": {"int8w/a8": 15.0, "int8w/a16": 20.0},
        "g2": {"int8w/a8": 0.0, "int8w/a16": 8.0},  # no node of g2 ran in the int8 model
    }
    assert t.other_us == {"int8w/a8": 10.0, "int8w/a16": 1.5}
    assert t.wall_ms == {"int8w/a8": 0.25, "int8w/a16": 0.75}
    key = lat.latency_key(
        comp.float_proto,
        comp.config,
        [Candidate(4, 8), Candidate(8, 8), Candidate(8, 16)],
        "cpu",
        5,
        2,
    )
    assert t.meta == {"ep": "cpu", "batch": 5, "runs": 7, "threads": 2, "key": key}
    # W8A8 wall 250 us - its groups 15 us = 235 us overhead; g1 at A16 (20) + g2 at W8A8 (0)
    assert t.plan_ms({"g1": Candidate(8, 16), "g2": Candidate(8, 8)}, Candidate(8, 8)) == (
        pytest.approx((235 + 20 + 0) / 1e3)
    )
    assert not list(tmp_path.iterdir())


def test_tables_are_cached_per_key(stub_profiler, tmp_path, monkeypatch):
    """cache_dir=False: no file; None: FAAQ_CACHE_DIR; a folder: there. Defaults: the CPU, one
    sample per run, 20 runs, ORT's own thread count."""
    monkeypatch.setenv("FAAQ_CACHE_DIR", str(tmp_path / "default"))
    comp = _table_comp()
    lat.build_latency_table(comp, [Candidate(8, 16)], cache_dir=False)
    assert not (tmp_path / "default").exists()
    assert [(c["ep"], c["runs"], c["threads"]) for c in stub_profiler] == [("cpu", 20, None)] * 2
    assert stub_profiler[0]["feeds"]["x"].shape == (1, 2)
    t = lat.build_latency_table(comp, [Candidate(8, 16)], batch=2)
    assert [f.name for f in (tmp_path / "default").iterdir()] == [f"latency-{t.meta['key']}.json"]
    stub_profiler.clear()
    t = lat.build_latency_table(comp, [Candidate(8, 16)], batch=2, cache_dir=tmp_path)
    files = sorted(tmp_path.iterdir(), key=lambda f: f.name == "default")
    assert len(files) == 2 and files[0].name == f"latency-{t.meta['key']}.json"
    files = files[:1]
    assert json.loads(files[0].read_text()) == t.to_dict()
    n = len(stub_profiler)
    assert n == 2 and t.group_us["g1"] == {"int8w/a8": 12.0, "int8w/a16": 20.0}
    again = lat.build_latency_table(comp, [Candidate(8, 16)], batch=2, cache_dir=tmp_path)
    assert len(stub_profiler) == n  # read back, not measured again
    assert again.meta["cached"] == str(files[0])
    assert again.group_us == t.group_us and again.other_us == t.other_us
    lat.build_latency_table(comp, [Candidate(8, 16)], batch=3, cache_dir=tmp_path)
    assert len(stub_profiler) == 2 * n and len(list(tmp_path.iterdir())) == 3  # another batch


# --- matmul_kernel_choice ---------------------------------------------------------------------

NODES = [
    helper.make_node("MatMul", ["a", "w1"], ["b"], name="mm"),
    helper.make_node("Relu", ["b"], ["b2"], name="relu"),
    helper.make_node("Gemm", ["b2", "w2"], ["c"], name="fc"),
    helper.make_node("Gemm", ["c", "w3"], ["d"], name="gm"),
    helper.make_node("MatMul", ["d", "w4"], ["e"], name="slow"),
    helper.make_node("Conv", ["e", "w5"], ["f"], name="conv"),
    helper.make_node("MatMul", ["f", "w6"], ["g"], name="new"),
]
GROUPS = {
    "g:mm": _group("g:mm", ["mm", "relu"]),
    "g:fc": _group("g:fc", ["fc"]),
    "g:gm": _group("g:gm", ["gm"]),
    "g:slow": _group("g:slow", ["slow"]),
    "g:conv": _group("g:conv", ["conv"]),
    "g:new": _group("g:new", ["new"]),
}
# measured per node: g:mm is faster as MatMulNBits; fc too, but it was not converted; gm's
# MatMulNBits form ran no node of its own; slow is slower as MatMulNBits
CHOICE_COSTS = {
    "int8": NodeCosts(
        {"mm": 10.004, "relu": 2.0, "q_mm": 3.0, "fc": 5.0, "gm": 5.0, "slow": 1.0, "x": 9.0},
        0.0,
        1.0,
    ),
    "nbits": NodeCosts(
        {"mm": 4.004, "relu": 2.0, "fc": 3.0, "slow": 2.5, "x": 1.0, "conv": 4.0, "new": 1.0},
        0.0,
        1.0,
    ),
}
CHOICE_OWNER = {
    "mm": "g:mm",
    "relu": "g:mm",
    "q_mm": "g:mm",
    "fc": "g:fc",
    "gm": "g:gm",
    "slow": "g:slow",
    "conv": "g:conv",
    "x": "",  # owned by no group
    "new": "g:new",  # a node that only the MatMulNBits form runs
}


@pytest.fixture
def stub_forms(monkeypatch):
    calls = {"convert": [], "measure": []}

    def convert(proto, drop_activation_qdq, nodes):
        calls["convert"].append((proto, drop_activation_qdq, set(nodes)))
        return "nbits", {"mm", "gm", "slow", "new"} & set(nodes)  # fc cannot be converted

    def measure(proto, feeds, ep="cpu", **kw):
        calls["measure"].append((proto, feeds, ep))
        return CHOICE_COSTS[proto]

    monkeypatch.setattr(emit_nbits, "convert_to_matmulnbits", convert)
    monkeypatch.setattr(node_costs, "measure_node_costs", measure)
    monkeypatch.setattr(lat, "attribute_nodes", lambda proto, qgraph: dict(CHOICE_OWNER))
    return calls


def _choice_comp(builds):
    def build(plan, nbits=None):
        builds.append(set(nbits))
        return "int8", None

    return SimpleNamespace(
        float_proto=SimpleNamespace(graph=SimpleNamespace(node=NODES)),
        qgraph=QuantizerGraph({}, {}, GROUPS),
        config=SimpleNamespace(ep="cpu", latency_batch=4),
        inputs={"a": np.arange(2, dtype=np.float32)[:, None]},
        build=build,
    )


def _plan(**over):
    return BitPlan({g: Candidate.parse(over.get(g[2:], "w4a8")) for g in GROUPS})


def test_a_group_goes_to_matmulnbits_only_when_converted_and_measured_faster(stub_forms):
    builds = []
    out = lat.matmul_kernel_choice(_choice_comp(builds), _plan(), set())
    assert builds == [set()]
    assert stub_forms["convert"] == [("int8", True, {"mm", "fc", "gm", "slow", "new"})]
    assert [m[0] for m in stub_forms["measure"]] == ["int8", "nbits"]
    feeds = stub_forms["measure"][0][1]["a"]
    np.testing.assert_array_equal(feeds[:, 0], [0, 1, 0, 1])  # the latency batch of 4
    assert out["nbits_nodes"] == {"mm", "gm"}
    assert out["groups"] == {
        "g:mm": {"int8_us": 15.0, "nbits_us": 6.0, "choice": "nbits"},  # mm + relu + its Q
        "g:fc": {"int8_us": 5.0, "nbits_us": 3.0, "choice": "int8"},  # faster, but not converted
        "g:gm": {"int8_us": 5.0, "nbits_us": 0.0, "choice": "nbits"},
        "g:slow": {"int8_us": 1.0, "nbits_us": 2.5, "choice": "int8"},
        "g:new": {"int8_us": 0.0, "nbits_us": 1.0, "choice": "int8"},
    }
    assert (out["ep"], out["batch"]) == ("cpu", 4)


def test_only_low_bit_matmul_groups_are_compared_and_equal_costs_stay_int8(stub_forms, monkeypatch):
    """W16 weights, A16 activations and groups without MatMul/Gemm are not candidates; nodes
    already sent to MatMulNBits are built so and not compared again; a tie keeps int8."""
    builds = []
    costs = dict(CHOICE_COSTS)
    costs["nbits"] = NodeCosts({"slow": 1.0}, 0.0, 1.0)
    monkeypatch.setattr(node_costs, "measure_node_costs", lambda p, f, ep="cpu", **k: costs[p])
    plan = _plan(mm="w16a8", fc="w4a16", gm="w8a8")
    out = lat.matmul_kernel_choice(_choice_comp(builds), plan, {"gm"})
    assert builds == [{"gm"}]
    assert stub_forms["convert"][0][2] == {"slow", "new"}
    assert out["groups"] == {
        "g:gm": {"int8_us": 5.0, "nbits_us": 0.0, "choice": "int8"},  # gm was not converted now
        "g:slow": {"int8_us": 1.0, "nbits_us": 1.0, "choice": "int8"},
        "g:new": {"int8_us": 0.0, "nbits_us": 0.0, "choice": "int8"},
    }
    assert out["nbits_nodes"] == set()


def test_nothing_to_compare_builds_nothing(stub_forms):
    builds = []
    out = lat.matmul_kernel_choice(_choice_comp(builds), _plan(), {"mm", "fc", "gm", "slow", "new"})
    assert out == {"nbits_nodes": set(), "groups": {}} and builds == []
    plan = _plan(mm="w16a8", fc="w16a8", gm="w8a16", slow="float", new="w16a16")
    assert lat.matmul_kernel_choice(_choice_comp(builds), plan, set())["groups"] == {}
    assert builds == [] and stub_forms["measure"] == []
