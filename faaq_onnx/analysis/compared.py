"""Where an output is compared: a Softmax output at its logits.

Seed 003's SQNR measures the noise quantization adds to a network's output, its logits. A model
that ends in a Softmax (most converted classifiers, CTC text recognizers) outputs probabilities
instead, and their SQNR is carried by the near-certain positions, whose probabilities barely
move: on PP-OCRv4 rec (40 steps, mostly blank) the per-sample SQNR of uniform W4A8 spans 5 to
50 dB on probabilities (mean of ratios 37.5 dB, pooled 12.6) and 9 to 23 dB on the logits
(19.7 / 17.8), so a budget allocated on probabilities followed a few easy lines and came out
worse than uniform W4A8 at fewer bits. Sensitivity, allocation, the bias check and verification
therefore compare such an output at the Softmax's input, where nothing quantizes either tensor
(the Softmax adds no quantization error of its own there). A LogSoftmax output is compared the
same way.

The logits are compared less their mean along the Softmax's axis (`centre_logits`): a Softmax
ignores a shift common to its whole axis, and PP-OCRv4 rec's 6,625 logits per step sit at a mean
of -10.4 with a spread of 2.6, so that common part was most of the "signal". There a plan with a
2-bit CTC head measured 17.96 dB on raw logits against 18.43 dB for a plan without it, yet its
KL to float on held-out lines was 0.617 against 0.114; centred, 10.52 against 13.09 dB.
"""

from __future__ import annotations

import os

import onnx
from onnx import helper

from faaq_onnx.errors import FaaqError
from faaq_onnx.graph import ancestor_nodes, default_opset
from faaq_onnx.groups import QuantizerGraph

# outputs compared at their input: a LogSoftmax's output is its input shifted by the log of the
# sum of exponentials, so its SQNR counts the unlikely classes' large negative values as signal
SOFTMAXES = ("Softmax", "LogSoftmax")


