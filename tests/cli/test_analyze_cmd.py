"""`faaq analyze`'s own checks, on a tiny model built here."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.cli import main
from tests.conftest import _save


def _matmul_sin(tmp_path) -> str:
    """x @ W -> Sin: ONNX Runtime runs it; the torch interpreter has no Sin."""
    w = np.random.default_rng(0).normal(0, 0.3, (8, 4)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
            helper.make_node("Sin", ["h"], ["y"], name="sin"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return _save(model, tmp_path / "mm_sin.onnx")


@pytest.mark.parametrize("metric", ["fit", "sqnr"])
def test_only_metric_fit_needs_the_torch_interpreter(tmp_path, metric):
    """--metric fit runs the model in the torch interpreter, so a model it cannot run is refused
    up front in one line naming the op; the other metrics run in ONNX Runtime and analyze it."""
    model = _matmul_sin(tmp_path)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32))
    rep = tmp_path / "rep"
    args = ["analyze", model, "--calib", str(calib), "--report", str(rep), "--metric", metric]
    r = CliRunner().invoke(main, [*args, "--points", "1", "--no-cache", "-q"])
    if metric == "fit":
        assert r.exit_code != 0
        errors = [ln for ln in r.stderr.splitlines() if "error" in ln]
        assert errors == [
            "faaq: error: --metric fit needs the torch interpreter, which cannot run this model: "
            "op 'Sin' (node 'sin') has no torch equivalent here"
        ], r.stderr
        assert not (rep / "sensitivity.json").exists()
    else:
        assert r.exit_code == 0, r.output
        assert (rep / "tradeoff.json").stat().st_size > 0
