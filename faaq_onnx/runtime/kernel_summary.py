"""The words of a kernel report: why a quantized op runs as float, and the summary lines.

Split from kernels.py (which finds what ORT runs for each node) so that each stays readable.
"""

from __future__ import annotations

from collections import Counter

from faaq_onnx.runtime.profile import QDQ_OPS

# ops that only move or reshape data: Q/DQ around them is normal and usually dropped
_DATA_MOVEMENT = {
    "Reshape",
    "Transpose",
    "Slice",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Gather",
    "Pad",
    "MaxPool",
    "Identity",
    "Split",
    "Expand",
    "Shape",
    "Tile",
    "Resize",
    "DepthToSpace",
    "SpaceToDepth",
    "Relu",
    "Clip",
    "Size",
    "GlobalMaxPool",
}


def format_kernel_report(report: dict) -> str:
    """Plain text for `faaq inspect --kernels`."""
    lines = [f"kernels ORT runs for {report['model']} on {report['ep']} (optimization level all)"]
    lines += [f"  {s}" for s in report["summary"]]
    keys = sorted(
        set(report["ops_before"]) | set(report["ops_after"]),
        key=lambda k: -(report["ops_after"].get(k, 0) + report["ops_before"].get(k, 0)),
    )
    w = max([len(k) for k in keys] + [7])
    lines.append("")
    lines.append(f"  {'op type'.ljust(w)}  before  after  kind")
    for k in keys:
        kind = "int" if k in report["integer_ops_after"] else "q/dq" if k in QDQ_OPS else "float"
        lines.append(
            f"  {k.ljust(w)}  {report['ops_before'].get(k, 0):6d}  {report['ops_after'].get(k, 0):5d}  {kind}"
        )
    groups = Counter(
        (q["op_type"], q["weight_type"], q["activation_type"], q["runs_as"])
        for q in report["quantized_nodes"]
    )
    if groups:
        lines.append("")
        lines.append("  quantized nodes of the input and what runs them:")
        for (op, wt, at, runs), n in groups.most_common():
            what = f"{op} (weights {wt or '-'}, activations {at or 'float'})"
            lines.append(f"    {n:4d} x {what} -> {runs}")
    return "\n".join(lines)


def _why_float(
    op: str,
    weight_type: str | None,
    act_type: str | None,
    blocked: bool,
    runs_as: str | None,
    clipped: bool = False,
    output_float: bool = False,
) -> str:
    """Why a quantized node did not get an integer kernel: the first cause that applies."""
    if runs_as is None:
        return "removed by the optimizer"
    if act_type in ("int16", "uint16"):
        return "16-bit activations: ORT's CPU EP has no int16 kernel, the Q/DQ pair runs around a float op"
    if clipped:
        return (
            "activations below 8 bits: the Clip that bounds them to their own range sits between the op "
            "and its QuantizeLinear, and ORT has no integer kernel for such narrow activations"
        )
    if blocked:
        return "blocked weight scales: no fused integer kernel (MatMulNBits takes blocked MatMul weights)"
    if (
        weight_type
        and weight_type.split()[0] in ("int4", "uint4", "int2", "uint2")
        and "cast" not in weight_type
    ):
        return (
            f"DequantizeLinear({weight_type}) is never fused by ORT: the weight is dequantized on every run "
            "(use --weight-storage cast)"
        )
    if op in _DATA_MOVEMENT:
        return "data movement: no integer kernel needed"
    if act_type is None and weight_type is None:
        return "no quantized data input"
    if output_float:
        return (
            f"its output is not quantized (only float ops read it), so ORT runs {op} in float "
            "between its DequantizeLinear inputs"
        )
    return f"ORT has no integer kernel for {op} with these inputs"


def weighted_summary(quantized: list[dict]) -> dict:
    """How many ops with a quantized weight run on integer kernels, and which do not.

    The acceptance measure against other quantizers: the weighted ops decide the speed,
    and a quantizer that leaves one on a float kernel pays for its Q/DQ for nothing."""
    weighted = [q for q in quantized if q.get("weighted")]
    return {
        "total": len(weighted),
        "integer": sum(q["integer_kernel"] for q in weighted),
        "float": [
            {
                "node": q["node"],
                "op_type": q["op_type"],
                "runs_as": q["runs_as"],
                "why_float": q.get("why_float"),
            }
            for q in weighted
            if not q["integer_kernel"]
        ],
    }


def _summary(
    quantized: list[dict], qdq_after: dict, n_moved: int = 0, unquantized: list[dict] | None = None
) -> list[str]:
    """'all N quantized ops on integer kernels', or the exceptions grouped by cause; then the ops
    ORT could have run on integer kernels that were not quantized, grouped by why."""
    lines = []
    fused = sum(q["integer_kernel"] for q in quantized)
    exceptions = [q for q in quantized if not q["integer_kernel"]]
    if not exceptions:
        lines.append(f"all {len(quantized)} quantized ops on integer kernels")
    else:
        lines.append(
            f"{fused} of {len(quantized)} quantized ops on integer kernels; {len(exceptions)} run as float:"
        )
        causes = Counter((q["op_type"], q["runs_as"], q["why_float"]) for q in exceptions)
        for (op, runs, why), n in sorted(causes.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {n} x {op} -> {runs}: {why}")
    if unquantized:
        lines.append(
            f"{len(unquantized)} op(s) ORT has integer kernels for were not quantized (float):"
        )
        causes = Counter((q["op_type"], q["runs_as"], q["why_float"]) for q in unquantized)
        for (op, runs, why), n in sorted(causes.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {n} x {op} -> {runs}: {why}")
    w = weighted_summary(quantized)
    if w["total"]:
        lines.append(
            f"weighted ops (Conv, Gemm, MatMul): {w['integer']} of {w['total']} on integer kernels"
        )
    if n_moved:
        lines.append(
            f"{n_moved} data-movement op(s) (Reshape, Slice, Pad, ...) read quantized tensors"
        )
    n_dq = qdq_after.get("DequantizeLinear", 0)
    n_q = qdq_after.get("QuantizeLinear", 0)
    if n_dq or n_q:
        lines.append(
            f"{n_dq} DequantizeLinear and {n_q} QuantizeLinear nodes still run on every inference"
        )
    return lines
