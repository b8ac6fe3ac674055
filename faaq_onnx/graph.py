"""Thin graph layer: IR <-> proto and small queries used by several passes."""

from __future__ import annotations

import os
from collections.abc import Set as AbstractSet

import numpy as np
import onnx
import onnx_ir as ir

# ORT 1.2x-1.3x reject IR versions newer than 10; the types we emit need 9+.
IR_VERSION = 10


# the doc string of a Conv faaq wrote for an AveragePool (passes.emit_avgpool): the kernel report
# counts it as the pool it is, not as a weighted op
POOL_AS_CONV = "faaq: an AveragePool written as the depthwise Conv that computes it"


def ir_version_for(opset: int) -> int:
    """The IR version ORT accepts for a default-domain opset (int2 needs opset 25, IR 11)."""
    return 11 if opset >= 25 else IR_VERSION


def to_proto(model: ir.Model) -> onnx.ModelProto:
    """The model as a proto; weights kept in external data stay there, under absolute paths."""
    proto = ir.to_proto(model)
    proto.ir_version = ir_version_for(default_opset(proto))
    external = {
        name: v.const_value
        for name, v in model.graph.initializers.items()
        if isinstance(v.const_value, ir.ExternalTensor)
    }
    if external:
        for t in proto.graph.initializer:
            src = external.get(t.name)
            if src is None:
                continue
            for e in t.external_data:
                if e.key == "location":
                    e.value = os.path.abspath(
                        os.path.join(str(src.base_dir or ""), str(src.location))
                    )
    return proto


def values_by_name(graph: ir.Graph) -> dict[str, ir.Value]:
    """Every named value of a graph: inputs, initializers and node outputs."""
    out = {v.name: v for v in graph.inputs if v.name}
    out.update(graph.initializers)
    for node in graph:
        for o in node.outputs:
            if o is not None and o.name:
                out[o.name] = o
    return out


def default_opset(model: ir.Model | onnx.ModelProto) -> int:
    if isinstance(model, onnx.ModelProto):
        return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The numpy value of an initializer or Constant output, else None."""
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    if isinstance(tensor, ir.ExternalTensor) and tensor.dtype.bitwidth >= 8:
        # one shared map per data file (faaq_onnx.external_data), not a map per tensor
        from faaq_onnx.external_data import view

        path = os.path.join(str(tensor.base_dir or ""), str(tensor.location))
        return view(path, tensor.offset or 0, tensor.dtype.numpy(), tuple(tensor.shape.numpy()))
    return None if tensor is None else tensor.numpy()


def is_float_tensor(value: ir.Value) -> bool:
    return value.dtype in (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16)


def is_float_activation(v: ir.Value | None) -> bool:
    """A tensor computed at run time (not an initializer, constant or Constant output) of a
    float type, or of a type shape inference did not give: what a quantizer could read."""
    if v is None or v.is_initializer() or v.const_value is not None:
        return False
    prod = v.producer()
    if prod is not None and prod.op_type == "Constant":
        return False
    return v.dtype is None or is_float_tensor(v)


def known_rank(x: ir.Value) -> int | None:
    """x's rank: from its shape, else from the Conv that made it (shape inference gives up
    on the parts of exported graphs behind dynamic Reshapes)."""
    if x.shape is not None:
        return len(x.shape)
    prod = x.producer()
    if prod is not None and prod.op_type in ("Conv", "ConvTranspose") and len(prod.inputs) > 1:
        w = prod.inputs[1]
        if w is not None and w.shape is not None:
            return len(w.shape)
    return None


def node_name(node: ir.Node) -> str:
    return node.name or f"{node.op_type}_{id(node):x}"


def model_input_shapes(model: onnx.ModelProto) -> dict[str, list]:
    """Input name -> dims (int, or None/str for symbolic), initializers excluded."""
    inits = {t.name for t in model.graph.initializer}
    shapes = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = []
        for d in inp.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        shapes[inp.name] = dims
    return shapes


def model_input_dtypes(model: onnx.ModelProto) -> dict[str, np.dtype]:
    inits = {t.name for t in model.graph.initializer}
    return {
        i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
        for i in model.graph.input
        if i.name not in inits
    }


def attribute(node: ir.Node, name: str, default=None):
    """The value of a node's attribute, `default` where the node does not set it."""
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


def through_cast(name: str, producer: dict, inits: dict) -> tuple[str, bool]:
    """(the initializer behind a Cast [-> Add of a constant offset] that makes `name` (faaq's
    packed low-bit storage), True),
    or (`name`, False) where no Cast of an initializer makes it. `producer`: output name ->
    NodeProto; `inits`: the initializers by name."""
    cast = producer.get(name)
    # Cast -> Add(offset): emit_weights' offset codes
    if cast is not None and cast.op_type == "Add" and cast.input[1:] and cast.input[1] in inits:
        cast = producer.get(cast.input[0])
    if cast is not None and cast.op_type == "Cast" and cast.input and cast.input[0] in inits:
        return cast.input[0], True
    return name, False


def read_initializers(graph: ir.Graph) -> set[str]:
    """Names of the initializers some node of `graph` reads (before a rewrite: see
    drop_orphaned_initializers)."""
    return {name for name, v in graph.initializers.items() if v.uses()}


