"""Which quantized nodes ONNX Runtime really runs as integer kernels.

A QDQ model only says what *may* run in integer arithmetic; ORT's graph optimizer
decides what does, by fusing DequantizeLinear -> op -> QuantizeLinear into QLinearConv,
QGemm, MatMulNBits, ... and leaving everything else as a float op behind a
DequantizeLinear that runs on every inference. A 4-bit Conv weight, for instance, has
no integer kernel on the CPU: it shrinks the file but runs as a float Conv. This
module saves the graph ORT actually executes and compares it with the input, so that
difference is stated rather than discovered in a latency table.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper

from faaq_onnx.errors import FaaqError
from faaq_onnx.graph import all_graphs, all_nodes, subgraphs
from faaq_onnx.runtime.profile import INTEGER_KERNELS, QDQ_OPS
from faaq_onnx.runtime.session import make_session

__all__ = ["format_kernel_report", "kernel_report"]

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

# ops that multiply by a weight: the ones whose kernel decides a quantized model's speed
WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "MatMulNBits"}

_TYPE_NAMES = {
    onnx.TensorProto.INT2: "int2",
    onnx.TensorProto.UINT2: "uint2",
    onnx.TensorProto.INT4: "int4",
    onnx.TensorProto.UINT4: "uint4",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.UINT16: "uint16",
    onnx.TensorProto.INT32: "int32",
}


def kernel_report(model, ep: str = "cpu") -> dict:
    """Compare a QDQ model with the graph ORT executes for it (optimization level 'all').

    ``model`` is a path or an onnx.ModelProto. The result says, per quantized node of
    the input (a compute node fed by a DequantizeLinear), whether ORT fused it into an
    integer kernel, and counts op types before and after optimization.
    """
    original = _load(model)
    with tempfile.TemporaryDirectory(prefix="faaq-kernels-") as tmp:
        opt_path = os.path.join(tmp, "optimized.onnx")
        payload = str(model) if isinstance(model, (str, os.PathLike)) else original
        make_session(payload, ep=ep, opt_level="all", optimized_model_path=opt_path)
        optimized = onnx.load(opt_path, load_external_data=False)
    name = (
        str(model) if isinstance(model, (str, os.PathLike)) else (original.graph.name or "<model>")
    )
    return compare_kernels(original, optimized, ep, name)


def compare_kernels(
    original: onnx.ModelProto, optimized: onnx.ModelProto, ep: str = "cpu", name: str = "<model>"
) -> dict:
    """kernel_report for a model and the graph ORT saved for it (optimized_model_filepath).
    Nodes inside If/Loop/Scan bodies count as well (faaq quantizes inside If branches)."""
    original, optimized = _flattened(original), _flattened(optimized)
    inits = {t.name: t for t in original.graph.initializer}
    for n in (
        original.graph.node
    ):  # exporters (and quantizers run on their files) keep weights in Constants
        if n.op_type == "Constant" and n.output and any(a.name == "value" for a in n.attribute):
            inits.setdefault(n.output[0], next(a.t for a in n.attribute if a.name == "value"))
    producer = {o: n for n in original.graph.node for o in n.output}
    quantized_outputs = {n.input[0] for n in original.graph.node if n.op_type == "QuantizeLinear"}
    opt_nodes = list(optimized.graph.node)
    by_name = {n.name: n for n in opt_nodes}
    by_output = {o: n for n in opt_nodes for o in n.output}

    quantized, moved = [], []
    for node in original.graph.node:
        if node.op_type in QDQ_OPS:
            continue
        if node.op_type in INTEGER_KERNELS:  # already in integer form (e.g. our MatMulNBits)
            runs_as = _fate(node, by_name, by_output, original)
            quantized.append(
                {
                    "node": node.name,
                    "op_type": node.op_type,
                    "weight_type": _nbits_type(node),
                    "activation_type": None,
                    "runs_as": runs_as or "removed by the optimizer",
                    "integer_kernel": runs_as in INTEGER_KERNELS,
                    "weighted": node.op_type in WEIGHTED_OPS,
                }
            )
            continue
        dq_inputs = [
            (i, producer[x])
            for i, x in enumerate(node.input)
            if x in producer and producer[x].op_type == "DequantizeLinear"
        ]
        if not dq_inputs:
            continue
        weight_type = act_type = None
        blocked = False
        for _i, dq in dq_inputs:
            src, via_cast = _through_cast(dq.input[0], producer, inits)
            q = producer.get(src)
            if (
                src not in inits
                and q is not None
                and q.op_type == "QuantizeLinear"
                and q.input[0] in inits
            ):
                # Q(constant float weight) -> DQ, as ORT's quantizer writes for weights held in Constant
                # nodes: ORT folds the Q at load, so the kernel sees a constant integer weight
                t = (
                    _TYPE_NAMES.get(inits[q.input[2]].data_type, "uint8")
                    if len(q.input) > 2 and q.input[2] in inits
                    else "uint8"
                )
                weight_type = weight_type or f"{t} (quantized at load)"
                continue
            if src in inits:
                if weight_type is None and inits[src].data_type != onnx.TensorProto.INT32:
                    t = _TYPE_NAMES.get(inits[src].data_type, str(inits[src].data_type))
                    weight_type = f"{t} (cast to int8)" if via_cast else t
                    blocked = any(a.name == "block_size" and a.i for a in dq.attribute)
            elif act_type is None:
                act_type = _activation_type(src, producer, inits)
        runs_as = _fate(node, by_name, by_output, original)
        integer = runs_as is not None and runs_as in INTEGER_KERNELS
        entry = {
            "node": node.name,
            "op_type": node.op_type,
            "weight_type": weight_type,
            "activation_type": act_type,
            "runs_as": runs_as or "removed by the optimizer",
            "integer_kernel": integer,
            "weighted": node.op_type in WEIGHTED_OPS and weight_type is not None,
        }
        if node.op_type in _DATA_MOVEMENT and not integer:
            moved.append(entry)  # reads a quantized tensor, computes nothing: no kernel to want
            continue
        if not integer:
            entry["why_float"] = _why_float(
                node.op_type,
                weight_type,
                act_type,
                blocked,
                runs_as,
                _narrow_activation(node, original),
                output_float=node.op_type not in WEIGHTED_OPS
                and not any(o in quantized_outputs for o in node.output),
            )
        quantized.append(entry)

    before = Counter(_qual(n) for n in original.graph.node)
    after = Counter(_qual(n) for n in opt_nodes)
    integer_after = {k: v for k, v in after.items() if k.split(".")[-1] in INTEGER_KERNELS}
    qdq_after = {k: v for k, v in after.items() if k in QDQ_OPS}
    float_after = {k: v for k, v in after.items() if k not in integer_after and k not in qdq_after}
    return {
        "model": name,
        "ep": ep,
        "ops_before": dict(before.most_common()),
        "ops_after": dict(after.most_common()),
        "integer_ops_after": integer_after,
        "qdq_ops_after": qdq_after,
        "float_ops_after": float_after,
        "quantized_nodes": quantized,
        "weighted_ops": weighted_summary(quantized),
        "data_movement_nodes": moved,
        "summary": _summary(quantized, qdq_after, len(moved)),
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


def _flattened(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with the nodes and initializers of every subgraph listed in its main graph
    (names are unique across a model's scopes), for counting; the model itself if it has none."""
    if not any(subgraphs(n) for n in model.graph.node):
        return model
    flat = onnx.ModelProto()
    flat.graph.node.extend(all_nodes(model.graph))
    flat.graph.initializer.extend(t for g in all_graphs(model.graph) for t in g.initializer)
    return flat


