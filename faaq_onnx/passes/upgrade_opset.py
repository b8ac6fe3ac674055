"""Raise the default-domain opset to one that has the types we emit.

Per-axis QDQ needs opset 13; int4/uint4, int16 and blocked QDQ need 21. We only
upgrade as far as the chosen scheme requires, since every conversion is a risk.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx import version_converter
from onnx_ir.passes import InPlacePass, PassResult

from faaq_onnx.errors import FaaqError
from faaq_onnx.graph import check_model, default_opset, to_proto


class UpgradeOpsetPass(InPlacePass):
    def __init__(self, target: int) -> None:
        self.target = target

    def call(self, model: ir.Model) -> PassResult:
        current = default_opset(model)
        if current >= self.target:
            return PassResult(model, False)
        proto = to_proto(model)
        try:
            converted = version_converter.convert_version(proto, self.target)
            check_model(converted)
        except Exception as exc:
            raise FaaqError(
                f"cannot upgrade the model from opset {current} to {self.target}, which the chosen bit widths need: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
            ) from exc
        converted.ir_version = proto.ir_version
        model.graph = ir.from_proto(converted).graph  # in place: the caller keeps its Model
        return PassResult(model, True)