def drop_orphaned_initializers(graph: ir.Graph, read_before: set[str]) -> bool:
    """Remove the initializers in `read_before` that no node reads now and that are neither a
    graph input nor output: what a rewrite left behind (ORT warns about each at every session).
    Initializers the model already left unread are not ours to remove. Whether any went."""
    orphans = [
        name
        for name, v in graph.initializers.items()
        if name in read_before
        and not v.uses()
        and not v.is_graph_output()
        and not v.is_graph_input()
    ]
    for name in orphans:
        graph.initializers.pop(name)
    return bool(orphans)


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Register a new initializer under a name not yet taken."""
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


def check_model(proto: onnx.ModelProto) -> None:
    """onnx.checker on the graph; weights in external data (absolute paths inside faaq) are
    checked when the model is loaded and written, so here they stand in as empty tensors."""
    if not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        onnx.checker.check_model(proto, full_check=False)
        return
    light = onnx.ModelProto()
    light.CopyFrom(proto)
    for t in light.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            t.ClearField("external_data")
            t.data_location = onnx.TensorProto.DEFAULT
            del t.dims[:]
            t.dims.append(0)
    onnx.checker.check_model(light, full_check=False)


def quantizer_behind(dq: ir.Node) -> ir.Node | None:
    """The QuantizeLinear whose codes a DequantizeLinear reads, through the integer Clip that
    bounds activations narrower than their container (A4, A6); None for constant codes."""
    src = dq.inputs[0].producer() if dq.inputs and dq.inputs[0] is not None else None
    if src is not None and src.op_type == "Clip" and src.inputs[0] is not None:
        src = src.inputs[0].producer()
    return src if src is not None and src.op_type == "QuantizeLinear" else None


def only_reader(value: ir.Value) -> ir.Node | None:
    """The one node that reads `value`, where nothing else (a graph output) does; else None."""
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output():
        return None
    return uses[0].node


def done_with(value: ir.Value | None) -> None:
    """A weight read through const_array is no longer needed in memory (big models)."""
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    if isinstance(tensor, ir.ExternalTensor):
        from faaq_onnx.external_data import drop_pages

        path = os.path.join(str(tensor.base_dir or ""), str(tensor.location))
        drop_pages(path, tensor.offset or 0, tensor.length or tensor.nbytes)


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs a node holds in its attributes (If branches, Loop and Scan bodies)."""
    out: list[onnx.GraphProto] = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            out.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            out.extend(attr.graphs)
    return out


def all_nodes(graph: onnx.GraphProto):
    """Every node of a graph and, after each node, those of the subgraphs it holds."""
    for node in graph.node:
        yield node
        for g in subgraphs(node):
            yield from all_nodes(g)


def all_graphs(graph: onnx.GraphProto):
    """A graph and every subgraph inside it."""
    yield graph
    for node in graph.node:
        for g in subgraphs(node):
            yield from all_graphs(g)


def _reads(node: onnx.NodeProto) -> set[str]:
    """Every tensor a node reads, including those its subgraphs take from the outer scope."""
    names = {i for i in node.input if i}
    for g in subgraphs(node):
        for sub in g.node:
            names |= _reads(sub)
    return names


def constant_tensors(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Values of `graph` known without running anything: its initializers and the outputs of its
    Constant nodes (exporters keep weights and bounds in either), as TensorProtos (nothing is
    converted: a caller turns into arrays only what it reads). An initializer wins a clash."""
    out = {t.name: t for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.output and any(a.name == "value" for a in n.attribute):
            out.setdefault(n.output[0], next(a.t for a in n.attribute if a.name == "value"))
    return out


def reader_index(nodes: list[onnx.NodeProto]) -> dict[str, list[int]]:
    """Tensor name -> the positions in `nodes` of the nodes that read it (subgraphs included)."""
    readers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for t in _reads(n):
            readers.setdefault(t, []).append(i)
    return readers


def ancestor_nodes(
    tensors: list[str],
    producer: dict[str, onnx.NodeProto],
    stop: AbstractSet[str] = frozenset(),
) -> list[onnx.NodeProto]:
    """The nodes `tensors` depend on (in no particular order), not walking back past `stop`."""
    found: dict[int, onnx.NodeProto] = {}
    stack = list(tensors)
    while stack:
        n = producer.get(stack.pop())
        if n is None or id(n) in found:
            continue
        found[id(n)] = n
        stack.extend(i for i in _reads(n) if i not in stop)
    return list(found.values())


def prefix_model(
    proto: onnx.ModelProto,
    outputs: list[str],
    given: dict[str, onnx.ValueInfoProto] | None = None,
) -> onnx.ModelProto:
    """Only the nodes `outputs` depend on, with those outputs. ONNX Runtime runs every node of
    a session whatever outputs are asked for, so a pass that wants one early tensor at a
    time (bias correction, reconstruction inputs) would otherwise pay for the whole model.
    `given`: tensors whose values the caller feeds (their info as inputs): nothing before
    them is included."""
    given = given or {}
    producer = {o: n for n in proto.graph.node for o in n.output}
    needed = {id(n) for n in ancestor_nodes(outputs, producer, stop=given.keys())}
    nodes = [n for n in proto.graph.node if id(n) in needed]
    read = set().union(*(_reads(n) for n in nodes)) | set(outputs)
    info = {v.name: v for v in list(proto.graph.value_info) + list(proto.graph.output)}
    inputs = [v for t, v in sorted(given.items()) if t in read]
    inputs += [i for i in proto.graph.input if i.name in read and i.name not in given]
    graph = onnx.helper.make_graph(
        nodes,
        proto.graph.name,
        inputs,
        [info.get(o) or onnx.helper.make_empty_tensor_value_info(o) for o in outputs],
        [t for t in proto.graph.initializer if t.name in read and t.name not in given],
    )
    out = onnx.helper.make_model(graph, opset_imports=list(proto.opset_import))
    out.ir_version = proto.ir_version
    return out
