"""onnxsim constant folding and cleanup; best effort, never fatal.

Exported models carry shape arithmetic and Constant chains that hide which tensors
are weights. onnxsim folds them; when it fails (unsupported ops, huge models) we keep
the model as it was and say so.
"""

from __future__ import annotations

import logging

import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from faaq_onnx.graph import to_proto

log = logging.getLogger("faaq")


class SimplifyPass(InPlacePass):
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.warning: str | None = None

    def call(self, model: ir.Model) -> PassResult:
        if not self.enabled:
            return PassResult(model, False)
        if any(
            isinstance(v.const_value, ir.ExternalTensor) for v in model.graph.initializers.values()
        ):
            self.warning = (
                "weights in external data: onnxsim skipped (it needs them in the protobuf)"
            )
            return PassResult(model, False)
        try:
            import onnxsim

            proto = to_proto(model)
            # constant folding only: onnxoptimizer's fusions (MatMul+Add to Gemm behind
            # Reshapes, a fused Attention op) hide the structure we quantize
            simplified, ok = onnxsim.simplify(proto, check_n=0, perform_optimization=False)
            if not ok:
                raise RuntimeError("onnxsim's check failed")
        except Exception as exc:  # onnxsim raises anything; the model stays usable
            self.warning = f"onnxsim could not simplify the model ({type(exc).__name__}: {exc}); continuing without it"
            log.warning(self.warning)
            return PassResult(model, False)
        simplified.ir_version = proto.ir_version
        model.graph = ir.from_proto(simplified).graph  # in place: the caller keeps its Model
        return PassResult(model, True)
