"""Canonical form for quantization: weights as initializers, shapes known, BN folded.

Real exports keep weights in Constant nodes and subgraphs, use old opsets and carry
shape arithmetic; after this stage every quantizable weight is an initializer of the
main graph and every node has a unique name.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import PassManager
from onnx_ir.passes import common

from faaq_onnx.passes.fold_batchnorm import FoldBatchNormPass
from faaq_onnx.passes.simplify import SimplifyPass
from faaq_onnx.passes.upgrade_opset import UpgradeOpsetPass


def canonicalize(model: ir.Model, target_opset: int = 13, simplify: bool = True) -> tuple[ir.Model, list[str]]:
    """Run the canonicalization passes; returns the model and any warnings."""
    simplify_pass = SimplifyPass(enabled=simplify)
    manager = PassManager(
        [
            common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1),
            common.LiftSubgraphInitializersToMainGraphPass(),
            common.RemoveInitializersFromInputsPass(),
            UpgradeOpsetPass(target_opset),
            simplify_pass,
            common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1),
            FoldBatchNormPass(),
            common.RemoveUnusedNodesPass(),
            common.NameFixPass(),
            common.ShapeInferencePass(strict_mode=False),
        ],
        steps=1,
    )
    result = manager(model)
    warnings = [simplify_pass.warning] if simplify_pass.warning else []
    return result.model, warnings
