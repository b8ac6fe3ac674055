"""Which Gemm attributes MatMulNBits can take: alpha and transA never, beta only without a bias
(beta scales C, and there is no C); the converted model computes what the QDQ Gemm does."""

import pytest

from faaq_onnx.passes.emit_matmulnbits import convert_to_matmulnbits
from tests.passes.test_emit_matmulnbits import _qdq_matmul, _ref, _rel, _run, _x


def _gemm(bias, **attrs):
    model = _qdq_matmul(bits=4, k=64, n=16, op="Gemm", trans_b=True, bias=bias)
    gemm = model.graph.node[-1]
    from onnx import helper

    for k, v in attrs.items():
        gemm.attribute.append(helper.make_attribute(k, v))
    return model


@pytest.mark.parametrize(
    "bias,attrs,converted",
    [
        (True, {}, True),
        (True, {"beta": 1.0, "alpha": 1.0}, True),
        (True, {"beta": 0.5}, False),  # the bias is scaled: MatMulNBits cannot
        (False, {"beta": 0.5}, True),  # no bias: beta scales nothing
        (True, {"alpha": 2.0}, False),
        (False, {"alpha": 0.5}, False),
    ],
)
def test_gemm_attributes(bias, attrs, converted):
    model = _gemm(bias, **attrs)
    out, names = convert_to_matmulnbits(model, accuracy_level=0)
    assert (names == ["fc"]) is converted
    ops = [n.op_type for n in out.graph.node]
    assert ("MatMulNBits" in ops) is converted and ("Gemm" in ops) is not converted
    x = _x(model)
    assert _rel(_run(out, x), _ref(model, x)) < 1e-4
