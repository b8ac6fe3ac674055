"""Check the emitted model the way a user's service will meet it.

onnx.checker, a plain ONNX Runtime session (nothing of ours at run time), output
SQNR against the float model on held calibration inputs, and honest size accounting:
effective bits and the bytes actually stored, side by side.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx

from faaq_onnx.analysis.output_store import OutputStore, RunningComparison
from faaq_onnx.errors import FaaqError
from faaq_onnx.graph import check_model
from faaq_onnx.runtime.kernels import compare_kernels
from faaq_onnx.runtime.runner import run_batches
from faaq_onnx.runtime.session import make_session


def verify(float_proto: onnx.ModelProto, quant_proto: onnx.ModelProto, inputs: dict[str, np.ndarray],
           emitted: dict, batch_size: int = 16) -> dict:
    try:
        check_model(quant_proto)
    except onnx.checker.ValidationError as exc:
        raise FaaqError(f"internal error: the emitted model fails onnx.checker: {str(exc).splitlines()[0]}") from exc
    # one session at a time: the float model's weights and the quantized model's are never
    # resident together (what bounds the peak memory of a big model); the float outputs wait
    # in bounded memory (OutputStore) and are compared batch by batch
    n = int(len(next(iter(inputs.values()))))
    ref_sess = make_session(float_proto)
    names = [o.name for o in ref_sess.get_outputs()]
    store = OutputStore(n)
    for start, outs in run_batches(ref_sess, inputs, batch_size, names):
        for name, arr in zip(names, outs):
            store.put(name, start, arr)
    del ref_sess
    with tempfile.TemporaryDirectory(prefix="faaq-verify-") as tmp:
        # the graph ORT really runs: which quantized ops got integer kernels
        opt_path = os.path.join(tmp, "optimized.onnx")
        q_sess = make_session(quant_proto, optimized_model_path=opt_path)
        kernels = compare_kernels(quant_proto, onnx.load(opt_path, load_external_data=False))
    compare = {name: RunningComparison() for name in names}
    for start, outs in run_batches(q_sess, inputs, batch_size, names):
        for name, arr in zip(names, outs):
            compare[name].update(store.get(name, start, start + len(arr)), arr)
    del q_sess
    store.close()
    outputs = {}
    for name, c in compare.items():
        if not c.finite:
            raise FaaqError(f"the quantized model produces non-finite values in output {name!r}")
        outputs[name] = c.result()
    return {
        "samples": int(len(next(iter(inputs.values())))),
        "outputs": outputs,
        "size": size_report(float_proto, quant_proto, emitted),
        "kernels": {"summary": kernels["summary"], "nodes": kernels["quantized_nodes"],
                    "integer": sum(q["integer_kernel"] for q in kernels["quantized_nodes"]),
                    "quantized": len(kernels["quantized_nodes"])},
    }


def model_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of the model as written: the protobuf and the data it keeps in external files."""
    from faaq_onnx.external_data import external_bytes

    return proto.ByteSize() + external_bytes(proto)


def size_report(float_proto: onnx.ModelProto, quant_proto: onnx.ModelProto, emitted: dict) -> dict:
    weights = emitted.get("weights", {})
    elements = sum(w["elements"] for w in weights.values())
    eff_bits = sum(w["bits"] * w["elements"] for w in weights.values())
    stored = sum(w["stored_bytes"] for w in weights.values())
    return {
        "float_model_bytes": model_bytes(float_proto),
        "quant_model_bytes": model_bytes(quant_proto),
        "quantized_weight_elements": elements,
        "weight_float_bytes": elements * 4,
        "weight_stored_bytes": stored,
        "effective_weight_bits": eff_bits / elements if elements else 0.0,
        "stored_weight_bits": 8 * stored / elements if elements else 0.0,
        "per_weight": weights,
    }
