"""What a compilation returns, and writing it: the result object, the atomic write, and the
spill of a big model's emitted weights to a data file ONNX Runtime maps."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx

from faaq_onnx.groups import QuantizerGraph
from faaq_onnx.plan import BitPlan


@dataclass
class QuantizeResult:
    model: onnx.ModelProto
    report: dict
    plan: BitPlan
    qgraph: QuantizerGraph
    timings: dict[str, float] = field(default_factory=dict)


BIG_MODEL_BYTES = 1 << 30


class WorkerView:
    """What a sweep worker needs of a Compilation, with the workers' own settings."""

    def __init__(self, comp, config) -> None:
        self.float_proto, self.qgraph, self.calibration = (
            comp.float_proto,
            comp.qgraph,
            comp.calibration,
        )
        self.inputs, self.weights, self.config = comp.inputs, comp.weights, config


def spill_to_disk(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with its in-protobuf tensors moved to a temporary data file (removed at exit)."""
    import atexit
    import shutil
    import tempfile

    from faaq_onnx.outputs import save_model_atomic

    folder = Path(tempfile.mkdtemp(prefix="faaq-emitted-"))
    atexit.register(shutil.rmtree, folder, True)
    path = save_model_atomic(proto, folder / "emitted.onnx", external_data=True)
    header = onnx.load(str(path), load_external_data=False)
    for t in header.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = str(folder / e.value)
    return header


def write_result(result: QuantizeResult, output) -> None:
    from faaq_onnx.outputs import save_model_atomic

    save_model_atomic(result.model, output)
    result.report["output"] = str(output)
    result.report["output_bytes"] = Path(output).stat().st_size
