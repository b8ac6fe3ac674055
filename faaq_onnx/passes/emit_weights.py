"""Weight half of QDQ emission: integer weights behind DequantizeLinear, int32 biases.

Storage forms (`--weight-storage`):

- ``cast`` (default, the form ORT runs fastest): weights of 2-4 bits are stored packed
  (int2/uint2 at opset 25, else int4/uint4) and widened in the graph by
  ``Cast(to=INT8|UINT8)`` before an 8-bit DequantizeLinear. ONNX Runtime constant-folds
  the Cast at session load and then fuses DQ(int8) -> Conv/Gemm/MatMul into
  QLinearConv/QGemm/QLinearMatMul: the file keeps the low-bit bytes, the kernel is int8
  (notes/int4-cast-folding.md). Zero points are stored and cast the same way. 5-8-bit
  weights sit in int8 directly.
- Asymmetric weights of at most 6 bits whose consumer reads a quantized activation (an integer
  kernel) lose their zero point: the codes q - z fit int8 with zero point 0, so they are
  stored as signed codes t = q - 2^(b-1) (packed as above) plus a per-channel int8 offset
  o = 2^(b-1) - z, widened by ``Cast(to=INT8) -> Add(o)``, which ORT folds at load like the
  Cast. ORT's QLinearConv with a weight zero point takes a slow path (EfficientNet-Lite0
  W4A8: 41x); with the offset the kernel is the symmetric one, the file keeps the packed
  bytes, and the weights dequantize to the same values (benchmarks/out/weight_offsets.md). 5-6-bit
  asymmetric weights are stored as the int8 codes q - z directly (7 bits and up keep their
  zero point: their codes could reach past the ±63 that x86 kernels without VNNI take).
- ``dequant``: DequantizeLinear reads the packed int4/uint4 weight itself. For runtimes
  whose kernels take int4 QDQ weights natively; ORT's CPU EP dequantizes such a weight on
  every run and runs a float Conv.

Blocked weights (`--granularity block`) have no fused integer kernel in ORT (except
MatMulNBits, a later pass), so they keep the ``dequant`` form.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from faaq_onnx.graph import add_initializer, const_array, quantizer_behind, values_by_name
from faaq_onnx.quant.bias import int32_bias, int32_bias_scale, takes_int32_bias
from faaq_onnx.quant.formats import IntFormat
from faaq_onnx.quant.weights import QuantizedWeight, zero_point_free_on_kernels

STORAGE_FORMS = ("cast", "dequant")


def storage_format(qw: QuantizedWeight, storage: str, int2: bool) -> tuple[str, IntFormat]:
    """(form, container format) a weight is written in."""
    if storage == "cast" and not qw.block_size:
        return ("cast" if qw.fmt.bits <= 4 else "direct"), IntFormat(
            qw.fmt.bits, qw.fmt.signed, 2 if int2 else 4
        )
    return ("dequant" if qw.fmt.bits <= 4 else "direct"), IntFormat(qw.fmt.bits, qw.fmt.signed, 4)


class InsertWeightDQPass(InPlacePass):
    """Each quantized weight initializer becomes integers -> [Cast] -> DequantizeLinear."""

    def __init__(
        self,
        qgraph,
        qweights: dict[str, QuantizedWeight],
        bits: dict[str, int],
        summary,
        storage: str = "cast",
        int2: bool = False,
    ) -> None:
        self.qgraph, self.qweights, self.bits, self.summary = qgraph, qweights, bits, summary
        self.storage, self.int2 = storage, int2

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        values = values_by_name(graph)
        modified = False
        for wname, wq in self.qgraph.weights.items():
            v = values.get(wname)
            if v is None:
                continue
            qw = self.qweights[wname]
            form, fmt = storage_format(qw, self.storage, self.int2)
            offset = form in ("cast", "direct") and qw.zero_point.any()
            if (
                offset
                and zero_point_free_on_kernels(qw)
                and _feeds_integer_kernels(v, wq.consumers)
            ):
                form, fmt = form + "+offset", IntFormat(fmt.bits, True, fmt.min_container)
            dq_out = self._emit(graph, wname.replace("/", "_"), qw, form, fmt)
            dq_out.type, dq_out.shape = v.type, v.shape
            for use in list(v.uses()):
                if use.node.name in wq.consumers:
                    use.node.replace_input_with(use.idx, dq_out)
            if not v.uses() and not v.is_graph_output():
                graph.initializers.pop(wname, None)
            if form.endswith("+offset"):  # int8 offsets (cast) or none (direct int8 codes)
                zp_bytes = qw.zero_point.size if form == "cast+offset" else 0
            elif qw.zero_point.any():
                zp_bytes = fmt.stored_bytes(qw.zero_point.size)
            else:
                zp_bytes = 0
            stored = fmt.stored_bytes(qw.q.size) + qw.scale.size * 4 + zp_bytes
            self.summary.weights[wname] = {
                "bits": qw.fmt.bits,
                "planned_bits": self.bits[wname],
                "type": str(qw.fmt),
                "container": _type_name(fmt),
                "container_bits": fmt.container_bits,
                "storage": form,
                "rounding": qw.method,
                "granularity": "block"
                if qw.block_size
                else ("per-channel" if qw.axis is not None else "per-tensor"),
                "elements": int(qw.q.size),
                "stored_bytes": int(stored),
                "float_bytes": int(qw.q.size * 4),
            }
            modified = True
        return PassResult(model, modified)

    @staticmethod
    def _emit(graph, base: str, qw: QuantizedWeight, form: str, fmt: IntFormat) -> ir.Value:
        if form.endswith("+offset"):
            return _emit_offset(graph, base, qw, form, fmt)
        q_val = add_initializer(graph, f"{base}_quantized", qw.q.astype(fmt.numpy_type))
        s_val = add_initializer(graph, f"{base}_scale", qw.scale.astype(np.float32))
        if form == "cast":
            wide = fmt.kernel_container
            zp = qw.zero_point
            if zp.any():  # zero points packed and widened the same way
                z_val = _cast(
                    graph,
                    add_initializer(graph, f"{base}_zero_point_packed", zp.astype(fmt.numpy_type)),
                    wide,
                    f"{base}_zero_point_Cast",
                )
            else:
                z_val = add_initializer(graph, f"{base}_zero_point", zp.astype(wide.numpy_type))
            q_val = _cast(graph, q_val, wide, f"{base}_Cast")
        else:
            z_val = add_initializer(
                graph, f"{base}_zero_point", qw.zero_point.astype(fmt.numpy_type)
            )
        return _dequantize(graph, base, qw, q_val, s_val, z_val)


def _dequantize(graph, base: str, qw: QuantizedWeight, q_val, s_val, z_val) -> ir.Value:
    attrs = {}
    if qw.axis is not None:
        attrs["axis"] = int(qw.axis)
    if qw.block_size:
        attrs["block_size"] = int(qw.block_size)
    dqn = ir.node(
        "DequantizeLinear",
        [q_val, s_val, z_val],
        attributes=attrs,
        name=f"{base}_DequantizeLinear",
    )
    dqn.outputs[0].name = f"{base}_dequantized"
    graph.extend([dqn])
    return dqn.outputs[0]


def _feeds_integer_kernels(weight: ir.Value, consumers) -> bool:
    """Whether each consumer of the weight reads a quantized activation (DequantizeLinear of a
    non-constant): the ops ORT fuses into QLinearConv/QGemm, where a weight zero point costs.
    A weight-only consumer keeps its zero point (MatMulNBits takes it natively)."""
    users = [u.node for u in weight.uses() if u.node.name in consumers]
    if not users:
        return False
    for node in users:
        x = node.inputs[0] if node.inputs else None
        dq = x.producer() if x is not None else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.inputs[0].const_value is not None:
            return False
    return True


def _emit_offset(graph, base: str, qw: QuantizedWeight, form: str, fmt: IntFormat) -> ir.Value:
    """Codes q - z with zero point 0 (see the module docstring): the symmetric kernel's form."""
    zeros = np.zeros(np.shape(qw.zero_point), np.int8)
    s_val = add_initializer(graph, f"{base}_scale", qw.scale.astype(np.float32))
    z_val = add_initializer(graph, f"{base}_zero_point", zeros)
    grid_z = qw.grid.expand(np.asarray(qw.zero_point, np.int64))
    q = qw.q.astype(np.int64)
    if form == "direct+offset":
        q_val = add_initializer(graph, f"{base}_quantized", (q - grid_z).astype(np.int8))
        return _dequantize(graph, base, qw, q_val, s_val, z_val)
    mid = 2 ** (qw.fmt.bits - 1)  # fmt: the signed container t is packed in
    t_val = add_initializer(graph, f"{base}_quantized", (q - mid).astype(fmt.numpy_type))
    o_val = add_initializer(graph, f"{base}_offset", (mid - grid_z).astype(np.int8))
    wide = _cast(graph, t_val, fmt.kernel_container, f"{base}_Cast")
    add = ir.node("Add", [wide, o_val], name=f"{base}_Offset")
    add.outputs[0].name = f"{base}_codes"
    add.outputs[0].type, add.outputs[0].shape = wide.type, wide.shape
    graph.extend([add])
    return _dequantize(graph, base, qw, add.outputs[0], s_val, z_val)


