"""Latency, throughput, size and memory of ONNX models under ONNX Runtime.

Why it is built this way:
- each (model, EP, batch) is measured in a fresh child process by default, so the
  peak resident memory reported is that model's own high-water mark and not the
  largest model measured so far in a shared process (ru_maxrss never goes down);
- latency is the median (and p90) of many timed ``session.run`` calls after a warm-up,
  because the first runs pay for allocation and kernel selection and the mean is
  pulled by the scheduler's outliers;
- the per-op breakdown comes from a *separate* profiled session, so profiling
  overhead never leaks into the latency numbers, and it separates integer kernels
  (what a quantized model is for) from float ops, so "is the model really running in
  int8?" has a one-number answer.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from faaq_onnx.errors import FaaqError
from faaq_onnx.runtime.session import available_eps, make_session, resolve_ep

__all__ = [
    "INTEGER_KERNELS",
    "available_eps",
    "cpu_info",
    "is_integer_kernel",
    "model_bytes",
    "profile_models",
]

#: Ops whose arithmetic is integer: a quantized model's time should be spent here.
INTEGER_KERNELS = frozenset(
    {
        "QLinearConv",
        "QLinearMatMul",
        "MatMulInteger",
        "ConvInteger",
        "QGemm",
        "QLinearAdd",
        "QLinearMul",
        "QLinearGlobalAveragePool",
        "QLinearAveragePool",
        "QLinearConcat",
        "QLinearLeakyRelu",
        "QLinearSigmoid",
        "QLinearSoftmax",
        "QLinearReduceMean",
        "QLinearWhere",
        "QAttention",
        "QEmbedLayerNormalization",
        "MatMulNBits",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLinear",
        "DynamicQuantizeLSTM",
        "QOrderedMatMul",
        "QOrderedAttention",
        "QOrderedLayerNormalization",
        "GatherBlockQuantized",
    }
)
#: Conversions between float and integer: time here is the price of the QDQ format.
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})

_NP_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def is_integer_kernel(op_type: str) -> bool:
    return op_type in INTEGER_KERNELS


def model_bytes(path: str | os.PathLike) -> int:
    """Bytes on disk: the .onnx file plus any external-data files it references."""
    path = Path(path)
    total = path.stat().st_size
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # size of an unreadable file is still its size
        return total
    seen = set()
    for t in proto.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location" and entry.value not in seen:
                seen.add(entry.value)
                f = path.parent / entry.value
                if f.exists():
                    total += f.stat().st_size
    return total


def profile_models(
    paths,
    eps=("cpu",),
    batches=(1, 8),
    warmup: int = 5,
    runs: int = 30,
    threads: int | None = None,
    per_op: bool = False,
    top: int = 15,
    isolate: bool = True,
    seed: int = 0,
    progress=None,
) -> dict:
    """Measure every model x EP x batch; returns a JSON-ready report.

    ``isolate`` runs each measurement in a child process (honest per-model peak RSS);
    without it, peak RSS is the whole calling process's high-water mark and says so.
    ``progress`` is an optional callable taking one status line.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise FaaqError("no model to profile: give at least one .onnx file")
    for p in paths:
        if not p.exists():
            raise FaaqError(f"model file not found: {p}")
        if p.is_dir():
            raise FaaqError(f"{p} is a folder, not an .onnx file")
    if warmup < 0 or runs < 1:
        raise FaaqError(f"need runs >= 1 and warmup >= 0 (got runs={runs}, warmup={warmup})")
    batches = [int(b) for b in batches]
    if not batches or any(b < 1 for b in batches):
        raise FaaqError(f"batch sizes must be positive integers, got {batches}")
    resolved: list[str] = []
    for ep in eps:
        name = resolve_ep(ep)  # one-line FaaqError for an EP this build lacks
        if name not in resolved:
            resolved.append(name)

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    results = []
    for p in paths:
        for ep in resolved:
            for b in batches:
                job = {
                    "path": str(p),
                    "ep": ep,
                    "batch": b,
                    "warmup": warmup,
                    "runs": runs,
                    "threads": threads,
                    "per_op": per_op,
                    "top": top,
                    "seed": seed,
                }
                if progress:
                    progress(f"{p.name} on {ep}, batch {b}")
                res = _run_isolated(job) if isolate else _measure(job)
                if "error" in res:
                    raise FaaqError(f"{p.name} on {ep}, batch {b}: {res['error']}")
                res["model"] = str(p)
                res["model_name"] = p.name
                res["model_bytes"] = model_bytes(p)
                res["peak_rss_scope"] = (
                    "child process (this model only)" if isolate else "whole process (max so far)"
                )
                results.append(res)

    first = str(paths[0])
    base = {
        (r["ep"], r["batch"]): r for r in results if r["model"] == first and r["status"] == "ok"
    }
    for r in results:
        first_run = base.get((r["ep"], r["batch"]))
        if r["status"] == "ok" and first_run is not None:
            r["speedup_vs_first"] = round(first_run["median_ms"] / r["median_ms"], 3)
    return {
        "machine": _machine(threads, load_before),
        "settings": {
            "eps": resolved,
            "batches": batches,
            "warmup": warmup,
            "runs": runs,
            "threads": threads,
            "per_op": per_op,
            "top": top,
            "isolate": isolate,
            "seed": seed,
            "baseline": paths[0].name,
        },
        "results": results,
    }


