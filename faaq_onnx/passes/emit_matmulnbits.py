"""Rewrite DequantizeLinear -> MatMul/Gemm on low-bit constant weights as MatMulNBits.

Why: ONNX Runtime's CPU and CUDA providers have no integer kernel for a blocked int4
(or int2) DequantizeLinear feeding a float MatMul; left as QDQ the weight is
dequantized on every run and the model is smaller but not faster. The com.microsoft
MatMulNBits contrib op keeps the weight packed and dequantizes block by block inside
the GEMM, which is where weight-only quantization pays off in latency.

The rewrite is exact: B holds the same integers, shifted into MatMulNBits' unsigned
range with the zero point shifted by the same amount, so (q - z) * s is unchanged. Only
``accuracy_level=4`` changes numbers, because it lets ORT quantize the *activation*
to int8 per block inside the kernel (that is the fast path on x86 and ARM); use
``accuracy_level=0`` for a bit-exact float computation.

Layout (ORT contrib-op spec): B uint8 [N, n_blocks, blob], blob = block_size*bits/8,
codes packed low bits first along K; scales [N, n_blocks] in A's float type;
zero_points packed the same way as B, [N, ceil(n_blocks*bits/8)], and left out when
every zero point is the default 2^(bits-1).

Also rewritten, beyond plain MatMul: Gemm with transA=0 and alpha=beta=1 (faaq's
canonicalizer turns Linear layers into Gemm), whose C becomes MatMulNBits' bias, and
per-channel or per-tensor weights, whose scale is repeated into blocks of
``per_channel_block`` (the integers do not change, so neither does the result).

A MatMul whose activation input is itself quantized (DequantizeLinear of a
QuantizeLinear) is left alone: it is a W·A8 node that ORT can fuse into an integer
kernel. With ``drop_activation_qdq=True`` that activation Q/DQ pair is bypassed *for
the converted node only* (others still read it), which turns a W4A8 node into a
weight-only W4 node: the output then differs from the QDQ model by the activation's
quantization error, so use it knowingly.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from faaq_onnx.errors import FaaqError
from faaq_onnx.graph import (
    const_array,
    drop_orphaned_initializers,
    quantizer_behind,
    read_initializers,
)

__all__ = ["convert_to_matmulnbits"]

_INT_TYPES = {
    ir.DataType.INT2: True,
    ir.DataType.UINT2: False,
    ir.DataType.INT4: True,
    ir.DataType.UINT4: False,
    ir.DataType.INT8: True,
    ir.DataType.UINT8: False,
}
_FLOAT_A = {ir.DataType.FLOAT: np.float32, ir.DataType.FLOAT16: np.float16}


def convert_to_matmulnbits(
    proto: onnx.ModelProto,
    bits_allowed=(2, 4, 8),
    accuracy_level: int = 4,
    drop_activation_qdq: bool = False,
    per_channel_block: int = 32,
    nodes=None,
) -> tuple[onnx.ModelProto, list[str]]:
    """Return a new model with eligible weight MatMul/Gemm nodes as MatMulNBits, and their names.

    ``bits_allowed``: the MatMulNBits widths to use; each weight gets the smallest one
    that holds its integers exactly (a 2-bit weight kept in an int4 container becomes
    bits=2). ``nodes``: convert only these (by name); default every eligible node. The input
    proto is not modified.
    """
    bits_allowed = sorted({int(b) for b in bits_allowed})
    if not bits_allowed or any(b not in (2, 4, 8) for b in bits_allowed):
        raise FaaqError(f"MatMulNBits bits must be among 2, 4, 8; got {bits_allowed}")
    if accuracy_level not in (0, 1, 2, 3, 4):
        raise FaaqError(f"accuracy_level must be 0..4, got {accuracy_level}")
    if per_channel_block < 16 or per_channel_block & (per_channel_block - 1):
        raise FaaqError(f"per_channel_block must be a power of two >= 16, got {per_channel_block}")

    model = ir.from_proto(proto)
    graph = model.graph
    used_before = read_initializers(graph)
    converted: list[str] = []
    for node in list(graph):
        if node.domain not in ("", "ai.onnx") or node.op_type not in ("MatMul", "Gemm"):
            continue
        if nodes is not None and node.name not in nodes:
            continue
        spec = _match(node, bits_allowed, drop_activation_qdq, per_channel_block)
        if spec is None:
            continue
        _rewrite(graph, node, spec, accuracy_level)
        converted.append(node.name)
    if converted:
        _remove_dead(graph, used_before)
        model.opset_imports["com.microsoft"] = 1
    out = ir.to_proto(model)
    out.ir_version = proto.ir_version
    return out, converted


def _match(node: ir.Node, bits_allowed, drop_act: bool, per_channel_block: int) -> dict | None:
    """Everything the rewrite needs, or None when the node is not eligible."""
    if node.op_type == "Gemm":
        attrs = {k: a.value for k, a in node.attributes.items()}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
            return None
        if len(node.inputs) > 2 and node.inputs[2] is not None and attrs.get("beta", 1.0) != 1.0:
            return None
        trans_b = bool(attrs.get("transB", 0))
    else:
        trans_b = False
    a, w = node.inputs[0], node.inputs[1]
    if a is None or w is None:
        return None
    dq = w.producer()
    if dq is None or dq.op_type != "DequantizeLinear" or dq.domain not in ("", "ai.onnx"):
        return None
    s = const_array(dq.inputs[1])
    zp_val = _through_cast(dq.inputs[2]) if len(dq.inputs) > 2 else None
    z = const_array(zp_val) if zp_val is not None else None
    if s is None or (zp_val is not None and z is None):
        return None
    q_val = _through_cast(dq.inputs[0])
    offset = _offset_codes(dq.inputs[0])
    if offset is not None:  # codes t + o at zero point zp: codes t at zero point zp - o
        q_val, o = offset
        if o.size not in (1, s.size):
            return None
        o = o.astype(np.int64).reshape(() if o.size == 1 else s.shape)
        z = (0 if z is None else z.astype(np.int64)) - o
    q = const_array(q_val)
    if q is None or q.ndim != 2 or q_val.dtype not in _INT_TYPES:
        return None
    # MatMul's operands share a type, and DequantizeLinear's output has its scale's type
    a_type = next((t for t in (a.dtype, dq.inputs[1].dtype) if t is not None), None)
    if a_type not in _FLOAT_A:
        return None
    k_axis = 1 if trans_b else 0
    k, n = q.shape[k_axis], q.shape[1 - k_axis]
    axis = dq.attributes["axis"].value if "axis" in dq.attributes else 1
    axis = axis + 2 if axis < 0 else axis
    block = dq.attributes["block_size"].value if "block_size" in dq.attributes else 0
    z = np.broadcast_to(np.zeros((), np.int64) if z is None else z.astype(np.int64), s.shape)

    # scales and zero points as [n_blocks, N], blocks along K
    if block:
        if axis != k_axis or block < 16 or block & (block - 1):
            return None
        s_kn, z_kn = (s.T, z.T) if trans_b else (s, z)
    elif s.ndim == 0 or s.size == 1:
        block = per_channel_block
        nb = -(-k // block)
        s_kn = np.full((nb, n), s.reshape(()), np.float32)
        z_kn = np.full((nb, n), z.reshape(()), np.int64)
    elif s.ndim == 1 and axis == 1 - k_axis and s.shape[0] == n:
        block = per_channel_block
        nb = -(-k // block)
        s_kn = np.broadcast_to(s, (nb, n)).copy()
        z_kn = np.broadcast_to(z, (nb, n)).copy()
    else:
        return None
    nb = -(-k // block)
    if s_kn.shape != (nb, n):
        return None

    # the activation: float, or a Q/DQ pair that may be bypassed
    a_src = a
    a_prod = a.producer()
    if a_prod is not None and a_prod.op_type == "DequantizeLinear":
        if not drop_act or const_array(a_prod.inputs[0]) is not None:
            return None
        qn = quantizer_behind(a_prod)
        if qn is None:
            return None
        a_src = qn.inputs[0]
    if a_src.shape is not None and (
        len(a_src.shape) < 2 or (isinstance(a_src.shape[-1], int) and a_src.shape[-1] != k)
    ):
        return None  # MatMulNBits wants A of rank >= 2 with K last

    q_kn = (q.T if trans_b else q).astype(np.int64)
    signed = _INT_TYPES[q_val.dtype]
    for bits in bits_allowed:
        shift = 2 ** (bits - 1) if signed else 0
        u, zz = q_kn + shift, z_kn + shift
        top = 2**bits
        if u.min() >= 0 and u.max() < top and zz.min() >= 0 and zz.max() < top:
            break
    else:
        return None

    bias = None
    if node.op_type == "Gemm" and len(node.inputs) > 2 and node.inputs[2] is not None:
        bias = node.inputs[2]
    return {
        "a": a_src,
        "u": u,
        "zp": zz,
        "scales": s_kn,
        "bits": bits,
        "block": block,
        "k": k,
        "n": n,
        "bias": bias,
        "a_np": _FLOAT_A[a_type],
    }


def _offset_codes(value: ir.Value | None) -> tuple[ir.Value, np.ndarray] | None:
    """(packed codes t, offsets o) of emit_weights' offset form Cast(t) -> Add(o), else None."""
    add = value.producer() if value is not None else None
    if add is None or add.op_type != "Add" or len(add.inputs) != 2:
        return None
    t, o = _through_cast(add.inputs[0]), const_array(add.inputs[1])
    if t is None or t is add.inputs[0] or o is None:
        return None
    return t, o


