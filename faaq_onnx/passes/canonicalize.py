"""Canonical form for quantization: weights as initializers, shapes known, BN folded.

Real exports keep weights in Constant nodes and subgraphs, use old opsets and carry
shape arithmetic; after this stage every quantizable weight is an initializer of the
main graph and every node has a unique name.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import PassError, PassManager, common

from faaq_onnx.errors import FaaqError
from faaq_onnx.passes.cle import CrossLayerEqualizationPass
from faaq_onnx.passes.decompose_hardswish import (
    DecomposeHardSwishPass,
    WrittenOutHardSwishPass,
)
from faaq_onnx.passes.drop_identity_reshapes import DropIdentityReshapesPass
from faaq_onnx.passes.drop_noop_arith import DropNoopArithmeticPass
from faaq_onnx.passes.fold_batchnorm import AddZeroBiasPass, FoldBatchNormPass
from faaq_onnx.passes.fold_conv_affine import FoldConvAffinePass
from faaq_onnx.passes.fold_pad import FoldPadIntoConvPass
from faaq_onnx.passes.fuse_matmul_add import FuseMatMulAddPass
from faaq_onnx.passes.simplify import SimplifyPass
from faaq_onnx.passes.spatial_mean import SpatialMeanToGlobalPoolPass
from faaq_onnx.passes.unshare_bias import UnshareBiasPass
from faaq_onnx.passes.upgrade_opset import UpgradeOpsetPass


def canonicalize(
    model: ir.Model,
    target_opset: int = 13,
    simplify: bool = True,
    cle: str | None = None,
    zero_biases: bool = False,
) -> tuple[ir.Model, list[str]]:
    """Run the canonicalization passes; returns the model and any warnings.

    `cle` ("keep" or "replace" for ReLU6) adds cross-layer equalization after BN folding;
    `zero_biases` gives every Conv/Gemm a bias that bias correction can adjust.
    """
    simplify_pass = SimplifyPass(enabled=simplify)
    cle_pass = CrossLayerEqualizationPass(relu6=cle) if cle else None
    passes = [
        common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1),
        common.LiftSubgraphInitializersToMainGraphPass(),
        common.RemoveInitializersFromInputsPass(),
        UpgradeOpsetPass(target_opset),
        simplify_pass,
        common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1),
        FoldBatchNormPass(),
        FoldConvAffinePass(),
        FoldBatchNormPass(),  # a BN behind a folded bias Add (PP-OCRv4 det's ConvTranspose)
        DropNoopArithmeticPass(),
        FoldPadIntoConvPass(),
        SpatialMeanToGlobalPoolPass(),
        DropIdentityReshapesPass(),
        FuseMatMulAddPass(),
        UnshareBiasPass(),
        DecomposeHardSwishPass(),
        WrittenOutHardSwishPass(),
        *([cle_pass] if cle_pass else []),
        *([AddZeroBiasPass()] if zero_biases else []),
        common.RemoveUnusedNodesPass(),
        common.NameFixPass(),
        common.ShapeInferencePass(strict_mode=False),
    ]
    try:
        result = PassManager(passes, steps=1)(model)
    except PassError as exc:  # a pass refused the model: say why in one line, as the pass did
        cause: BaseException = exc
        while cause.__cause__ is not None and not isinstance(cause, FaaqError):
            cause = cause.__cause__
        if isinstance(cause, FaaqError):
            raise cause from None
        raise
    warnings = [simplify_pass.warning] if simplify_pass.warning else []
    if cle_pass is not None and cle_pass.replaced_clips:
        warnings.append(
            f"cross-layer equalization replaced {len(cle_pass.replaced_clips)} ReLU6 (Clip) by Relu: "
            "the float model's function changes where activations exceed the clip"
        )
    return result.model, warnings
