"""Weight half of QDQ emission: integer weights behind DequantizeLinear, int32 biases.

Storage forms (`--weight-storage`):

- ``cast`` (default, the form ORT runs fastest): weights of 2-4 bits are stored packed
  (int2/uint2 at opset 25, else int4/uint4) and widened in the graph by
  ``Cast(to=INT8|UINT8)`` before an 8-bit DequantizeLinear. ONNX Runtime constant-folds
  the Cast at session load and then fuses DQ(int8) -> Conv/Gemm/MatMul into
  QLinearConv/QGemm/QLinearMatMul: the file keeps the low-bit bytes, the kernel is int8
  (notes/int4-cast-folding.md). Zero points are stored and cast the same way. 5-8-bit
  weights sit in int8 directly.
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
from faaq_onnx.quant.weights import QuantizedWeight

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
            dq_out = self._emit(graph, wname.replace("/", "_"), qw, form, fmt)
            dq_out.type, dq_out.shape = v.type, v.shape
            for use in list(v.uses()):
                if use.node.name in wq.consumers:
                    use.node.replace_input_with(use.idx, dq_out)
            if not v.uses() and not v.is_graph_output():
                graph.initializers.pop(wname, None)
            stored = (
                fmt.stored_bytes(qw.q.size)
                + qw.scale.size * 4
                + (fmt.stored_bytes(qw.zero_point.size) if qw.zero_point.any() else 0)
            )
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