def cpu_info() -> dict:
    """CPU model and the SIMD features int8 kernels depend on (VNNI, AMX) where Linux tells."""
    info = {"model": platform.processor() or platform.machine(), "int8_features": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and info["model"] in ("", platform.machine()):
            info["model"] = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            info["int8_features"] = sorted(
                f
                for f in flags
                if f
                in {
                    "avx2",
                    "avx512f",
                    "avx512bw",
                    "avx512_vnni",
                    "avx_vnni",
                    "amx_int8",
                    "amx_tile",
                }
            )
            break
    return info


def _machine(threads, load_before) -> dict:
    return {
        "platform": platform.platform(),
        "cpu": cpu_info(),
        "cpu_count": os.cpu_count(),
        "onnxruntime": ort.__version__,
        "available_eps": available_eps(),
        "threads": threads or "onnxruntime default",
        "loadavg_before": list(load_before) if load_before else None,
        "loadavg_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _run_isolated(job: dict) -> dict:
    ctx = mp.get_context("spawn")  # fork would inherit the parent's memory and its threads
    with ctx.Pool(1) as pool:
        return pool.apply(_measure, (job,))


def _rss_mb() -> float:
    # Linux reports ru_maxrss in KiB, macOS in bytes
    scale = 1 if platform.system() == "Darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _feeds(
    session: ort.InferenceSession, batch: int, seed: int
) -> tuple[dict | None, str | None, list[str]]:
    """Random inputs with the batch dim set; (None, reason) when the model's batch is fixed."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for inp in session.get_inputs():
        shape = list(inp.shape)
        if shape:
            d0 = shape[0]
            if isinstance(d0, int) and d0 > 0:
                if d0 != batch:
                    return (
                        None,
                        f"input {inp.name!r} has a fixed batch dimension of {d0}: runs at batch {d0} only",
                        notes,
                    )
            else:
                shape[0] = batch
        for i, d in enumerate(shape[1:], 1):
            if not (isinstance(d, int) and d > 0):
                notes.append(f"{inp.name}: symbolic dim {d!r} set to 1")
                shape[i] = 1
        dt = _NP_TYPES.get(inp.type)
        if dt is None:
            raise FaaqError(
                f"input {inp.name!r} has type {inp.type}, which profiling cannot fill with random data"
            )
        if dt is np.bool_:
            feeds[inp.name] = rng.integers(0, 2, size=shape).astype(bool)
        elif np.issubdtype(dt, np.integer):
            feeds[inp.name] = rng.integers(0, 2, size=shape).astype(dt)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(dt)
    return feeds, None, notes


def _measure(job: dict) -> dict:
    """One model on one EP at one batch size; runs in the child process."""
    try:
        rss0 = _rss_mb()
        session = make_session(job["path"], ep=job["ep"], threads=job["threads"])
        feeds, reason, notes = _feeds(session, job["batch"], job["seed"])
        out = {"ep": job["ep"], "batch": job["batch"], "providers": session.get_providers()}
        if feeds is None:
            out.update(status="skipped", reason=reason)
            return out
        for _ in range(job["warmup"]):
            session.run(None, feeds)
        times = np.empty(job["runs"])
        for i in range(job["runs"]):
            t0 = time.perf_counter()
            session.run(None, feeds)
            times[i] = time.perf_counter() - t0
        ms = times * 1e3
        med = float(np.median(ms))
        out.update(
            status="ok",
            median_ms=round(med, 5),
            p90_ms=round(float(np.percentile(ms, 90)), 5),
            mean_ms=round(float(ms.mean()), 5),
            min_ms=round(float(ms.min()), 5),
            throughput=round(job["batch"] / (med / 1e3), 2),
            rss_baseline_mb=round(rss0, 1),
            peak_rss_mb=round(_rss_mb(), 1),
        )
        if notes:
            out["notes"] = notes
        del session
        if job["per_op"]:
            out["per_op"] = _per_op(job, feeds)
        return out
    except FaaqError as exc:
        return {"error": str(exc)}


def _per_op(job: dict, feeds: dict) -> dict:
    tmp = tempfile.mkdtemp(prefix="faaq-prof-")
    try:
        session = make_session(
            job["path"],
            ep=job["ep"],
            threads=job["threads"],
            profile_prefix=os.path.join(tmp, "ort"),
        )
        for _ in range(job["warmup"]):
            session.run(None, feeds)
        for _ in range(job["runs"]):
            session.run(None, feeds)
        trace = session.end_profiling()
        with open(trace) as f:
            events = json.load(f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return aggregate_trace(events, skip_runs=job["warmup"], top=job["top"])


def aggregate_trace(events: list[dict], skip_runs: int = 0, top: int = 15) -> dict:
    """Time per op type and per node from an ORT profile, warm-up runs left out.

    Each node's time is its median over the timed runs (times the calls per run), so
    one preemption by another process does not make a 10-microsecond Pad look hot.
    """
    run_starts = sorted(
        e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    timed_runs = max(len(run_starts) - skip_runs, 1)
    t_from = run_starts[skip_runs] if len(run_starts) > skip_runs else 0
    by_node: dict[str, dict] = {}
    for e in events:
        if (
            e.get("cat") != "Node"
            or not str(e.get("name", "")).endswith("_kernel_time")
            or e["ts"] < t_from
        ):
            continue
        args = e.get("args", {})
        node = e["name"][: -len("_kernel_time")]
        rec = by_node.setdefault(
            node,
            {
                "node": node,
                "op_type": args.get("op_name", "?"),
                "provider": args.get("provider", ""),
                "durs": [],
            },
        )
        rec["durs"].append(float(e.get("dur", 0)))
    by_op: dict[str, float] = defaultdict(float)
    for rec in by_node.values():
        rec["us"] = float(np.median(rec["durs"])) * len(rec["durs"]) / timed_runs
        by_op[rec["op_type"]] += rec["us"]
    kernel_us = sum(by_op.values())
    total = kernel_us or 1.0  # a share of nothing is 0, not a division by zero
    int_us = sum(v for k, v in by_op.items() if is_integer_kernel(k))
    qdq_us = sum(v for k, v in by_op.items() if k in QDQ_OPS)

    def row(us: float) -> dict:
        return {"ms_per_run": round(us / 1e3, 4), "share": round(us / total, 4)}

    ops = [
        {"op_type": k, "integer": is_integer_kernel(k), **row(v)}
        for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])
    ]
    nodes = [
        {
            "node": r["node"],
            "op_type": r["op_type"],
            "provider": r["provider"],
            "integer": is_integer_kernel(r["op_type"]),
            **row(r["us"]),
        }
        for r in sorted(by_node.values(), key=lambda r: -r["us"])[:top]
    ]
    return {
        "timed_runs": timed_runs,
        "kernel_ms_per_run": round(kernel_us / 1e3, 4),
        "integer_share": round(int_us / total, 4),
        "qdq_share": round(qdq_us / total, 4),
        "float_share": round(max(0.0, 1 - (int_us + qdq_us) / total), 4),
        "by_op_type": ops,
        "top_nodes": nodes,
    }
