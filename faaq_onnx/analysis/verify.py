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

from faaq_onnx.errors import FaaqError
from faaq_onnx.graph import check_model
from faaq_onnx.analysis.metrics import sqnr_db
from faaq_onnx.runtime.kernels import compare_kernels
from faaq_onnx.runtime.runner import run_all
from faaq_onnx.runtime.session import make_session


def verify(float_proto: onnx.ModelProto, quant_proto: onnx.ModelProto, inputs: dict[str, np.ndarray],
           emitted: dict, batch_size: int = 16) -> dict:
    try:
        check_model(quant_proto)
    except onnx.checker.ValidationError as exc:
        raise FaaqError(f"internal error: the emitted model fails onnx.checker: {str(exc).splitlines()[0]}") from exc
    # one session at a time: the float model's weights and the quantized model's are never
    # resident together (what bounds the peak memory of a big model)
    ref_sess = make_session(float_proto)
    names = [o.name for o in ref_sess.get_outputs()]
    ref = run_all(ref_sess, inputs, batch_size, names)
    del ref_sess
    with tempfile.TemporaryDirectory(prefix="faaq-verify-") as tmp:
        # the graph ORT really runs: which quantized ops got integer kernels
        opt_path = os.path.join(tmp, "optimized.onnx")
        q_sess = make_session(quant_proto, optimized_model_path=opt_path)
        kernels = compare_kernels(quant_proto, onnx.load(opt_path, load_external_data=False))
    got = run_all(q_sess, inputs, batch_size, names)
    del q_sess
    outputs = {}
    for name, r, g in zip(names, ref, got):
        if not np.all(np.isfinite(g)):
            raise FaaqError(f"the quantized model produces non-finite values in output {name!r}")
        entry = {"sqnr_db": sqnr_db(r, g)}
        if r.ndim == 2 and r.shape[1] > 1:
            entry["top1_agreement"] = float(np.mean(r.argmax(1) == g.argmax(1)))
        outputs[name] = entry
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
