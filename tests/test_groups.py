"""QuantizerGraph's look-ups and the sizes of its quantizers."""

from __future__ import annotations

import pytest

from faaq_onnx.groups import ActivationQuantizer, QuantizerGraph, QuantizerGroup, WeightQuantizer


def _graph():
    def w(name, shape, ops):
        return WeightQuantizer(name, ops, "Conv", shape, 0, 1, 10)

    def g(name, ops, weights, acts):
        return QuantizerGroup(name, "conv", ops, weights, acts, 10, 0)

    weights = {"wa": w("wa", (4, 3, 3, 3), ["a"]), "wc": w("wc", (2, 5), ["c"])}
    acts = {n: ActivationQuantizer(n, [n[4:]], [n[4:]]) for n in ("act:x", "act:y", "act:z")}
    groups = {
        "g:b": g("g:b", ["b"], [], ["act:y"]),  # no weight: never an edge group
        "g:c": g("g:c", ["c", "d"], ["wc"], ["act:z"]),
        "g:a": g("g:a", ["a"], ["wa"], ["act:x"]),
    }
    return QuantizerGraph(weights, acts, groups, ["e: skipped"])


def test_weight_size_is_the_product_of_its_dims():
    assert _graph().weights["wa"].size == 4 * 3 * 3 * 3
    assert WeightQuantizer("s", [], "MatMul", (), None, None, 0).size == 1


def test_group_of_activation_and_unknown_activation():
    qg = _graph()
    assert qg.group_of_activation("act:x") == "g:a"
    assert qg.group_of_activation("act:z") == "g:c"
    with pytest.raises(KeyError):
        qg.group_of_activation("act:none")


def test_edge_groups_are_the_first_and_last_weighted_ops_in_graph_order():
    """By node order, not dict order; groups without weights do not count."""
    qg = _graph()
    assert qg.edge_groups(["a", "b", "c", "d"]) == ["g:a", "g:c"]
    assert qg.edge_groups(["d", "b", "a"]) == ["g:a", "g:c"]  # g:c first (d), g:a last
    assert qg.edge_groups(["c", "d", "b", "a"]) == ["g:a", "g:c"]
    one = QuantizerGraph({}, {}, {"g:a": _graph().groups["g:a"]})
    assert one.edge_groups(["a"]) == ["g:a"]
    none = QuantizerGraph({}, {}, {"g:b": _graph().groups["g:b"]})
    assert none.edge_groups(["b"]) == []


def test_edge_groups_use_each_groups_first_and_last_op():
    """A group spanning the graph is both the first (by its first op) and the last (by its last)."""
    w = WeightQuantizer("w", ["a", "z"], "MatMul", (2, 2), 1, 0, 4)
    v = WeightQuantizer("v", ["m"], "MatMul", (2, 2), 1, 0, 4)
    span = QuantizerGroup("g:a", "matmul", ["a", "z"], ["w"], [], 8, 4)
    mid = QuantizerGroup("g:m", "matmul", ["m"], ["v"], [], 4, 4)
    qg = QuantizerGraph({"w": w, "v": v}, {}, {"g:m": mid, "g:a": span})
    assert qg.edge_groups(["a", "m", "z"]) == ["g:a"]


def test_to_dict_is_plain_data():
    d = _graph().to_dict()
    assert d["weights"]["wa"]["shape"] == (4, 3, 3, 3) and d["weights"]["wa"]["bias"] is None
    assert d["activations"]["act:x"] == {
        "name": "act:x",
        "tensors": ["x"],
        "range_tensors": ["x"],
        "droppable": [],
    }
    assert d["groups"]["g:c"]["ops"] == ["c", "d"] and d["skipped"] == ["e: skipped"]
