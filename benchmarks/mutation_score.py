"""Mutation score of the test suite over the whole package, on a fresh random sample every run.

A mutant is one small change to one line of faaq_onnx/ (an arithmetic or comparison operator
swapped, a numeric constant nudged by +1, a condition negated, a boolean flipped, and/or
swapped). It is killed when the tests that cover its module fail on it (see TARGETS), or
when they run past the mutant's timeout (reported separately as "killed (timeout)").

mutmut 3 was tried first: it generated 280 mutants for quant/affine.py alone and ran about
5 a minute here, so the whole package would take days. This script draws a random sample
of the package's mutation points instead:

* by default `--total N` points, uniformly over every mutation point of every module (so a
  module's share follows its number of mutation points), with a FRESH seed each run
  (from os.urandom). The seed is written to the output; `--seed S` with the same size and
  the same commit replays the same sample;
* or `--per-module K` points in each module.

Everything runs in a scratch clone of the checkout's HEAD (a temp dir), never in the
working tree: uncommitted changes are not measured, and the output names the commit.
Before any mutant, the test files the sample needs run once unmutated; tests that already
fail there are deselected for the mutants (and listed), so a broken test cannot "kill"
anything. Survivors are listed with file:line, the original line and the mutated
expression, so a human can judge which are equivalent; nothing is dropped.

Modules with no mutation point (the bare __init__.py / __main__.py files and the re-export
optimize/weights.py) are the only ones outside the scope; the script stops if a module with
mutation points has no TARGETS entry.

    python benchmarks/mutation_score.py --total 60          # fresh sample of 60, ~1 h on 2 loaded cores
    python benchmarks/mutation_score.py --total 60 --seed S # replay a run's sample (same commit)
    python benchmarks/mutation_score.py --per-module 2 --modules faaq_onnx/optimize
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from common import OUT, machine

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "faaq_onnx"

# module -> the tests that cover it, the module's own (mirror) test file first, then the test files
# that import it, then (for modules no test imports directly) the tests of its callers. Found by
# grepping the imports of tests/ and faaq_onnx/; order matters only for speed (pytest -x).
_PIPE = ["tests/test_pipeline.py", "tests/test_guarantees.py"]
_CLI = ["tests/cli/test_cli.py"]
_CANON = ["tests/passes/test_canonicalize.py", "tests/analysis/test_discover.py"]
_ROUND = ["tests/optimize/test_rounding.py"]
_ZOO = ["tests/zoo/test_zoo.py", "tests/zoo/test_efficientnet.py"]
TARGETS: dict[str, list[str]] = {
    # quant/
    "faaq_onnx/quant/affine.py": [
        "tests/quant/test_affine.py",
        "tests/quant",
        "tests/analysis/test_fisher.py",
        "tests/passes/test_emit_qdq.py",
    ],
    "faaq_onnx/quant/formats.py": [
        "tests/quant/test_formats.py",
        "tests/quant",
        "tests/passes/test_emit_qdq.py",
    ],
    "faaq_onnx/quant/observers.py": [
        "tests/quant/test_observers.py",
        "tests/quant",
        "tests/test_pipeline.py",
    ],
    "faaq_onnx/quant/range_setters.py": ["tests/quant/test_range_setters.py", "tests/quant"],
    "faaq_onnx/quant/weights.py": [
        "tests/quant/test_weights.py",
        "tests/quant",
        "tests/optimize/test_gptq.py",
        *_ROUND,
    ],
    # analysis/
    "faaq_onnx/analysis/accuracy.py": [
        "tests/analysis/test_probe.py",
        *_PIPE,
        "tests/analysis/test_sensitivity.py",
        "tests/analysis/test_allocate.py",
    ],
    "faaq_onnx/analysis/allocate.py": [
        "tests/analysis/test_allocate.py",
        "tests/test_guarantees.py",
    ],
    "faaq_onnx/analysis/budget.py": ["tests/analysis/test_allocate.py", "tests/test_guarantees.py"],
    "faaq_onnx/analysis/calibrate.py": [
        "tests/analysis/test_calibrate_units.py",
        "tests/test_pipeline.py",
        "tests/runtime/test_probe_session.py",
        "tests/test_graph.py",
        *_ROUND,
    ],
    "faaq_onnx/analysis/candidates.py": [
        "tests/analysis/test_candidates.py",
        "tests/analysis/test_allocate.py",
        "tests/analysis/test_sensitivity.py",
    ],
    "faaq_onnx/analysis/coverage.py": [
        "tests/analysis/test_coverage.py",
        "tests/analysis/test_discover.py",
        "tests/test_foreign_graphs.py",
        "tests/cli/test_quantize_cmd.py",
    ],
    "faaq_onnx/analysis/discover.py": [
        "tests/analysis/test_discover.py",
        "tests/test_pipeline.py",
        "tests/test_foreign_graphs.py",
        "tests/analysis/test_transformer.py",
    ],
    "faaq_onnx/analysis/macs.py": [
        "tests/analysis/test_macs.py",
        "tests/analysis/test_discover.py",
        "tests/analysis/test_transformer.py",
        "tests/analysis/test_allocate.py",
    ],
    "faaq_onnx/analysis/fisher.py": [
        "tests/analysis/test_fisher.py",
        "tests/analysis/test_sensitivity.py",
    ],
    "faaq_onnx/analysis/latency.py": [
        "tests/analysis/test_latency.py",
        "tests/analysis/test_latency_nbits.py",
        "tests/analysis/test_allocate.py",
        "tests/test_guarantees.py",
        *_CLI,
    ],
    "faaq_onnx/analysis/metrics.py": [
        "tests/analysis/test_metrics.py",
        "tests/quant/test_affine.py",
        "tests/passes/test_emit_qdq.py",
        *_PIPE,
    ],
    "faaq_onnx/analysis/output_store.py": [
        "tests/analysis/test_output_store.py",
        "tests/test_guarantees.py",
    ],
    "faaq_onnx/analysis/probe.py": [
        "tests/analysis/test_probe.py",
        "tests/analysis/test_sensitivity.py",
        "tests/runtime/test_probe_session.py",
    ],
    "faaq_onnx/analysis/prune.py": [
        "tests/analysis/test_prune.py",
        "tests/test_pipeline.py",
        "tests/analysis/test_allocate.py",
        "tests/analysis/test_sensitivity.py",
    ],
    "faaq_onnx/analysis/sensitivity.py": [
        "tests/analysis/test_sensitivity.py",
        "tests/analysis/test_fisher.py",
        "tests/analysis/test_allocate.py",
    ],
    "faaq_onnx/analysis/suffix_sweep.py": [
        "tests/analysis/test_suffix_sweep.py",
        "tests/analysis/test_sensitivity.py",
        "tests/runtime/test_workers.py",
    ],
    "faaq_onnx/analysis/tradeoff.py": ["tests/analysis/test_tradeoff.py", *_CLI],
    "faaq_onnx/analysis/verify.py": [
        "tests/analysis/test_verify.py",
        "tests/test_guarantees.py",
        *_CLI,
    ],
    # cli/ (end-to-end through click)
    "faaq_onnx/cli/__init__.py": [
        *_CLI,
        "tests/runtime/test_profile.py",
        "tests/test_reliability.py",
    ],
    "faaq_onnx/cli/analyze_cmd.py": [
        "tests/cli/test_analyze_cmd.py",
        "tests/cli/test_command_help.py",
        *_CLI,
    ],
    "faaq_onnx/cli/common.py": ["tests/cli/test_cli_common.py", *_CLI],
    "faaq_onnx/cli/demo_cmd.py": ["tests/cli/test_command_help.py", *_CLI],
    "faaq_onnx/cli/eval_cmd.py": [
        "tests/cli/test_eval_cmd.py",
        "tests/cli/test_command_help.py",
        *_CLI,
    ],
    "faaq_onnx/cli/export_cmd.py": ["tests/cli/test_command_help.py", *_CLI, *_ZOO],
    "faaq_onnx/cli/inspect_cmd.py": ["tests/cli/test_inspect_cmd.py", *_CLI],
    "faaq_onnx/cli/profile_cmd.py": [
        "tests/cli/test_profile_cmd.py",
        "tests/cli/test_command_help.py",
        *_CLI,
        "tests/runtime/test_profile.py",
    ],
    "faaq_onnx/cli/quantize_cmd.py": [
        "tests/cli/test_quantize_cmd.py",
        *_CLI,
        "tests/runtime/test_workers.py",
    ],
    "faaq_onnx/cli/reliability_cmd.py": [
        "tests/cli/test_command_help.py",
        *_CLI,
        "tests/test_reliability.py",
    ],
    # data/
    "faaq_onnx/data/inputs.py": [
        "tests/data/test_data_inputs_checks.py",
        "tests/data/test_data.py",
        *_CLI,
    ],
    "faaq_onnx/data/labeled.py": [
        "tests/data/test_labeled_checks.py",
        "tests/data/test_data.py",
        *_CLI,
    ],
    "faaq_onnx/data/labeled_inputs.py": [
        "tests/data/test_labeled_inputs.py",
        "tests/data/test_labeled_inputs_checks.py",
        "tests/test_evaluate.py",
        "tests/cli/test_cli.py::test_eval_reports_accuracy_and_drop",
    ],
    "faaq_onnx/data/lazy.py": ["tests/data/test_lazy.py", "tests/data/test_data.py"],
    "faaq_onnx/data/presets.py": [
        "tests/data/test_presets_units.py",
        "tests/data/test_data.py",
        "tests/zoo/test_zoo.py",
    ],
    "faaq_onnx/data/readers.py": [
        "tests/data/test_data.py",
        "tests/data/test_labeled_checks.py",
        "tests/data/test_data_inputs_checks.py",
    ],
    # interpreter/
    "faaq_onnx/interpreter/graph.py": [
        "tests/interpreter/test_interpreter_checks.py",
        "tests/interpreter",
        "tests/analysis/test_fisher.py",
        "tests/optimize/test_datafree.py",
        *_ROUND,
    ],
    "faaq_onnx/interpreter/ops.py": [
        "tests/interpreter/test_ops.py",
        "tests/interpreter",
        "tests/analysis/test_fisher.py",
        "tests/optimize/test_datafree.py",
        *_ROUND,
    ],
    # optimize/
    "faaq_onnx/optimize/bias_correction.py": ["tests/optimize/test_bias_correction.py"],
    "faaq_onnx/optimize/datafree.py": [
        "tests/optimize/test_datafree_units.py",
        "tests/optimize/test_datafree.py",
    ],
    "faaq_onnx/optimize/gptq.py": ["tests/optimize/test_gptq.py"],
    "faaq_onnx/optimize/gptq_layers.py": [
        "tests/optimize/test_gptq_layers.py",
        "tests/optimize/test_gptq.py",
    ],
    "faaq_onnx/optimize/hessian.py": [
        "tests/optimize/test_hessian.py",
        "tests/optimize/test_gptq.py",
    ],
    "faaq_onnx/optimize/patches.py": ["tests/optimize/test_patches.py", *_ROUND],
    "faaq_onnx/optimize/plan_rounding.py": [*_ROUND],
    "faaq_onnx/optimize/reconstruct.py": [
        "tests/optimize/test_reconstruct.py",
        "tests/optimize/test_reconstruct_loop.py",
        *_ROUND,
    ],
    "faaq_onnx/optimize/rounding.py": [*_ROUND],
    "faaq_onnx/optimize/scaling.py": ["tests/optimize/test_scaling.py"],
    "faaq_onnx/optimize/unit_data.py": ["tests/optimize/test_unit_data.py", *_ROUND],
    "faaq_onnx/optimize/units.py": [*_ROUND],
    # passes/
    "faaq_onnx/passes/canonicalize.py": [*_CANON],
    "faaq_onnx/passes/cle.py": ["tests/passes/test_cle.py"],
    "faaq_onnx/passes/emit_activations.py": [
        "tests/passes/test_emit_activations.py",
        "tests/passes/test_emit_qdq.py",
    ],
    "faaq_onnx/passes/emit_matmulnbits.py": [
        "tests/passes/test_emit_matmulnbits.py",
        "tests/passes/test_matmulnbits_gemm_attrs.py",
        "tests/runtime/test_kernels.py",
    ],
    "faaq_onnx/passes/emit_qdq.py": ["tests/passes/test_emit_qdq.py"],
    "faaq_onnx/passes/emit_weights.py": [
        "tests/passes/test_emit_weights.py",
        "tests/passes/test_emit_qdq.py",
    ],
    "faaq_onnx/passes/fold_batchnorm.py": ["tests/passes/test_fold_batchnorm.py", *_CANON],
    "faaq_onnx/passes/fold_pad.py": ["tests/passes/test_fold_pad.py", *_CANON],
    "faaq_onnx/passes/spatial_mean.py": ["tests/passes/test_spatial_mean.py", *_CANON],
    "faaq_onnx/passes/unshare_bias.py": ["tests/passes/test_unshare_bias.py", *_CANON],
    "faaq_onnx/passes/drop_noop_arith.py": ["tests/passes/test_drop_noop_arith.py", *_CANON],
    "faaq_onnx/passes/fold_conv_affine.py": ["tests/passes/test_fold_conv_affine.py", *_CANON],
    "faaq_onnx/passes/emit_constants.py": [
        "tests/passes/test_emit_constants.py",
        "tests/passes/test_emit_qdq.py",
    ],
    "faaq_onnx/passes/decompose_hardswish.py": [
        "tests/passes/test_decompose_hardswish.py",
        *_CANON,
        "tests/test_foreign_graphs.py",
    ],
    "faaq_onnx/passes/fuse_matmul_add.py": ["tests/passes/test_fuse_matmul_add.py", *_CANON],
    "faaq_onnx/passes/simplify.py": [*_CANON],
    "faaq_onnx/passes/sample_axis.py": [
        "tests/passes/test_sample_axis.py",
        "tests/runtime/test_runner.py",
        "tests/test_foreign_graphs.py",
    ],
    "faaq_onnx/passes/upgrade_opset.py": [*_CANON],
    # runtime/
    "faaq_onnx/runtime/capabilities.py": [
        "tests/runtime/test_capabilities.py",
        "tests/quant/test_reduce_range.py",
        "tests/passes/test_emit_qdq.py",
        *_CLI,
    ],
    "faaq_onnx/runtime/kernels.py": [
        "tests/runtime/test_kernels.py",
        "tests/runtime/test_kernels_fate.py",
        "tests/test_foreign_graphs.py",
        "tests/stages/test_branches.py",
    ],
    "faaq_onnx/runtime/kernel_summary.py": [
        "tests/runtime/test_kernels.py",
        "tests/test_foreign_graphs.py",
    ],
    "faaq_onnx/runtime/node_costs.py": [
        "tests/runtime/test_node_costs.py",
        "tests/analysis/test_allocate.py",
        "tests/test_guarantees.py",
        *_CLI,
    ],
    "faaq_onnx/runtime/probe_session.py": [
        "tests/runtime/test_probe_session.py",
        "tests/analysis/test_probe.py",
        "tests/analysis/test_sensitivity.py",
    ],
    "faaq_onnx/runtime/profile.py": ["tests/runtime/test_profile.py", "tests/runtime/test_cuda.py"],
    "faaq_onnx/runtime/runner.py": [
        "tests/runtime/test_runner_batches.py",
        "tests/runtime/test_runner.py",
        "tests/test_pipeline.py",
    ],
    "faaq_onnx/runtime/segments.py": [
        "tests/runtime/test_segments.py",
        "tests/runtime/test_segments_state.py",
        "tests/runtime/test_spill.py",
        "tests/optimize/test_gptq.py",
        "tests/optimize/test_bias_correction.py",
    ],
    "faaq_onnx/runtime/spill.py": [
        "tests/runtime/test_spill.py",
        "tests/runtime/test_segments.py",
        "tests/optimize/test_bias_correction.py",
    ],
    "faaq_onnx/runtime/session.py": [
        "tests/runtime/test_session.py",
        "tests/runtime/test_runner.py",
        "tests/runtime/test_timing.py",
        "tests/passes/test_emit_matmulnbits.py",
        "tests/test_pipeline.py",
    ],
    "faaq_onnx/runtime/timing.py": ["tests/runtime/test_timing.py"],
    "faaq_onnx/runtime/workers.py": [
        "tests/runtime/test_ray_address.py",
        "tests/runtime/test_workers.py",
    ],
    # stages/ (each run by pipeline.Compilation)
    "faaq_onnx/stages/prepare.py": [
        "tests/stages/test_stage_prepare.py",
        *_PIPE,
        "tests/optimize/test_scaling.py",
        *_ROUND,
        "tests/runtime/test_probe_session.py",
    ],
    "faaq_onnx/stages/weights.py": [
        "tests/stages/test_stage_weights.py",
        *_PIPE,
        *_ROUND,
        "tests/optimize/test_bias_correction.py",
        "tests/optimize/test_gptq.py",
    ],
    "faaq_onnx/stages/sweep.py": [
        *_PIPE,
        "tests/analysis/test_sensitivity.py",
        "tests/analysis/test_fisher.py",
        "tests/runtime/test_workers.py",
    ],
    "faaq_onnx/stages/allocation.py": [
        "tests/stages/test_stage_allocation.py",
        *_PIPE,
        "tests/analysis/test_allocate.py",
        *_CLI,
    ],
    "faaq_onnx/stages/emission.py": [*_PIPE, "tests/passes/test_emit_qdq.py"],
    "faaq_onnx/stages/effort.py": ["tests/stages/test_effort.py"],
    "faaq_onnx/stages/branches.py": [
        "tests/stages/test_branches.py",
        "tests/test_foreign_graphs.py",
    ],
    # zoo/
    "faaq_onnx/zoo/cifar.py": ["tests/zoo/test_cifar_blocks.py", *_ZOO],
    "faaq_onnx/zoo/digits.py": [*_ZOO],
    "faaq_onnx/zoo/efficientnet.py": ["tests/zoo/test_efficientnet.py", "tests/zoo/test_zoo.py"],
    "faaq_onnx/zoo/exporter.py": ["tests/zoo/test_exporter_fold_pads.py", *_ZOO],
    "faaq_onnx/zoo/imagenet.py": ["tests/zoo/test_imagenet_blocks.py", *_ZOO],
    "faaq_onnx/zoo/registry.py": ["tests/zoo/test_registry_weights.py", *_ZOO],
    # top level
    "faaq_onnx/config.py": [
        "tests/test_config.py",
        "tests/analysis/test_coverage.py",
        "tests/test_pipeline.py",
        "tests/quant/test_reduce_range.py",
        "tests/test_guarantees.py",
        *_CLI,
    ],
    "faaq_onnx/errors.py": ["tests/test_model_io.py", "tests/data/test_data.py"],
    "faaq_onnx/evaluate.py": [
        "tests/test_evaluate.py",
        "tests/test_guarantees.py",
        "tests/test_reliability.py",
        "tests/cli/test_cli.py::test_eval_reports_accuracy_and_drop",
    ],
    "faaq_onnx/external_data.py": [
        "tests/test_external_data.py",
        "tests/test_model_io.py",
        "tests/test_outputs.py",
        "tests/test_guarantees.py",
    ],
    "faaq_onnx/graph.py": [
        "tests/test_graph.py",
        "tests/test_graph_external.py",
        "tests/passes/test_canonicalize.py",
        "tests/passes/test_cle.py",
        "tests/test_pipeline.py",
        # is_float_activation, known_rank
        "tests/analysis/test_discover.py",
        "tests/analysis/test_coverage.py",
        "tests/passes/test_drop_noop_arith.py",
        "tests/passes/test_spatial_mean.py",
    ],
    "faaq_onnx/groups.py": [
        "tests/test_groups.py",
        "tests/analysis/test_discover.py",
        "tests/analysis/test_allocate.py",
        "tests/analysis/test_sensitivity.py",
    ],
    "faaq_onnx/guarantees.py": ["tests/test_guarantees.py"],
    "faaq_onnx/inputs.py": ["tests/test_inputs.py", *_PIPE, *_CLI],
    "faaq_onnx/model_io.py": ["tests/test_model_io.py", *_CANON],
    "faaq_onnx/outputs.py": [
        "tests/test_outputs.py",
        "tests/test_outputs_edges.py",
        "tests/test_pipeline.py",
        *_CLI,
    ],
    "faaq_onnx/pipeline.py": [
        "tests/test_pipeline_requests.py",
        *_PIPE,
        "tests/analysis/test_allocate.py",
        "tests/analysis/test_sensitivity.py",
        "tests/analysis/test_fisher.py",
        "tests/analysis/test_transformer.py",
        "tests/optimize/test_bias_correction.py",
        "tests/optimize/test_scaling.py",
        *_ROUND,
        "tests/passes/test_emit_qdq.py",
        "tests/runtime/test_probe_session.py",
        *_CLI,
        "tests/runtime/test_workers.py",
    ],
    "faaq_onnx/plan.py": [
        "tests/test_plan.py",
        "tests/test_pipeline.py",
        "tests/passes/test_emit_qdq.py",
        "tests/test_guarantees.py",
    ],
    "faaq_onnx/reliability.py": ["tests/test_reliability_draws.py", "tests/test_reliability.py"],
    "faaq_onnx/report.py": [
        "tests/test_report.py",
        "tests/passes/test_emit_qdq.py",
        "tests/test_pipeline.py",
        "tests/test_outputs.py",
        *_CLI,
    ],
    "faaq_onnx/results.py": ["tests/test_report.py", *_PIPE],
    # WeightCache, moved here from optimize/weights.py (now a re-export with no mutation point)
    "faaq_onnx/weight_cache.py": [
        "tests/test_weight_cache.py",
        "tests/optimize/test_gptq.py",
        *_ROUND,
        "tests/analysis/test_sensitivity.py",
    ],
}

SWAP_BIN = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
    ast.Pow: ast.Mult,
}
SWAP_CMP = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
}


def mutation_points(tree: ast.AST) -> list[tuple[int, str]]:
    """(index among nodes walked, description) of every mutable spot."""
    points = []
    for i, node in enumerate(ast.walk(tree)):
        if isinstance(node, ast.BinOp) and type(node.op) in SWAP_BIN:
            points.append((i, f"{type(node.op).__name__} -> {SWAP_BIN[type(node.op)].__name__}"))
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in SWAP_CMP:
            points.append(
                (i, f"{type(node.ops[0]).__name__} -> {SWAP_CMP[type(node.ops[0])].__name__}")
            )
        elif isinstance(node, ast.BoolOp):
            points.append(
                (
                    i,
                    f"{type(node.op).__name__} -> {'Or' if isinstance(node.op, ast.And) else 'And'}",
                )
            )
        elif (
            isinstance(node, ast.Constant)
            and type(node.value) in (int, float)
            and not isinstance(node.value, bool)
        ):
            points.append((i, f"constant {node.value!r} -> {node.value!r} + 1"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            points.append((i, f"{node.value} -> {not node.value}"))
        elif isinstance(node, ast.If):
            points.append((i, "if condition negated"))
    return points


def _short(text: str, n: int = 140) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def mutate(source: str, index: int) -> tuple[str, int, str, str]:
    """(mutated source, line, expression before, expression after) of mutation point `index`."""
    tree = ast.parse(source)
    for i, node in enumerate(ast.walk(tree)):
        if i != index:
            continue
        line = getattr(node, "lineno", 0)
        target = node.test if isinstance(node, ast.If) else node
        before = ast.unparse(target)
        if isinstance(node, ast.BinOp):
            node.op = SWAP_BIN[type(node.op)]()
        elif isinstance(node, ast.Compare):
            node.ops = [SWAP_CMP[type(node.ops[0])]()]
        elif isinstance(node, ast.BoolOp):
            node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            node.value = not node.value
        elif isinstance(node, ast.Constant):
            node.value = node.value + 1
        elif isinstance(node, ast.If):
            node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
        after = ast.unparse(node.test if isinstance(node, ast.If) else node)
        return ast.unparse(tree), line, _short(before), _short(after)
    raise IndexError(index)


def package_of(module: str) -> str:
    parts = module.split("/")
    return "/".join(parts[:2]) if len(parts) > 2 else f"{PACKAGE} (top level)"


def run_pytest(
    repo: Path, env: dict, args: list[str], timeout: float
) -> tuple[str, int | None, str, float]:
    """Run pytest in its own process group: (status ok|timeout, returncode, output, seconds)."""
    t0 = time.perf_counter()
    cmd = [
        "nice",
        "-n",
        "10",
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:warnings",
        "-p",
        "no:cacheprovider",
        f"--basetemp={repo.parent / 'pytest-tmp'}",
        *args,
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return "ok", proc.returncode, out, time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return "timeout", None, out or "", time.perf_counter() - t0


def first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return _short(line, 200)
    return ""


def baseline(
    repo: Path, env: dict, files: list[str], timeout: float
) -> tuple[set[str], dict[str, float], float]:
    """Run the needed test files once unmutated: (failing node ids, seconds per file, wall seconds)."""
    xml = repo.parent / "baseline.xml"
    status, rc, out, secs = run_pytest(repo, env, ["-q", f"--junitxml={xml}", *files], timeout)
    if status != "ok" or rc not in (0, 1) or not xml.exists():
        raise SystemExit(
            f"baseline test run did not complete (status {status}, rc {rc}):\n{out[-3000:]}"
        )
    failing, per_file = set(), defaultdict(float)
    for case in ET.parse(xml).getroot().iter("testcase"):
        parts, name = case.get("classname", "").split("."), case.get("name", "")
        # tests.quant.test_affine[.TestClass] -> tests/quant/test_affine.py[::TestClass]
        cut = next(
            (
                i
                for i in range(len(parts), 0, -1)
                if (repo / ("/".join(parts[:i]) + ".py")).is_file()
            ),
            len(parts),
        )
        path = "/".join(parts[:cut]) + ".py"
        name = "::".join([*parts[cut:], name])
        per_file[path] += float(case.get("time", 0) or 0)
        if case.find("failure") is not None or case.find("error") is not None:
            failing.add(f"{path}::{name}")
    return failing, dict(per_file), secs


def expand(test_args: list[str], repo: Path) -> list[str]:
    """Test files a TARGETS entry names (folders expanded), for the baseline's per-file times."""
    files = []
    for arg in test_args:
        p = repo / arg.split("::")[0]
        files += (
            sorted(str(f.relative_to(repo)) for f in p.rglob("test_*.py"))
            if p.is_dir()
            else [str(p.relative_to(repo))]
        )
    return list(dict.fromkeys(files))