def softmax_logits(proto: onnx.ModelProto, qgraph: QuantizerGraph) -> dict[str, str]:
    """{graph output: the logits tensor it is compared at} for each output a Softmax makes,
    directly or as the Flatten -> Softmax -> Reshape an opset-13 upgrade writes for a Softmax
    over an inner axis."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    quantized = {t for aq in qgraph.activations.values() for t in aq.tensors}
    graph_inputs = {i.name for i in proto.graph.input}
    outputs = {o.name for o in proto.graph.output}
    found = {}
    for out in proto.graph.output:
        node = producer.get(out.name)
        while node is not None and node.op_type == "Identity":  # skl2onnx names it so
            node = producer.get(node.input[0])
        if node is not None and node.op_type == "Reshape":  # the upgrade's pattern, whole
            inner = producer.get(node.input[0])
            flat = producer.get(inner.input[0]) if inner is not None else None
            node = inner if flat is not None and flat.op_type == "Flatten" else None
        if node is None or node.op_type not in SOFTMAXES:
            continue
        logits = node.input[0]
        before = producer.get(logits)
        if before is not None and before.op_type == "Flatten":
            logits = before.input[0]  # the samples' axis is merged after the Flatten
        touched = {out.name, node.output[0], node.input[0], logits}  # (Identity: same values)
        if logits in graph_inputs or logits in outputs or touched & quantized:
            continue  # (logits the model outputs too are compared as that output already)
        found[out.name] = logits
    return found


FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
    onnx.TensorProto.DOUBLE,
}


def compared_outputs(proto: onnx.ModelProto, qgraph: QuantizerGraph) -> dict[str, str | None]:
    """softmax_logits, and None for each output that is not a float tensor (a classifier's
    int64 label from ArgMax: its SQNR is infinite where the label holds, and a few flips carry
    the mean) while a float output remains to compare; such outputs are not compared."""
    found: dict[str, str | None] = dict(softmax_logits(proto, qgraph))
    elem = {o.name: o.type.tensor_type.elem_type for o in proto.graph.output}
    other = [o for o, t in elem.items() if t and t not in FLOAT_TYPES]
    if other and len(other) < len(elem):
        found.update(dict.fromkeys(other))
    return found


def compared_model(model, compared: dict[str, str | None], keep: bool = False):
    """`model` (a path or a proto; not changed) with the compared tensors as its outputs, in
    the order of the outputs they stand for, and without the nodes only the others needed;
    with `keep`, they are added in front of its own outputs and every node stays (a session
    that also shows what ORT makes of the whole graph). `model` itself where nothing is
    compared elsewhere; FaaqError where a compared tensor is not made by any node of it."""
    if not compared:
        return model
    proto = onnx.load(os.fspath(model)) if isinstance(model, (str, os.PathLike)) else model
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    made = {o for n in g.node for o in n.output}
    missing = sorted(t for t in compared.values() if t is not None and t not in made)
    if missing:
        raise FaaqError(f"the model makes no tensor {missing[0]!r} to compare at")
    outputs = []
    for o in g.output:
        at = compared.get(o.name, o.name)
        if at is None:  # not compared
            continue
        if at != o.name:
            elem = o.type.tensor_type.elem_type or onnx.TensorProto.FLOAT
            outputs.append(helper.make_tensor_value_info(at, elem, None))
        else:
            outputs.append(o)
    if keep:
        shown = {t for t in compared.values() if t is not None}
        outputs = [o for o in outputs if o.name in shown] + list(g.output)
    del g.output[:]
    g.output.extend(outputs)
    for at in {t for t in compared.values() if t is not None}:
        centre_logits(g, at, default_opset(out))
    if keep:
        return out
    producer = {o: n for n in g.node for o in n.output}
    needed = {id(n) for n in ancestor_nodes([o.name for o in outputs], producer)}
    kept = [n for n in g.node if id(n) in needed]
    del g.node[:]
    g.node.extend(kept)
    return out


def centre_logits(g: onnx.GraphProto, logits: str, opset: int) -> bool:
    """Make `logits` hold its values less their mean along the axis its Softmax normalizes
    (the one shift a Softmax cannot see), in place; the Softmax's output is unchanged. False,
    and nothing changed, where `logits` is not read by one Softmax (or one Flatten -> Softmax)
    and Shapes only."""
    readers = [n for n in g.node if logits in n.input and n.op_type != "Shape"]
    producer = next((i for i, n in enumerate(g.node) if logits in n.output), None)
    if len(readers) != 1 or producer is None:
        return False
    reader = readers[0]
    axis = next((a.i for a in reader.attribute if a.name == "axis"), None)
    if reader.op_type in SOFTMAXES and opset >= 13:
        flatten, axis = False, -1 if axis is None else axis
    elif reader.op_type in SOFTMAXES or (
        reader.op_type == "Flatten" and _only_reader(g, reader.output[0]) in SOFTMAXES
    ):  # Softmax < 13 normalizes the input as flattened at its axis, like Flatten -> Softmax
        flatten, axis = True, 1 if axis is None else axis
    else:
        return False
    raw, pre = f"{logits}/faaq_raw", f"faaq_compare/{logits}/"
    made = g.node[producer]
    made.output[list(made.output).index(logits)] = raw

    def mean(x: str, ax: int) -> list[onnx.NodeProto]:
        if opset < 18:
            return [helper.make_node("ReduceMean", [x], [pre + "mean"], pre + "mean", axes=[ax])]
        axes = helper.make_tensor(pre + "axes", onnx.TensorProto.INT64, [1], [ax])
        return [
            helper.make_node("Constant", [], [pre + "axes"], pre + "axes", value=axes),
            helper.make_node("ReduceMean", [x, pre + "axes"], [pre + "mean"], pre + "mean"),
        ]

    if flatten:
        nodes = [helper.make_node("Flatten", [raw], [pre + "flat"], pre + "flat", axis=axis)]
        nodes += mean(pre + "flat", 1)
        nodes += [
            helper.make_node("Sub", [pre + "flat", pre + "mean"], [pre + "sub"], pre + "sub"),
            helper.make_node("Shape", [raw], [pre + "shape"], pre + "shape"),
            helper.make_node("Reshape", [pre + "sub", pre + "shape"], [logits], pre + "out"),
        ]
    else:
        nodes = mean(raw, axis)
        nodes.append(helper.make_node("Sub", [raw, pre + "mean"], [logits], pre + "out"))
    for k, n in enumerate(nodes):
        g.node.insert(producer + 1 + k, n)
    return True


def _only_reader(g: onnx.GraphProto, tensor: str) -> str | None:
    """The op type of the one node that reads `tensor`, None where not exactly one does."""
    readers = [n.op_type for n in g.node if tensor in n.input]
    return readers[0] if len(readers) == 1 else None