def _through_cast(value: ir.Value | None) -> ir.Value | None:
    """The packed initializer behind a Cast(to=INT8|UINT8) (faaq's cast storage form)."""
    prod = value.producer() if value is not None else None
    if (
        prod is not None
        and prod.op_type == "Cast"
        and prod.inputs
        and prod.inputs[0] is not None
        and prod.inputs[0].const_value is not None
    ):
        return prod.inputs[0]
    return value


def _rewrite(graph: ir.Graph, node: ir.Node, spec: dict, accuracy_level: int) -> None:
    bits, block, k, n = spec["bits"], spec["block"], spec["k"], spec["n"]
    nb = -(-k // block)
    zp = spec["zp"]  # [nb, N]
    # pad K with each block's zero point so the padding dequantizes to 0
    pad = nb * block - k
    u = spec["u"]
    if pad:
        u = np.concatenate([u, np.broadcast_to(zp[-1], (pad, n))], axis=0)
    u = u.reshape(nb, block, n).transpose(2, 0, 1)  # [N, nb, block]
    packed_b = _pack(u, bits)  # [N, nb, block*bits/8]
    base = (node.name or "matmul").replace("/", "_")
    inputs: list[ir.Value | None] = [
        spec["a"],
        _init(graph, f"{base}_B_nbits", packed_b),
        _init(graph, f"{base}_scales", np.ascontiguousarray(spec["scales"].T).astype(spec["a_np"])),
    ]
    if np.any(zp != 2 ** (bits - 1)):
        zp_n = zp.T  # [N, nb]
        per = 8 // bits
        pad_b = (-nb) % per
        if pad_b:
            zp_n = np.concatenate([zp_n, np.zeros((n, pad_b), zp_n.dtype)], axis=1)
        inputs.append(_init(graph, f"{base}_zero_points", _pack(zp_n[:, None, :], bits)[:, 0, :]))
    else:
        inputs.append(None)
    extra_add = None
    if spec["bias"] is not None:
        c = _const_float(spec["bias"])
        if c is not None and c.size == n and c.ndim <= 2 and (c.ndim < 2 or c.shape[0] == 1):
            inputs += [None, _init(graph, f"{base}_bias", c.reshape(n).astype(spec["a_np"]))]
        else:
            extra_add = spec["bias"]  # Gemm's C broadcasts; keep it as an Add
    mnb = ir.node(
        "MatMulNBits",
        inputs,
        attributes={
            "K": k,
            "N": n,
            "bits": bits,
            "block_size": block,
            "accuracy_level": accuracy_level,
        },
        domain="com.microsoft",
        name=node.name,
    )
    new_nodes = [mnb]
    out = mnb.outputs[0]
    if extra_add is not None:
        add = ir.node("Add", [out, extra_add], name=f"{node.name}_bias_add")
        new_nodes.append(add)
        out = add.outputs[0]
    ir.convenience.replace_nodes_and_values(
        graph, node, [node], new_nodes, [node.outputs[0]], [out]
    )


def _pack(u: np.ndarray, bits: int) -> np.ndarray:
    """Pack codes along the last axis, low bits first, 8/bits codes per byte."""
    per = 8 // bits
    u = u.astype(np.uint8)
    if per == 1:
        return u
    grouped = u.reshape(*u.shape[:-1], u.shape[-1] // per, per)
    out = np.zeros(grouped.shape[:-1], np.uint8)
    for i in range(per):
        out |= (grouped[..., i] << (bits * i)).astype(np.uint8)
    return out


def _const_float(value: ir.Value) -> np.ndarray | None:
    """A constant float tensor, or the float value of a DequantizeLinear of constants."""
    arr = const_array(value)
    if arr is not None:
        return arr.astype(np.float32)
    prod = value.producer()
    if prod is None or prod.op_type != "DequantizeLinear":
        return None
    q = const_array(prod.inputs[0])
    s = const_array(prod.inputs[1])
    z = const_array(prod.inputs[2]) if len(prod.inputs) > 2 and prod.inputs[2] is not None else None
    if q is None or s is None or "block_size" in prod.attributes:
        return None
    if z is None:
        z = np.zeros_like(q, dtype=np.int64)
    if q.ndim == 1 or s.ndim == 0:  # bias: 1-D, per tensor or along its only axis
        return (
            (q.astype(np.int64) - z.astype(np.int64)).astype(np.float32) * s.astype(np.float32)
        ).astype(np.float32)
    return None


def _init(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    base, i = name, 0
    while name in graph.initializers:
        i += 1
        name = f"{base}_{i}"
    value = ir.Value(
        name=name,
        shape=ir.Shape(array.shape),
        type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
        const_value=ir.tensor(array, name=name),
    )
    graph.register_initializer(value)
    return value


def _remove_dead(graph: ir.Graph, used_before: set[str]) -> None:
    """Drop the weight DequantizeLinear (and its Cast [-> Add offset], bypassed Q/[Clip]/DQ) nodes
    and initializers nothing reads any more; initializers that were already unused are not ours
    to touch."""
    outputs = {id(v) for v in graph.outputs}
    changed = True
    while changed:
        changed = False
        for node in list(graph):
            if node.op_type not in ("DequantizeLinear", "QuantizeLinear", "Cast", "Clip", "Add"):
                continue
            if node.op_type == "Add" and not all(
                const_array(x) is not None for x in node.inputs[1:]
            ):
                continue  # only the offset of codes (its second input a constant)
            if all(not o.uses() and id(o) not in outputs for o in node.outputs):
                graph.remove(node, safe=True)
                changed = True
    drop_orphaned_initializers(graph, used_before)
