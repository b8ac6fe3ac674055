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

import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper

from faaq_onnx.analysis.coverage import ORT_INTEGER_CAPABLE
from faaq_onnx.errors import FaaqError
from faaq_onnx.graph import (
    POOL_AS_CONV,
    all_graphs,
    all_nodes,
    constant_tensors,
    subgraphs,
    through_cast,
)
from faaq_onnx.runtime.kernel_summary import (
    _DATA_MOVEMENT,
    _summary,
    _why_float,
    format_kernel_report,
    weighted_summary,
)
from faaq_onnx.runtime.profile import INTEGER_KERNELS, QDQ_OPS
from faaq_onnx.runtime.session import make_session

__all__ = ["compare_kernels", "format_kernel_report", "kernel_report", "weighted_summary"]


# ops that multiply by a weight: the ones whose kernel decides a quantized model's speed
WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "MatMulNBits"}

_TYPE_NAMES: dict[int, str] = {  # TensorProto.data_type -> name
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
    left_float = recorded_left_float(original)
    name = (
        str(model) if isinstance(model, (str, os.PathLike)) else (original.graph.name or "<model>")
    )
    return compare_kernels(original, optimized, ep, name, left_float)


def compare_kernels(
    original: onnx.ModelProto,
    optimized: onnx.ModelProto,
    ep: str = "cpu",
    name: str = "<model>",
    left_float: dict[str, str] | None = None,
) -> dict:
    """kernel_report for a model and the graph ORT saved for it (optimized_model_filepath).
    Nodes inside If/Loop/Scan bodies count as well (faaq quantizes inside If branches).
    `left_float` (node -> why, from discovery) names the reason for ops ORT could run on an
    integer kernel that the quantizer gave no Q/DQ; without it they are listed as unquantized."""
    original, optimized = _flattened(original), _flattened(optimized)
    # exporters (and quantizers run on their files) keep weights in Constants too
    inits = constant_tensors(original.graph)
    producer = {o: n for n in original.graph.node for o in n.output}
    quantized_outputs = {n.input[0] for n in original.graph.node if n.op_type == "QuantizeLinear"}
    opt_nodes = list(optimized.graph.node)
    by_name = {n.name: n for n in opt_nodes}
    by_output = {o: n for n in opt_nodes for o in n.output}
    made = _made_by_ort(by_name, original)

    quantized, moved = [], []
    for node in original.graph.node:
        if node.op_type in QDQ_OPS:
            continue
        if node.op_type in INTEGER_KERNELS:  # already in integer form (e.g. our MatMulNBits)
            runs_as = _fate(node, by_name, by_output, original, made=made)
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
            src, via_cast = through_cast(dq.input[0], producer, inits)
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
        runs_as = _fate(node, by_name, by_output, original, made=made)
        integer = runs_as is not None and runs_as in INTEGER_KERNELS
        as_pool = node.doc_string == POOL_AS_CONV  # emit_avgpool: the pool, not a weighted op
        entry = {
            "node": node.name,
            "op_type": "AveragePool" if as_pool else node.op_type,
            "weight_type": weight_type,
            "activation_type": act_type,
            "runs_as": runs_as or "removed by the optimizer",
            "integer_kernel": integer,
            "weighted": node.op_type in WEIGHTED_OPS and weight_type is not None and not as_pool,
        }
        if node.op_type in _DATA_MOVEMENT and not integer:
            moved.append(entry)  # reads a quantized tensor, computes nothing: no kernel to want
            continue
        if not integer and left_float and node.name in left_float:
            entry["why_float"] = left_float[node.name]  # the quantizer's decision, not ORT's
        elif not integer:
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

    unquantized = _unquantized(original, quantized, moved, by_name, by_output, left_float, made)
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
        "unquantized_nodes": unquantized,
        "summary": _summary(quantized, qdq_after, len(moved), unquantized),
    }


