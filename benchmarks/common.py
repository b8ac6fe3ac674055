"""Helpers every benchmark shares: where the real data is, exporting zoo models, timing."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def data_dir(arg: str | None) -> Path:
    d = arg or os.environ.get("FAAQ_DATA_DIR")
    if not d or not Path(d).is_dir():
        raise SystemExit(
            "set --data-dir or FAAQ_DATA_DIR to the folder with the real data (../shared/data)"
        )
    os.environ["FAAQ_DATA_DIR"] = str(Path(d).resolve())
    return Path(d)


def seed_key(key: str, seed: int) -> str:
    """A result row's key under calibration draw `seed` (draw 0 keeps the plain key)."""
    return f"{key}|seed={seed}" if seed else key


def paired_stats(diffs) -> dict:
    """Paired differences over calibration draws: mean, sample sd, paired t (mean over its
    standard error; nan with fewer than two draws or no spread) and the sign counts."""
    import numpy as np

    d = np.asarray(diffs, np.float64)
    sd = float(d.std(ddof=1)) if len(d) > 1 else float("nan")
    t = float(d.mean() / (sd / np.sqrt(len(d)))) if len(d) > 1 and sd > 0 else float("nan")
    return {
        "draws": len(d),
        "mean": float(d.mean()),
        "sd": sd,
        "t": t,
        "pos": int(np.sum(d > 0)),
        "zero": int(np.sum(d == 0)),
        "neg": int(np.sum(d < 0)),
    }


def cifar_model(name: str, ddir: Path, work: Path, keep_batchnorm: bool = False) -> Path:
    """Export a CIFAR zoo model with its real checkpoint (cached in work/)."""
    from faaq_onnx import zoo

    ckpt = {"resnet20-cifar10": "resnet20-12fca82f.th", "resnet56-cifar10": "resnet56-4bfd9763.th"}[
        name
    ]
    out = work / f"{name}{'-bn' if keep_batchnorm else ''}.onnx"
    if not out.exists():
        zoo.export(name, out, weights=str(ddir / "cifar10" / ckpt), keep_batchnorm=keep_batchnorm)
    return out


def machine() -> dict:
    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": __import__("onnxruntime").__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def run_meta(loads: list[float]) -> dict:
    """A benchmark's header facts: machine(), git_state() and the load range over its runs."""
    return {**machine(), **git_state(), "load": [min(loads), max(loads)]}


def meta_stamp(meta: dict) -> str:
    """run_meta as a header's words: '2026-12-06 18:35 git 6aa6b66, load 0.4-2.2.'"""
    lo, hi = meta["load"]
    return f"{meta.get('date', '')} git {meta.get('head', '')}, load {lo:.1f}-{hi:.1f}."


def previous(name: str) -> dict:
    """What the last run of a benchmark wrote with `write(name, ...)` ({} if none): benchmarks
    whose parts run separately add their rows to it."""
    path = OUT / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def md_table(headers: list[str], rows: list[list]) -> list[str]:
    """A markdown table's lines: the header, its rule, and one line per row of cells."""
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def write_table(
    name: str,
    title: str,
    command: str,
    loads: list[float],
    headers: list[str],
    rows: list[list],
    how: str = "",
) -> None:
    """A one-table benchmark's page and its data: the title, the command (`how` it times, in
    parentheses) with the run's date, git state and load (run_meta), the table; the JSON holds
    the same rows and the meta."""
    meta = run_meta(loads)
    head = f"`{command}`" + (f" ({how})" if how else "") + f": {meta_stamp(meta)}"
    markdown = "\n".join([f"# {title}", "", head, "", *md_table(headers, rows)])
    write(name, {"meta": meta, "headers": headers, "rows": rows}, markdown + "\n")


def write(name: str, payload: dict, markdown: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str))
    (OUT / f"{name}.md").write_text(markdown)
    print(markdown)


def ort_quantize_static(src: Path, dst: Path, calib: dict, weight_type: str = "QInt8") -> float:
    """ONNX Runtime's documented static flow, timed: quant_pre_process, then quantize_static
    (QDQ, per-channel weights of `weight_type` (QInt8, QInt4), uint8 activations, MinMax).
    Returns seconds."""
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
            n = len(next(iter(calib.values())))
            self.it = iter([{k: v[i : i + 1] for k, v in calib.items()} for i in range(n)])

        def get_next(self):
            return next(self.it, None)

    t0 = time.perf_counter()
    pre = Path(dst).with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre))
    quantize_static(
        str(pre),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=getattr(QuantType, weight_type),
        calibrate_method=CalibrationMethod.MinMax,
    )
    pre.unlink(missing_ok=True)
    return time.perf_counter() - t0


def git_state() -> dict:
    """The library version this run used: HEAD and the files that differ from it (read-only git)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.split("\n")
        return {"head": head, "modified": [d[3:] for d in dirty if d.strip()]}
    except OSError:
        return {}


def timed_process(cmd: list[str], cwd=None, env=None) -> dict:
    """Run `cmd` to its end (its output dropped; raises where it fails): its wall seconds and its
    peak resident memory in MB (the child's own ru_maxrss, as GNU time's %M reports it)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen.wait
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def faaq_cli(*args: str, stderr=subprocess.DEVNULL) -> float:
    """Wall seconds of one `python -m faaq_onnx ARGS` process (raises where it fails); its stdout
    is dropped, and its stderr unless `stderr=None`."""
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "faaq_onnx", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    return time.perf_counter() - t0


def scores(reference: Path, models: list[Path], data: Path, work: Path) -> dict:
    """`faaq eval` of each model against the float `reference` on labeled `data`, by file name:
    top-1 %, agreement % with the reference's class, KL to it, logit SQNR (dB), and the
    reference's own top-1 % (float_top1)."""
    out = work / "eval.json"
    cmd = [sys.executable, "-m", "faaq_onnx", "eval", str(reference), *map(str, models)]
    subprocess.run(
        [*cmd, "--data", str(data), "--json", str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    got = json.loads(out.read_text())["models"]
    return {
        m.name: {
            "top1": 100 * got[str(m)]["top1"],
            "agreement": 100 * got[str(m)]["vs_reference"]["agreement"],
            "kl": got[str(m)]["vs_reference"]["kl"],
            "logit_sqnr_db": got[str(m)]["vs_reference"]["logit_sqnr_db"],
            "float_top1": 100 * got[str(reference)]["top1"],
        }
        for m in models
    }


def one_input_model(nodes, x_shape, inits: dict, opset: int = 17):
    """A float model of `nodes` reading one input 'x' of `x_shape` and writing 'y', with
    {name: array} initializers, IR 10 (what the one-op benchmarks time)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def int8_weight_inits(w, scale: float = 0.002) -> dict:
    """The float weight 'w' and its int8 form for a DequantizeLinear ('wq', 'ws', 'wz': symmetric,
    per tensor at `scale`), as the one-op benchmarks' QDQ models read them."""
    import numpy as np

    return {
        "w": w,
        "wq": np.clip(np.round(w / scale), -127, 127).astype(np.int8),
        "ws": np.array(scale, np.float32),
        "wz": np.array(0, np.int8),
    }