def _cast(graph, value: ir.Value, to: IntFormat, name: str) -> ir.Value:
    node = ir.node("Cast", [value], attributes={"to": ir.DataType(to.onnx_type)}, name=name)
    out = node.outputs[0]
    out.name = f"{value.name}_int8"
    out.type = ir.TensorType(ir.DataType(to.onnx_type))
    out.shape = value.shape
    graph.extend([node])
    return out


class QuantizeBiasPass(InPlacePass):
    """int32 bias with scale s_x * s_w: the form ORT's QLinearConv/QGemm fusion takes."""

    def __init__(self, qgraph, qweights: dict[str, QuantizedWeight], summary) -> None:
        self.qgraph, self.qweights, self.summary = qgraph, qweights, summary

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        nodes = {n.name: n for n in graph}
        modified = False
        for wname, wq in self.qgraph.weights.items():
            if wq.bias and len(wq.consumers) == 1 and wname in self.qweights:
                modified |= self._quantize(
                    graph, nodes.get(wq.consumers[0]), wq, self.qweights[wname]
                )
        return PassResult(model, modified)

    def _quantize(self, graph, node, wq, qw: QuantizedWeight) -> bool:
        if node is None or not takes_int32_bias(node.op_type, qw, wq.channel_axis):
            return False
        if len(node.inputs) < 3:
            return False
        s_x = _activation_scale(node.inputs[0])
        b_val = node.inputs[2]
        b = const_array(b_val)
        if s_x is None or b is None or len(b_val.uses()) != 1 or b.ndim != 1:
            return False
        bias_scale = int32_bias_scale(s_x, qw.scale, b.shape)
        bq = int32_bias(b, bias_scale)
        base = b_val.name.replace("/", "_")
        q_val = add_initializer(graph, f"{base}_quantized", bq)
        s_val = add_initializer(graph, f"{base}_scale", bias_scale)
        z_val = add_initializer(graph, f"{base}_zero_point", np.zeros(b.shape, np.int32))
        dqn = ir.node(
            "DequantizeLinear",
            [q_val, s_val, z_val],
            attributes={"axis": 0},
            name=f"{base}_DequantizeLinear",
        )
        dqn.outputs[0].name = f"{base}_dequantized"
        dqn.outputs[0].type, dqn.outputs[0].shape = b_val.type, b_val.shape
        graph.extend([dqn])
        node.replace_input_with(2, dqn.outputs[0])
        if not b_val.uses():
            graph.initializers.pop(b_val.name, None)
        self.summary.int32_biases.append(b_val.name)
        return True


def _activation_scale(x: ir.Value | None) -> float | None:
    """The scale of the activation DequantizeLinear feeding a node, if there is one."""
    dq = x.producer() if x is not None else None
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    if quantizer_behind(dq) is None:
        return None
    s = const_array(dq.inputs[1])
    return None if s is None or s.size != 1 else float(s.reshape(()))


def _type_name(fmt: IntFormat) -> str:
    return f"{'int' if fmt.signed else 'uint'}{fmt.container_bits}"