def _load(model) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.exists():
        raise FaaqError(f"model file not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several types
        raise FaaqError(
            f"{path} is not a readable ONNX model: {str(exc).splitlines()[0] if str(exc) else exc}"
        ) from exc


def _nbits_type(node: onnx.NodeProto) -> str | None:
    bits = next((a.i for a in node.attribute if a.name == "bits"), None)
    return f"uint{bits} (packed)" if bits else None


def _qual(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def _activation_type(src: str, producer: dict, inits: dict) -> str | None:
    """The container type of an activation DequantizeLinear's codes; with the width its integer
    Clip leaves them (faaq's A4/A6: Q -> Clip -> DQ), e.g. 'uint8 (4-bit codes)'."""
    q, narrow = producer.get(src), ""
    if (
        q is not None
        and q.op_type == "Clip"
        and len(q.input) == 3
        and set(q.input[1:]) <= set(inits)
    ):
        lo, hi = (int(onnx.numpy_helper.to_array(inits[b])) for b in q.input[1:])
        narrow = f" ({max(1, int(np.ceil(np.log2(hi - lo + 1))))}-bit codes)"
        q = producer.get(q.input[0])
    if q is None or q.op_type != "QuantizeLinear":
        return None
    if len(q.input) > 2 and q.input[2] in inits:
        return f"{_TYPE_NAMES.get(inits[q.input[2]].data_type)}{narrow}"
    return f"uint8{narrow}"


def _fate(
    node: onnx.NodeProto, by_name: dict, by_output: dict, original: onnx.ModelProto
) -> str | None:
    """The op that runs this node after optimization: same name, a fused '<name>_token_N',
    or whatever now produces its output (or the output of the QuantizeLinear after it)."""
    if node.name and node.name in by_name:
        return by_name[node.name].op_type
    if node.name:
        for name, n in by_name.items():
            if (
                name.startswith(node.name + "_token_")
                or name.startswith(node.name + "_nchwc")
                or name.startswith(node.name + "/")
            ):  # e.g. 'mm1/MatMulAddFusion'
                return n.op_type
    outs = set(node.output)
    for n in original.graph.node:
        if n.op_type == "QuantizeLinear" and n.input and n.input[0] in outs:
            outs.update(n.output)
    for o in outs:
        if o in by_output:
            return by_output[o].op_type
    return None


def _narrow_activation(node: onnx.NodeProto, model: onnx.ModelProto) -> bool:
    """True when the node's output (or its input activation) passes a Clip before a QuantizeLinear."""
    consumers: dict[str, list] = {}
    producer = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for c in consumers.get(node.output[0], []) if node.output else []:
        if c.op_type == "Clip" and any(
            q.op_type == "QuantizeLinear" for q in consumers.get(c.output[0], [])
        ):
            return True
    for i in node.input:  # DQ <- Q <- Clip: the input activation is narrow
        dq = producer.get(i)
        q = (
            producer.get(dq.input[0])
            if dq is not None and dq.op_type == "DequantizeLinear"
            else None
        )
        clip = producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
        if clip is not None and clip.op_type == "Clip":
            return True
    return False


def _through_cast(name: str, producer: dict, inits: dict) -> tuple[str, bool]:
    """The initializer behind a Cast (faaq's packed-weight storage), if there is one."""
    cast = producer.get(name)
    if cast is not None and cast.op_type == "Cast" and cast.input and cast.input[0] in inits:
        return cast.input[0], True
    return name, False


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


def _summary(quantized: list[dict], qdq_after: dict, n_moved: int = 0) -> list[str]:
    """'all N quantized ops on integer kernels', or the exceptions grouped by cause."""
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
