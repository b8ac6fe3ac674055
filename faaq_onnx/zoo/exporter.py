"""Export torch modules (zoo models or any other) to ONNX that ORT and the passes read."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from faaq_onnx.data.presets import PRESET_METADATA_KEY
from faaq_onnx.errors import FaaqError
from faaq_onnx.zoo.registry import _entry, build

#: ORT 1.2x rejects models with a newer IR version than it knows; 10 is what it reads.
EXPORT_IR_VERSION = 10

#: metadata a zoo export records: its zoo name, and its preset under PRESET_METADATA_KEY
#: (read back with faaq_onnx.data.model_preset)
ZOO_MODEL_METADATA_KEY = "faaq.zoo_model"


#: shape-arithmetic ops the legacy exporter wraps around constant pads; folded when
#: all their inputs are constants
_FOLDABLE = {
    "Cast",
    "Concat",
    "ConstantOfShape",
    "Gather",
    "Reshape",
    "Slice",
    "Squeeze",
    "Transpose",
    "Unsqueeze",
}


def _constant_values(graph) -> dict:
    from onnx import numpy_helper

    values = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if (
            node.op_type == "Constant"
            and len(node.attribute) == 1
            and node.attribute[0].name == "value"
        ):
            values[node.output[0]] = node.attribute[0].t
    return {k: numpy_helper.to_array(v) for k, v in values.items()}


def _fold_constant(name: str, producers: dict, consts: dict, depth: int = 0):
    """The value of tensor ``name`` if it is computed from constants only, else None."""
    if name in consts:
        return consts[name]
    node = producers.get(name)
    if node is None or node.op_type not in _FOLDABLE or depth > 32:
        return None
    feeds = {}
    for i in node.input:
        if i:
            value = _fold_constant(i, producers, consts, depth + 1)
            if value is None:
                return None
            feeds[i] = value
    from onnx.reference import ReferenceEvaluator

    for out, value in zip(node.output, ReferenceEvaluator(node).run(None, feeds)):
        consts[out] = value
    return consts.get(name)


def _remove_dead_nodes(graph) -> None:
    """Drop nodes (and initializers) nothing reads any more; ONNX ops have no side effects."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    for init in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(init)


def fold_pads_into_convs(model) -> int:
    """Fold zero-constant spatial ``Pad`` nodes into the ``pads`` of the Convs they feed.

    TF-style "SAME" padding exports as Pad + Conv (torch's Conv2d has only symmetric
    padding); ONNX Conv takes begin/end pads itself, so the Pad is redundant and would
    only sit between an activation and its Conv. Returns how many Pads were folded.
    """
    g = model.graph
    consts = _constant_values(g)
    producers = {out: node for node in g.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in g.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in g.output}
    folded = []
    for pad in g.node:
        if pad.op_type != "Pad" or len(pad.input) > 3 or pad.output[0] in outputs:
            continue
        attrs = {a.name: a for a in pad.attribute}
        if "mode" in attrs and attrs["mode"].s not in (b"", b"constant"):
            continue
        if "pads" in attrs:  # opset < 11
            pads = list(attrs["pads"].ints)
            value = attrs["value"].f if "value" in attrs else 0.0
        else:
            pads_value = (
                _fold_constant(pad.input[1], producers, consts) if len(pad.input) > 1 else None
            )
            value_name = pad.input[2] if len(pad.input) > 2 else ""
            fill = _fold_constant(value_name, producers, consts) if value_name else None
            if pads_value is None or (value_name and fill is None):
                continue
            pads = [int(v) for v in pads_value.reshape(-1)]
            value = float(fill.reshape(-1)[0]) if fill is not None else 0.0
        rank = len(pads) // 2
        users = consumers.get(pad.output[0], [])
        if (
            value != 0.0
            or rank < 3
            or any(p < 0 for p in pads)
            or pads[0]
            or pads[1]
            or pads[rank]
            or pads[rank + 1]
            or not users
        ):
            continue
        if any(
            u.op_type != "Conv"
            or list(u.input).count(pad.output[0]) != 1
            or u.input[0] != pad.output[0]
            or any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for a in u.attribute)
            for u in users
        ):
            continue
        spatial = pads[2:rank] + pads[rank + 2 :]  # begin pads of H, W, ... then end pads
        for conv in users:
            conv_pads = next((a for a in conv.attribute if a.name == "pads"), None)
            if conv_pads is None:
                from onnx import helper

                conv.attribute.append(helper.make_attribute("pads", [0] * len(spatial)))
                conv_pads = conv.attribute[-1]
            merged = [int(a) + b for a, b in zip(conv_pads.ints, spatial)]
            del conv_pads.ints[:]
            conv_pads.ints.extend(merged)
            conv.input[0] = pad.input[0]
        folded.append(pad)
    for pad in folded:
        g.node.remove(pad)
    if folded:
        _remove_dead_nodes(g)
    return len(folded)


