"""The FIT metric weighs quantization error by the (label-free) Fisher information."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.config import Candidate, QuantConfig
from faaq_onnx.pipeline import Compilation
from tests.conftest import _save


def _mlp(tmp_path, name, w1, w2, classes=10):
    inits = [
        numpy_helper.from_array(w1.astype(np.float32), "w1"),
        numpy_helper.from_array(w2.astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
    ]
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", classes])],
        inits,
    )
    return _save(
        helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / f"{name}.onnx"
    )


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
        comp = Compilation(
            _mlp(tmp_path, name, w, w2), x, QuantConfig(progress=False), target_opset=21
        )
        table = comp.sensitivity(
            [Candidate(2, 8), Candidate(8, 8)], metrics=("fit",), cache_dir=False
        )
        g = next(g for g in comp.qgraph.groups.values() if "w1" in g.weights)
        fits.append(table.table[g.name]["w2a8"]["fit"])
        errs.append(float(((comp.weights.get("w1", 2).dequantized() - w) ** 2).sum()))
    assert errs[1] > 3 * errs[0]
    assert fits[0] > 0
    assert abs(fits[1] - fits[0]) <= 1e-4 * fits[0]


@pytest.mark.parametrize("classes", [10, 1])
def test_fit_equals_a_plain_autograd_computation(tmp_path, classes):
    """FIT written out by hand for the two-layer MLP: per sample, a label drawn from the
    model's own softmax (seeded generator), the summed cross-entropy's squared gradients
    times the squared quantization error of each weight and activation tensor, averaged
    over samples. Every term of the formula is exercised: weights, activations (the
    quantizer of h, which the Relu's output shares), the sample loop. A one-output model
    is a regression: its loss is half the squared distance to a unit Gaussian draw around
    the output. A float candidate costs nothing."""
    import torch

    from faaq_onnx.quant.affine import fake_quant

    rng = np.random.default_rng(1)
    w1, w2 = rng.normal(0, 0.5, (4, 8)), rng.normal(0, 0.3, (8, classes))
    x = rng.standard_normal((12, 4)).astype(np.float32)
    comp = Compilation(
        _mlp(tmp_path, "ref", w1, w2, classes),
        {"x": x},
        QuantConfig(progress=False),
        target_opset=21,
    )
    cand = Candidate(2, 4)
    table = comp.sensitivity([cand, Candidate.parse("float")], metrics=("fit",), cache_dir=False)

    W1 = torch.tensor(w1, dtype=torch.float32, requires_grad=True)
    W2 = torch.tensor(w2, dtype=torch.float32, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    fisher = {"w1": torch.zeros_like(W1), "w2": torch.zeros_like(W2)}
    act = {"act:x": 0.0, "act:h": 0.0}

    def act_err(name, t):
        s, zp, qmin, qmax = comp.prober.act_params(name, cand.a).tolist()
        v = t.detach()
        return float((t.grad**2 * (fake_quant(v, s, zp, qmin, qmax) - v) ** 2).sum())

    for i in range(len(x)):
        xi = torch.tensor(x[i : i + 1], requires_grad=True)
        h = xi @ W1
        h.retain_grad()
        y = torch.relu(h) @ W2
        W1.grad = W2.grad = None
        if classes > 1:
            label = torch.multinomial(torch.softmax(y.detach(), 1), 1, generator=gen).reshape(-1)
            torch.nn.functional.cross_entropy(y, label, reduction="sum").backward()
        else:
            target = y.detach() + torch.randn(y.shape, generator=gen)
            (0.5 * ((y - target) ** 2).sum()).backward()
        fisher["w1"] += W1.grad**2
        fisher["w2"] += W2.grad**2
        act["act:x"] += act_err("act:x", xi)
        act["act:h"] += act_err(
            "act:h", h
        )  # the quantizer sits on h; the Relu after it adds no error
    n = len(x)
    for group, w, a in (("g:mm1", "w1", "act:x"), ("g:mm2", "w2", "act:h")):
        delta = (
            torch.from_numpy(
                comp.weights.get(w, cand.w).dequantized() - comp.weights.float_weight(w)
            )
            ** 2
        )
        expected = float((fisher[w] * delta).sum()) / n + act[a] / n
        assert act[a] > 0.005 * expected * n  # the activation term shows at rel=1e-4
        assert table.table[group][str(cand)]["fit"] == pytest.approx(expected, rel=1e-4)
        assert table.table[group][str(Candidate.parse("float"))]["fit"] == 0.0


def test_fit_needs_the_interpreter_error_or_warning():
    """A model with an op the torch interpreter lacks: FIT alone is an error naming the op;
    asked with other metrics it is dropped with a warning."""
    from faaq_onnx.analysis.fisher import fit_available
    from faaq_onnx.errors import FaaqError

    node = helper.make_node("LRN", ["x"], ["y"], size=3)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2, 2])],
    )
    proto = helper.make_model(graph)
    with pytest.raises(FaaqError, match="LRN"):
        fit_available(proto, ("fit",), [])
    warnings = []
    assert fit_available(proto, ("sqnr", "kl", "fit"), warnings) == ("sqnr", "kl")
    assert len(warnings) == 1 and "LRN" in warnings[0]
    assert fit_available(helper.make_model(helper.make_graph([], "e", [], [])), ("fit",), []) == (
        "fit",
    )
