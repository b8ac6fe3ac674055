"""Read a model file and refuse what we cannot quantize, with one clear line.

Checks happen here, before any work, so that a bad input never gets as far as
producing output.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from faaq_onnx.errors import FaaqError
from faaq_onnx.graph import all_nodes

# Opsets ONNX Runtime 1.2x-1.3x implements for the default domain.
MIN_OPSET = 7
MAX_OPSET = 23
_KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}


# ops only a quantized model has: Q/DQ pairs, ORT's integer kernels, packed low-bit MatMuls
QUANTIZED_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "ConvInteger",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
    "MatMulNBits",
    "QGemm",
    "QAttention",
}


def load_float_model(path: str | os.PathLike) -> ir.Model:
    """load_model, refusing a model that is quantized already (quantize and analyze start from
    the float model; a second pass would quantize the first one's dequantized weights)."""
    model = load_model(path)
    found: dict[str, int] = {}
    for node in ir.traversal.RecursiveGraphIterator(model.graph):  # If branches included
        if node.op_type in QUANTIZED_OPS or node.op_type.startswith("QLinear"):
            found[node.op_type] = found.get(node.op_type, 0) + 1
    if found:
        what = ", ".join(f"{n} {op}" for op, n in sorted(found.items(), key=lambda x: -x[1])[:3])
        raise FaaqError(
            f"{path} is quantized already ({what}): faaq quantizes float models; give it the "
            "float model this one was made from"
        )
    return model


def load_model(path: str | os.PathLike) -> ir.Model:
    """Load (external data included), check, and convert to the IR."""
    path = Path(path)
    if not path.is_file():
        raise FaaqError(f"model file not found: {path}")
    if path.stat().st_size == 0:
        raise FaaqError(f"{path} is empty, not an ONNX model")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as exc:
        raise FaaqError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})"
        ) from exc
    external = check_external_data(proto, path)
    if not proto.graph.node and not proto.graph.output:
        raise FaaqError(f"{path} is not an ONNX model (no graph found)")
    # the checker reads the file itself (external data, models over 2 GB) when there is any
    check_proto(proto, str(path), checker_path=str(path) if external else None)
    if not external:
        return ir.from_proto(proto)
    try:
        # weights stay in their data files, mapped when read (faaq_onnx.external_data)
        return ir.load(str(path))
    except Exception as exc:  # onnx-ir raises several types for bad external data
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FaaqError(f"{path}: cannot read its external data ({first})") from exc


def check_external_data(proto: onnx.ModelProto, path: Path) -> int:
    """Every external-data reference must name an existing file inside the model's folder.

    Returns the number of tensors stored externally."""
    from onnx.external_data_helper import uses_external_data

    folder = path.resolve().parent
    count = 0
    for t in _all_tensors(proto.graph):
        if not uses_external_data(t):
            continue
        count += 1
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        target = (folder / loc).resolve()
        if (
            not loc
            or Path(loc).is_absolute()
            or ".." in Path(loc).parts
            or folder not in target.parents
        ):
            raise FaaqError(
                f"{path}: external data location {loc!r} of tensor {t.name!r} points outside the "
                f"model's folder; refusing to read it"
            )
        if not target.is_file():
            raise FaaqError(f"{path}: external data file {loc!r} of tensor {t.name!r} is missing")
        need = int(info.get("offset", 0) or 0) + int(info.get("length", 0) or 0)
        if need > target.stat().st_size:
            raise FaaqError(
                f"{path}: external data file {loc!r} is shorter ({target.stat().st_size} bytes) than "
                f"tensor {t.name!r} needs ({need}); truncated?"
            )
    return count


def _all_tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_tensors(g)


def check_proto(
    proto: onnx.ModelProto, where: str = "model", checker_path: str | None = None
) -> None:
    """Opset and operator checks that name the offending node."""
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise FaaqError(f"{where}: no default-domain opset import")
    if opset < MIN_OPSET or opset > MAX_OPSET:
        raise FaaqError(f"{where}: unsupported opset {opset} (supported: {MIN_OPSET}..{MAX_OPSET})")
    try:
        onnx.checker.check_model(checker_path if checker_path else proto, full_check=False)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise FaaqError(f"{where}: invalid ONNX model: {first}") from exc
    for node in all_nodes(proto.graph):
        domain = node.domain or ""
        if domain not in _KNOWN_DOMAINS:
            raise FaaqError(
                f"{where}: unsupported op {node.op_type!r} of custom domain {domain!r} in node {node.name!r}"
            )
        if domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
            raise FaaqError(f"{where}: unsupported op {node.op_type!r} in node {node.name!r}")
    for v in [*proto.graph.input, *proto.graph.output]:
        kind = v.type.WhichOneof("value")
        if kind not in (None, "tensor_type"):
            side = "input" if v in proto.graph.input else "output"
            zipmap = any(n.op_type == "ZipMap" for n in proto.graph.node)
            hint = " (skl2onnx's ZipMap: convert with options={'zipmap': False})" if zipmap else ""
            raise FaaqError(
                f"{where}: graph {side} {v.name!r} is a {kind.replace('_type', '')}, not a "
                f"tensor{hint}; faaq quantizes graphs whose inputs and outputs are tensors"
            )
    float_inputs = [
        i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}
    ]
    if not float_inputs:
        raise FaaqError(f"{where}: the graph has no inputs to calibrate with")
