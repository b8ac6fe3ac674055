"""Check the emitted model the way a user's service will meet it.

onnx.checker, a plain ONNX Runtime session (nothing of ours at run time), output
SQNR against the model the user gave (read from its file, not faaq's rewritten float
model: CLE with --cle-relu6 replace changes the float function) on held-out inputs,
with a lower confidence bound beside the point estimate, and honest size accounting:
effective bits and the bytes actually stored, side by side.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx

from faaq_onnx.analysis.compared import compared_model
from faaq_onnx.analysis.metrics import ratio_db
from faaq_onnx.analysis.output_store import OutputStore, RunningComparison
from faaq_onnx.errors import FaaqError
from faaq_onnx.graph import check_model
from faaq_onnx.runtime.kernels import compare_kernels, recorded_left_float
from faaq_onnx.runtime.runner import run_batches
from faaq_onnx.runtime.session import make_session

DEFAULT_CONFIDENCE = 0.95  # of the lower bound a floor is checked on
BOOTSTRAP_DRAWS = 2000


LATENCY_PAIRS = 30


def bootstrap_means(values, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> np.ndarray:
    """Means of `draws` resamples (with replacement, seeded) of `values`."""
    v = np.asarray(values, np.float64).ravel()
    n = len(v)
    rng = np.random.default_rng(seed)
    out = np.empty(draws)
    step = max(1, (1 << 22) // max(n, 1))  # bounded memory for many samples
    for start in range(0, draws, step):
        k = min(step, draws - start)
        out[start : start + k] = v[rng.integers(0, n, size=(k, n))].mean(axis=1)
    return out


def sqnr_lower_bound_db(ratios, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """Lower `confidence` bound of the output SQNR (dB of the mean per-sample SNR ratio, the
    metric's own definition): percentile bootstrap over the samples. One sample bounds nothing
    (-inf); identical ratios bound at their value."""
    ratios = np.asarray(ratios, np.float64)
    if len(ratios) < 2:
        return -np.inf
    return ratio_db(float(np.quantile(bootstrap_means(ratios), 1.0 - confidence)))


def upper_bound(values, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """Upper `confidence` bound of the mean of per-sample values (percentile bootstrap); +inf for one."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return np.inf
    return float(np.quantile(bootstrap_means(values), confidence))


def verify(
    float_proto: onnx.ModelProto,
    quant_proto: onnx.ModelProto,
    inputs: dict[str, np.ndarray],
    emitted: dict,
    batch_size: int = 16,
    reference=None,
    confidence: float = DEFAULT_CONFIDENCE,
    compared: dict[str, str | None] | None = None,
) -> dict:
    """Check the emitted model; SQNR against `reference` (the model file the user gave, which
    ORT reads itself, read-only), or against `float_proto` where no reference is given.
    `compared`: outputs compared at another tensor (a Softmax output at its logits:
    analysis.compared), in both models."""
    compared = compared or {}
    try:
        check_model(quant_proto)
    except onnx.checker.ValidationError as exc:
        raise FaaqError(
            f"internal error: the emitted model fails onnx.checker: {str(exc).splitlines()[0]}"
        ) from exc
    # one session at a time: the float model's weights and the quantized model's are never
    # resident together (what bounds the peak memory of a big model); the float outputs wait
    # in bounded memory (OutputStore) and are compared batch by batch
    n = int(len(next(iter(inputs.values()))))
    described = (
        "the float model as optimized"
        if reference is None
        else "the model given"
        + (f" ({reference})" if isinstance(reference, (str, os.PathLike)) else "")
    )
    try:
        ref_sess = make_session(
            compared_model(float_proto if reference is None else reference, compared, keep=True)
        )
    except (
        FaaqError
    ) as exc:  # a file ORT cannot load as given (faaq's rewrites made it loadable): say so
        ref_sess, described = (
            make_session(compared_model(float_proto, compared, keep=True)),
            f"the float model as optimized ({described} does not load in ONNX Runtime: {exc})",
        )
    # each output, and the tensor it is compared at
    at = {o.name: compared.get(o.name, o.name) for o in ref_sess.get_outputs()}
    at = {o: t for o, t in at.items() if t is not None and o not in compared.values()}
    names = list(at.values())
    store = OutputStore(n)
    for start, outs in run_batches(ref_sess, inputs, batch_size, names):
        for name, arr in zip(names, outs):
            store.put(name, start, arr)
    del ref_sess
    with tempfile.TemporaryDirectory(prefix="faaq-verify-") as tmp:
        # the graph ORT really runs: which quantized ops got integer kernels
        opt_path = os.path.join(tmp, "optimized.onnx")
        q_sess = make_session(
            compared_model(quant_proto, compared, keep=True), optimized_model_path=opt_path
        )
        # the reasons emission wrote into the model for the ops faaq left float
        kernels = compare_kernels(
            quant_proto,
            onnx.load(opt_path, load_external_data=False),
            left_float=recorded_left_float(quant_proto) or {},
        )
    compare = {name: RunningComparison() for name in names}
    for start, outs in run_batches(q_sess, inputs, batch_size, names):
        for name, arr in zip(names, outs):
            compare[name].update(store.get(name, start, start + len(arr)), arr)
    del q_sess
    store.close()
    outputs = {}
    for out, name in at.items():
        c = compare[name]
        if not c.finite:
            raise FaaqError(f"the quantized model produces non-finite values in output {name!r}")
        outputs[out] = {**c.result(), "sqnr_db_lower": sqnr_lower_bound_db(c.ratios, confidence)}
        if name != out:
            outputs[out]["compared_at"] = name
    return {
        "samples": int(len(next(iter(inputs.values())))),
        "reference": described,
        "confidence": confidence,
        "outputs": outputs,
        "size": size_report(float_proto if reference is None else reference, quant_proto, emitted),
        "kernels": {
            "summary": kernels["summary"],
            "nodes": kernels["quantized_nodes"],
            "integer": sum(q["integer_kernel"] for q in kernels["quantized_nodes"]),
            "quantized": len(kernels["quantized_nodes"]),
            "unquantized": kernels["unquantized_nodes"],
        },
    }


def against_reference(reference, float_proto, measure):
    """`measure(float model)` on the file the user gave, or, where ORT does not load that file
    as it is, on faaq's loadable rewrite of it (the float model faaq works from)."""
    try:
        return measure(reference)
    except FaaqError:
        return measure(float_proto)


def measured_latency(
    reference, float_proto, quant_proto, inputs: dict, ep: str = "cpu", batch: int = 1
) -> dict:
    """The written model's median latency against the float model it came from (the user's file
    where ORT loads it), interleaved and shuffled in one process: a ratio both saw the same load."""
    from faaq_onnx.analysis.latency import _batch_feeds
    from faaq_onnx.runtime.timing import interleaved_median_ms

    feeds = _batch_feeds(inputs, batch)
    q_ms, f_ms = against_reference(
        reference,
        float_proto,
        lambda ref: interleaved_median_ms([quant_proto, ref], feeds, ep=ep, pairs=LATENCY_PAIRS),
    )
    return {
        "ep": ep,
        "batch": batch,
        "runs": LATENCY_PAIRS,
        "quantized_ms": q_ms,
        "float_ms": f_ms,
        "ratio_to_float": q_ms / f_ms,
        "how": f"median of {LATENCY_PAIRS} interleaved runs each, order shuffled, threads not spinning",
    }


def model_bytes(proto) -> int:
    """Bytes of the model as written: the protobuf and the data it keeps in external files
    (for a path: the file and the external data files it names)."""
    from faaq_onnx.external_data import external_bytes

    if isinstance(proto, (str, os.PathLike)):
        header = onnx.load(str(proto), load_external_data=False)
        folder = os.path.dirname(os.path.abspath(proto))
        files = {
            os.path.join(folder, e.value)
            for t in header.graph.initializer
            for e in t.external_data
            if e.key == "location"
        }
        return os.path.getsize(proto) + sum(os.path.getsize(f) for f in files if os.path.isfile(f))
    return proto.ByteSize() + external_bytes(proto)


def written_bytes(proto: onnx.ModelProto, name: str = "model.onnx") -> int:
    """Bytes of every file faaq writes for this model (the .onnx and any external data file),
    measured by writing it, the way the output is written, into a temporary folder."""
    from pathlib import Path

    from faaq_onnx.outputs import save_model_atomic

    with tempfile.TemporaryDirectory(prefix="faaq-size-") as tmp:
        save_model_atomic(proto, Path(tmp) / name)
        return sum(p.stat().st_size for p in Path(tmp).iterdir())


def size_report(float_proto, quant_proto: onnx.ModelProto, emitted: dict) -> dict:
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