def export_module(
    module: nn.Module,
    example_input: torch.Tensor,
    out_path: str | os.PathLike,
    opset: int = 17,
    dynamic_batch: bool = True,
    metadata: dict[str, str] | None = None,
    keep_batchnorm: bool = False,
) -> Path:
    """Export with the TorchScript exporter and save atomically.

    The legacy exporter (dynamo=False) is used because it gives plain, stable graphs
    with one node per torch op and named initializers, which is what the passes expect.
    Zero Pads in front of Convs are folded into the Conv (see ``fold_pads_into_convs``);
    ``metadata`` goes into the model's ``metadata_props``. ``keep_batchnorm`` exports
    BatchNormalization nodes instead of folding them into the convs (what data-free
    calibration distills its inputs from; faaq folds them itself when it quantizes).
    """
    import onnx

    from faaq_onnx.outputs import atomic_path

    out = Path(out_path)
    module = module.eval()
    # whole or absent, with the mode the user's umask gives (mkstemp alone left it 0600)
    with atomic_path(out) as tmp:
        kwargs: dict[str, Any] = {}
        if dynamic_batch:
            kwargs["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
        if keep_batchnorm:
            kwargs["training"] = torch.onnx.TrainingMode.PRESERVE  # eval-mode BN, kept as a node
        with torch.no_grad(), warnings.catch_warnings():
            # the option-A shortcut's strided slice cannot be folded; harmless, and noisy
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(
                module,
                (example_input,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=["logits"],
                do_constant_folding=True,
                **kwargs,
            )
        model = onnx.load(str(tmp))
        model.ir_version = EXPORT_IR_VERSION
        fold_pads_into_convs(model)
        for key, value in (metadata or {}).items():
            model.metadata_props.add(key=str(key), value=str(value))
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(tmp))
    return out


def export(
    name: str,
    out_path: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    opset: int = 17,
    batch: int | None = None,
    seed: int = 0,
    keep_batchnorm: bool = False,
) -> Path:
    """Build a zoo model and export it; ``batch=None`` leaves a dynamic 'batch' dimension.

    ``weights="auto"`` loads the checkpoint an installed package ships (see ``ZooEntry``).
    The model records its zoo name and data preset in ``metadata_props``.
    """
    entry = _entry(name)
    if batch is not None and batch < 1:
        raise FaaqError(f"batch must be a positive integer, got {batch}")
    model = build(name, weights=weights, seed=seed)
    shape = (batch or 1, *entry.input_shape[1:])
    example = torch.zeros(shape, dtype=torch.float32)
    meta = {ZOO_MODEL_METADATA_KEY: name, PRESET_METADATA_KEY: entry.preset}
    return export_module(
        model,
        example,
        out_path,
        opset=opset,
        dynamic_batch=batch is None,
        metadata=meta,
        keep_batchnorm=keep_batchnorm,
    )
