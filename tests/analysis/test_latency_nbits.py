"""analysis/latency.matmul_nbits_nodes: which MatMul/Gemm nodes go to MatMulNBits for a plan."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
from onnx import helper

from faaq_onnx.analysis import latency as lat
from faaq_onnx.config import Candidate
from faaq_onnx.groups import QuantizerGraph, QuantizerGroup
from faaq_onnx.plan import BitPlan

GROUPS = {
    "g:mm": QuantizerGroup("g:mm", "matmul", ["mm", "relu"], ["w1"], ["act:a"], 10, 10),
    "g:fc": QuantizerGroup("g:fc", "gemm", ["fc"], ["w2"], ["act:b"], 10, 10),
    "g:conv": QuantizerGroup("g:conv", "conv", ["conv"], ["w3"], ["act:c"], 10, 10),
    "g:pool": QuantizerGroup("g:pool", "pool", ["pool_mm"], [], ["act:d"], 0, 0),
}
NODES = [
    helper.make_node("MatMul", ["a", "w1"], ["b"], name="mm"),
    helper.make_node("Relu", ["b"], ["b2"], name="relu"),
    helper.make_node("Gemm", ["b2", "w2"], ["c"], name="fc"),
    helper.make_node("Conv", ["c", "w3"], ["d"], name="conv"),
    helper.make_node("MatMul", ["d", "d"], ["e"], name="pool_mm"),
]


def comp(kernel="int8"):
    stages = []

    @contextlib.contextmanager
    def stage(name):
        stages.append(name)
        yield

    return SimpleNamespace(
        float_proto=SimpleNamespace(graph=SimpleNamespace(node=NODES)),
        qgraph=QuantizerGraph({}, {}, GROUPS),
        config=SimpleNamespace(matmul_kernel=kernel),
        _matmul_choice={},
        stage=stage,
        stages=stages,
    )


def plan(c):
    return BitPlan({g: Candidate.parse(c) for g in GROUPS})


@pytest.mark.parametrize(
    "scheme,kernel,want",
    [
        ("w4", "int8", {"mm", "fc"}),  # weight-only: always MatMulNBits
        ("w8", "int8", {"mm", "fc"}),  # 8-bit weight-only too
        ("w16", "int8", set()),  # no 16-bit MatMulNBits
        ("w4a8", "int8", set()),
        ("w4a8", "nbits", {"mm", "fc"}),
        ("w8a8", "nbits", {"mm", "fc"}),
        ("w4a16", "nbits", set()),  # 16-bit activations stay on QDQ
    ],
)
def test_nodes_per_scheme_and_kernel(scheme, kernel, want):
    assert lat.matmul_nbits_nodes(comp(kernel), plan(scheme)) == want


def test_auto_measures_once_per_plan(monkeypatch):
    calls = []

    def choice(c, p, base):
        calls.append(set(base))
        return {"nbits_nodes": {"fc"}}

    monkeypatch.setattr(lat, "matmul_kernel_choice", choice)
    c = comp("auto")
    assert lat.matmul_nbits_nodes(c, plan("w4a8")) == {"fc"}
    assert lat.matmul_nbits_nodes(c, plan("w4a8")) == {"fc"}
    assert calls == [set()] and c.stages == ["latency_profile"]
    assert lat.matmul_nbits_nodes(c, plan("w4")) == {"mm", "fc"}
    assert calls == [set(), {"mm", "fc"}]