def write_outputs(name: str, meta: dict, results: list[dict], done: bool) -> None:
    killed = [r for r in results if r["outcome"].startswith("killed")]
    counted = [r for r in results if r["outcome"] != "error"]
    score = len(killed) / max(len(counted), 1)

    def table(key):
        groups = defaultdict(list)
        for r in counted:
            groups[key(r)].append(r)
        rows = []
        for g in sorted(groups):
            rs = groups[g]
            k = sum(r["outcome"] == "killed" for r in rs)
            t = sum(r["outcome"] == "killed (timeout)" for r in rs)
            rows.append(
                {
                    "group": g,
                    "mutants": len(rs),
                    "killed": k,
                    "killed_timeout": t,
                    "survived": len(rs) - k - t,
                    "kill_rate": round((k + t) / len(rs), 3),
                }
            )
        return rows

    per_package, per_module = table(lambda r: package_of(r["module"])), table(lambda r: r["module"])
    survivors = [r for r in results if r["outcome"] == "survived"]
    payload = {
        **meta,
        "complete": done,
        "mutants": len(results),
        "counted": len(counted),
        "killed": len(killed),
        "killed_timeout": sum(r["outcome"] == "killed (timeout)" for r in results),
        "errors": sum(r["outcome"] == "error" for r in results),
        "score": round(score, 4),
        "per_package": per_package,
        "per_module": per_module,
        "survivors": [
            {k: r[k] for k in ("module", "line", "mutation", "before", "after", "code")}
            for r in survivors
        ],
        "results": results,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(payload, indent=1))

    def md_table(rows, label):
        out = [
            f"| {label} | mutants | killed | killed by timeout | survived | kill rate |",
            "|---|---|---|---|---|---|",
        ]
        out += [
            f"| {r['group']} | {r['mutants']} | {r['killed']} | {r['killed_timeout']} | {r['survived']} | "
            f"{100 * r['kill_rate']:.0f} % |"
            for r in rows
        ]
        return out

    md = [
        f"# Mutation score{'' if done else ' (INCOMPLETE: run still in progress or interrupted)'}",
        "",
        f"**{len(killed)} of {len(counted)} mutants killed ({100 * score:.1f} %)**"
        f" ({payload['killed_timeout']} of them by timeout; {payload['errors']} mutants could not be run and are"
        f" not counted)",
        "",
        f"- date: {meta['date']}, commit {meta['commit'][:12]} (scratch clone of HEAD; uncommitted changes in the "
        f"working tree are not measured)",
        f"- sample: {meta['sample']}; seed **{meta['seed']}** ({meta['seed_source']}); "
        f"{meta['points_in_scope']} mutation points in {meta['modules_in_scope']} modules in scope",
        f"- command: `{meta['command']}`",
        f"- replay this sample: `{meta['replay_command']}` (same commit)",
        f"- wall time: {meta.get('wall_seconds', 0):.0f} s (baseline {meta.get('baseline_seconds', 0):.0f} s); "
        f"machine: {meta['machine']}",
        f"- out of scope: {', '.join(meta['out_of_scope']) or 'none'} (no mutation point)",
        "",
    ]
    if meta.get("baseline_failures"):
        md += [
            "Tests that fail on the unmutated commit (deselected for every mutant, so they cannot kill one):",
            "",
        ]
        md += [f"- `{t}`" for t in meta["baseline_failures"]] + [""]
    md += [
        "## Per package",
        "",
        *md_table(per_package, "package"),
        "",
        "## Per module",
        "",
        *md_table(per_module, "module"),
        "",
        "## Surviving mutants (judge each: equivalent, or a gap in the tests)",
        "",
    ]
    md += [
        f"- `{r['module']}:{r['line']}` {r['mutation']}: `{r['before']}` -> `{r['after']}`  \n"
        f"  line: `{_short(r['code'], 120)}`"
        for r in survivors
    ] or ["- none"]
    errors = [r for r in results if r["outcome"] == "error"]
    if errors:
        md += ["", "## Mutants that could not be run (not counted)", ""]
        md += [f"- `{r['module']}:{r['line']}` {r['mutation']}: {r['killed_by']}" for r in errors]
    md += [
        "",
        "## All mutants",
        "",
        "| module:line | mutation | outcome | first failing test | s |",
        "|---|---|---|---|---|",
    ]
    md += [
        f"| {r['module']}:{r['line']} | {r['mutation']}: `{_short(r['before'], 50)}` -> `{_short(r['after'], 50)}`"
        f" | {r['outcome']} | {(r['killed_by'] or '').replace('|', '/')[:110]} | {r['seconds']} |"
        for r in results
    ]
    (OUT / f"{name}.md").write_text("\n".join(md) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--total",
        type=int,
        default=60,
        help="mutants drawn uniformly over every mutation point in scope (default 60)",
    )
    ap.add_argument(
        "--per-module", type=int, default=None, help="instead: this many mutants per module"
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=None,
        help="replay a sample (default: a fresh seed from os.urandom)",
    )
    ap.add_argument(
        "--modules",
        default=None,
        help="comma-separated module paths or folder prefixes (e.g. faaq_onnx/optimize) to restrict to",
    )
    ap.add_argument(
        "--timeout-factor",
        type=float,
        default=4.0,
        help="a mutant's timeout: this times its tests' unmutated run time, plus 60 s",
    )
    ap.add_argument("--min-timeout", type=float, default=120.0)
    ap.add_argument("--name", default="mutation_score", help="output basename under benchmarks/out")
    args = ap.parse_args()

    seed_source = "given with --seed" if args.seed is not None else "fresh from os.urandom"
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)

    scratch = Path(tempfile.mkdtemp(prefix="faaq-mutation-"))
    repo = scratch / "repo"
    assert ROOT not in repo.parents and repo != ROOT
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1"}
        where = subprocess.run(
            [sys.executable, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not Path(where).resolve().is_relative_to(repo.resolve()):
            raise SystemExit(
                f"tests would import {where}, not the scratch copy: mutants would not be seen"
            )

        # every module with a mutation point must have its tests named
        points, out_of_scope = {}, []
        for p in sorted((repo / PACKAGE).rglob("*.py")):
            mod = str(p.relative_to(repo))
            pts = mutation_points(ast.parse(p.read_text()))
            tree = ast.parse(p.read_text())
            if ast.dump(ast.parse(ast.unparse(tree))) != ast.dump(tree):
                raise SystemExit(
                    f"{mod}: ast.unparse does not round-trip; its mutants would change more than one spot"
                )
            if not pts:
                out_of_scope.append(mod)
            elif mod not in TARGETS:
                raise SystemExit(
                    f"{mod} has {len(pts)} mutation points but no TARGETS entry: name its tests"
                )
            else:
                points[mod] = pts
        for mod, tests in TARGETS.items():
            if mod not in points and mod not in out_of_scope:
                raise SystemExit(f"TARGETS names {mod}, which is not in the package")
            for t in tests:
                if not (repo / t.split("::")[0]).exists():
                    raise SystemExit(f"TARGETS[{mod}] names {t}, which does not exist")
        if args.modules:
            wanted = [m.strip().rstrip("/") for m in args.modules.split(",")]
            points = {
                m: p
                for m, p in points.items()
                if any(m == w or m.startswith(w + "/") for w in wanted)
            }
            if not points:
                raise SystemExit(f"no module matches {args.modules}")

        if args.per_module is not None:
            sample = [
                (m, pt)
                for m in points
                for pt in rng.sample(points[m], min(args.per_module, len(points[m])))
            ]
            sample_desc = f"{args.per_module} per module"
        else:
            allpts = [(m, pt) for m in points for pt in points[m]]
            sample = rng.sample(allpts, min(args.total, len(allpts)))
            sample_desc = (
                f"{len(sample)} drawn uniformly over all {len(allpts)} mutation points in scope"
            )
        order = {m: i for i, m in enumerate(points)}
        sample.sort(key=lambda mp: (order[mp[0]], mp[1][0]))

        size_flag = (
            f"--per-module {args.per_module}"
            if args.per_module is not None
            else f"--total {args.total}"
        )
        replay = f"python benchmarks/mutation_score.py {size_flag} --seed {seed}" + (
            f" --modules {args.modules}" if args.modules else ""
        )
        meta = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "commit": commit,
            "seed": seed,
            "seed_source": seed_source,
            "sample": sample_desc,
            "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
            "replay_command": replay,
            "machine": machine(),
            "points_in_scope": sum(map(len, points.values())),
            "modules_in_scope": len(points),
            "out_of_scope": out_of_scope,
            "operators": "BinOp swap (+-, */, //->*, **->*), comparison swap (< <=, > >=, == !=), and/or swap, "
            "numeric constant +1, bool flip, if-condition negated",
            "targets": {m: TARGETS[m] for m in sorted({m for m, _ in sample})},
        }
        print(f"seed {seed} ({seed_source}); {sample_desc}; commit {commit[:12]}", flush=True)

        t_all = time.perf_counter()
        needed = list(dict.fromkeys(f for m, _ in sample for f in expand(TARGETS[m], repo)))
        print(f"baseline: {len(needed)} test files unmutated ...", flush=True)
        failing, per_file, base_secs = baseline(repo, env, needed, timeout=3600)
        meta["baseline_failures"] = sorted(failing)
        meta["baseline_seconds"] = round(base_secs, 1)
        print(
            f"baseline done in {base_secs:.0f} s; {len(failing)} failing tests deselected",
            flush=True,
        )
        deselect = [f"--deselect={t}" for t in sorted(failing)]

        results: list[dict] = []
        for n, (mod, (index, desc)) in enumerate(sample, 1):
            path = repo / mod
            assert repo.resolve() in path.resolve().parents  # only ever the scratch copy
            original = path.read_text()
            mutated, line, before, after = mutate(original, index)
            tests = TARGETS[mod]
            expected = sum(per_file.get(f, 0.0) for f in expand(tests, repo))
            timeout = max(args.min_timeout, args.timeout_factor * expected + 60)
            path.write_text(mutated)
            try:
                status, rc, out, secs = run_pytest(
                    repo, env, ["-x", "-q", *deselect, *tests], timeout
                )
            finally:
                path.write_text(original)
            if status == "timeout":
                outcome, killed_by = "killed (timeout)", f"no result after {timeout:.0f} s"
            elif rc == 0:
                outcome, killed_by = "survived", ""
            elif rc in (1, 2):  # tests failed / collection (import) error caused by the mutant
                outcome, killed_by = (
                    "killed",
                    first_failure(out)
                    or _short(out.strip().splitlines()[-1] if out.strip() else ""),
                )
            else:  # 3 internal error, 4 usage error, 5 no tests: the harness, not the mutant
                outcome, killed_by = "error", f"pytest exit {rc}: {_short(out[-300:])}"
            row = {
                "module": mod,
                "line": line,
                "mutation": desc,
                "before": before,
                "after": after,
                "code": original.splitlines()[line - 1].strip() if line else "",
                "outcome": outcome,
                "killed_by": killed_by,
                "seconds": round(secs, 1),
                "timeout_s": round(timeout),
            }
            results.append(row)
            print(
                f"[{n}/{len(sample)}] {mod}:{line} {desc}: {outcome} ({secs:.0f} s) {killed_by[:100]}",
                flush=True,
            )
            meta["wall_seconds"] = round(time.perf_counter() - t_all, 1)
            write_outputs(args.name, meta, results, done=False)
        meta["wall_seconds"] = round(time.perf_counter() - t_all, 1)
        write_outputs(args.name, meta, results, done=True)
        print((OUT / f"{args.name}.md").read_text())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