def _unquantized(
    original: onnx.ModelProto,
    quantized: list[dict],
    moved: list[dict],
    by_name: dict,
    by_output: dict,
    left_float: dict[str, str] | None,
    made: dict,
) -> list[dict]:
    """Ops of a quantized model that ORT could run on an integer kernel but that read no
    DequantizeLinear, with what ORT runs them as and, where the quantizer said, why."""
    if not any(n.op_type in QDQ_OPS for n in original.graph.node):
        return []  # a float model: nothing was quantized, nothing was left out
    seen = {q["node"] for q in quantized} | {m["node"] for m in moved}
    if left_float is not None:  # the quantizer said which ops it left float: those
        candidates = [n for n in original.graph.node if n.name in left_float and n.name not in seen]
    else:
        floats = _float_values(original)
        candidates = [
            n
            for n in original.graph.node
            if n.domain in ("", "ai.onnx")
            and n.op_type in ORT_INTEGER_CAPABLE
            and n.name not in seen
            and any(i in floats for i in n.input)
        ]
    out = []
    for node in candidates:
        runs_as = _fate(node, by_name, by_output, original, follow_q=False, made=made)
        if runs_as in INTEGER_KERNELS:
            continue  # fused into a neighbour (a bias Add into MatMulIntegerToFloat): no op of its own
        if runs_as is None and left_float is None:
            continue  # folded away by ORT, and no quantizer's decision to name
        why = (left_float or {}).get(node.name, "no quantized input: no Q/DQ around it")
        out.append(
            {
                "node": node.name,
                "op_type": node.op_type,
                "runs_as": runs_as or "removed by the optimizer (fused into another op)",
                "why_float": why,
            }
        )
    return out


def _float_values(model: onnx.ModelProto) -> set[str]:
    """Names of the float activations of a model (not initializers or Constant outputs), by shape
    inference; a tensor whose type inference cannot tell counts as float."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # a model onnx cannot infer: every activation may be float
        inferred = model
    typed = {
        v.name: v.type.tensor_type.elem_type
        for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    }
    fixed = {t.name for t in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type == "Constant" for o in n.output
    }
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    names = {i for n in model.graph.node for i in n.input if i} | {
        i.name for i in model.graph.input
    }
    return {
        x
        for x in names - fixed
        if typed.get(x, onnx.TensorProto.FLOAT) in float_types or not typed.get(x)
    }


def _flattened(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with the nodes and initializers of every subgraph listed in its main graph
    (names are unique across a model's scopes), for counting; the model itself if it has none."""
    if not any(subgraphs(n) for n in model.graph.node):
        return model
    flat = onnx.ModelProto()
    flat.graph.node.extend(all_nodes(model.graph))
    flat.graph.initializer.extend(t for g in all_graphs(model.graph) for t in g.initializer)
    return flat


#: metadata_props key of the ops faaq left float on purpose, with why ({node: reason} as JSON)
LEFT_FLOAT_KEY = "faaq.left_float"


def record_left_float(proto: onnx.ModelProto, left_float: dict[str, str]) -> None:
    """Write discovery's reasons into the model, so `faaq inspect --kernels` on the written file
    names them as the quantize summary did (only nodes still in the model)."""
    names = {n.name for n in all_nodes(proto.graph)}  # If branches included
    kept = {k: v for k, v in left_float.items() if k in names}
    for i in reversed(range(len(proto.metadata_props))):  # a model quantized before had one
        if proto.metadata_props[i].key == LEFT_FLOAT_KEY:
            del proto.metadata_props[i]
    if kept:
        proto.metadata_props.add(key=LEFT_FLOAT_KEY, value=json.dumps(kept, sort_keys=True))


def recorded_left_float(model: onnx.ModelProto) -> dict[str, str] | None:
    """The reasons record_left_float wrote, or None (a model faaq did not write)."""
    for p in model.metadata_props:
        if p.key == LEFT_FLOAT_KEY:
            try:
                return {str(k): str(v) for k, v in json.loads(p.value).items()}
            except (ValueError, AttributeError):
                return None
    return None


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


def _made_by_ort(by_name: dict, original: onnx.ModelProto) -> dict:
    """The optimized graph's nodes the original graph has no node of that name for: those ORT
    made (a node of the original graph is its own, not one made from another: TF names nest,
    '.../convolution' and its '.../convolution/ExpandDims')."""
    own = {n.name for n in original.graph.node}
    return {name: n for name, n in by_name.items() if name not in own}


def _fate(
    node: onnx.NodeProto,
    by_name: dict,
    by_output: dict,
    original: onnx.ModelProto,
    follow_q: bool = True,
    made: dict | None = None,
) -> str | None:
    """The op that runs this node after optimization: same name, a fused '<name>_token_N',
    or whatever now produces its output (or the output of the QuantizeLinear after it).
    `made`: _made_by_ort(by_name, original), computed once by a caller asking for many nodes."""
    if node.name and node.name in by_name:
        return by_name[node.name].op_type
    if node.name:
        made = _made_by_ort(by_name, original) if made is None else made
        for suffixes in (("_token_", "_nchwc"), ("/",)):  # e.g. 'mm1/MatMulAddFusion' last
            for name, n in made.items():
                if any(name.startswith(node.name + x) for x in suffixes):
                    return n.op_type
    outs = list(node.output)
    for n in original.graph.node if follow_q else ():
        if n.op_type == "QuantizeLinear" and n.input and n.input[0] in outs:
            outs.extend(n.output)
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
