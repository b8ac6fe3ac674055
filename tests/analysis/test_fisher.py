"""The FIT metric weighs quantization error by the (label-free) Fisher information."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.config import Candidate, QuantConfig
from faaq_onnx.pipeline import Compilation
from tests.conftest import _save


def _mlp(tmp_path, name, w1, w2):
    inits = [numpy_helper.from_array(w1.astype(np.float32), "w1"), numpy_helper.from_array(w2.astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], inits)
    return _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / f"{name}.onnx")


def test_weights_that_get_no_gradient_add_nothing(tmp_path):
    """Output channel 5 of mm1 is multiplied by a zero row of w2, so column 5 of w1 gets no
    gradient. Filling that column with large random values changes the 2-bit weight
    error a lot, and must leave FIT unchanged; a FIT computed without gradients moves."""
    rng = np.random.default_rng(1)
    w1 = rng.normal(0, 0.5, (4, 8))
    w2 = rng.normal(0, 0.3, (8, 10))
    w2[5] = 0.0
    noisy = w1.copy()
    noisy[:, 5] = rng.uniform(-8.0, 8.0, 4)
    x = {"x": rng.standard_normal((32, 4)).astype(np.float32)}
    fits, errs = [], []
    for name, w in (("a", w1), ("b", noisy)):
        comp = Compilation(_mlp(tmp_path, name, w, w2), x, QuantConfig(progress=False), target_opset=21)
        table = comp.sensitivity([Candidate(2, 8), Candidate(8, 8)], metrics=("fit",), cache_dir=False)
        g = next(g for g in comp.qgraph.groups.values() if "w1" in g.weights)
        fits.append(table.table[g.name]["w2a8"]["fit"])
        errs.append(float(((comp.weights.get("w1", 2).dequantized() - w) ** 2).sum()))
    assert errs[1] > 3 * errs[0]
    assert fits[0] > 0
    assert abs(fits[1] - fits[0]) <= 1e-4 * fits[0]
