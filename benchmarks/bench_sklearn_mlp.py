"""A scikit-learn classifier through skl2onnx, quantized: what a user of sklearn's ONNX export gets.

StandardScaler + MLPClassifier (128, 64) on sklearn's digits set (1,200 training digits, the
other 597 held out), exported by skl2onnx (`to_onnx`, opset 17) twice: as it exports by default
(ZipMap: the probabilities as a sequence of maps) and with `options={'zipmap': False}` (an int64
label output first, then the probabilities). faaq quantizes each with `--scheme w8a8` on 256
training digits; the table gives faaq's exit line or summary SQNR and the held-out accuracy of
the float and quantized files under ONNX Runtime.

scikit-learn and skl2onnx are no dependencies of faaq: the files are written by a second Python
that has them, named by FAAQ_SKL_PYTHON (e.g. the TensorFlow venv of foreign_corpus_tf.py after
`/tmp/tfenv/bin/pip install scikit-learn skl2onnx`):

    FAAQ_SKL_PYTHON=/tmp/tfenv/bin/python python benchmarks/bench_sklearn_mlp.py --work /tmp/skl

Writes benchmarks/out/sklearn_mlp.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _write(work: Path) -> None:
    """Train, export both files and save the data (run by FAAQ_SKL_PYTHON)."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    pipe = make_pipeline(StandardScaler(), MLPClassifier((128, 64), max_iter=300, random_state=0))
    pipe.fit(x[:1200], y[:1200])
    for name, options in (("mlp_zipmap", None), ("mlp", {"zipmap": False})):
        onx = to_onnx(pipe, x[:1], target_opset=17, options=options)
        (work / f"{name}.onnx").write_bytes(onx.SerializeToString())
    np.savez(work / "calib.npz", X=x[:256])
    np.savez(work / "heldout.npz", x=x[1200:], y=y[1200:])


def _accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    label = sess.run([names[0]], {"X": x})[0]
    return float(np.mean(np.asarray(label).reshape(-1) == y))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/skl")
    args = ap.parse_args()
    from common import md_table, meta_stamp, run_meta, write

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    python = os.environ.get("FAAQ_SKL_PYTHON")
    if not python:
        sys.exit("set FAAQ_SKL_PYTHON to a Python with scikit-learn and skl2onnx")
    subprocess.run([python, __file__, "--side", str(work)], check=True)
    held = np.load(work / "heldout.npz")
    rows, loads = [], [os.getloadavg()[0]]
    for name in ("mlp_zipmap", "mlp"):
        src, out = work / f"{name}.onnx", work / f"{name}.w8a8.onnx"
        out.unlink(missing_ok=True)
        cmd = ["faaq", "quantize", str(src), "-o", str(out), "--calib", str(work / "calib.npz")]
        done = subprocess.run([*cmd, "--scheme", "w8a8"], capture_output=True, text=True)
        said = done.stderr.strip().splitlines()[-1:] if done.returncode else []
        sqnr = re.search(r"output SQNR .*?dB[^,;]*", done.stdout)
        row = {
            "file": name,
            "rc": done.returncode,
            "faaq": said[0] if said else (sqnr.group(0) if sqnr else ""),
            "float_acc": _accuracy(src, held["x"], held["y"]),
            "w8a8_acc": _accuracy(out, held["x"], held["y"]) if out.exists() else None,
        }
        rows.append(row)
        print(row, flush=True)
    loads.append(os.getloadavg()[0])
    meta = run_meta(loads)
    cells = [
        [
            r["file"],
            r["rc"],
            r["faaq"],
            f"{100 * r['float_acc']:.2f} %",
            "-" if r["w8a8_acc"] is None else f"{100 * r['w8a8_acc']:.2f} %",
        ]
        for r in rows
    ]
    headers = ["file", "faaq exit", "faaq says", "float accuracy", "W8A8 accuracy"]
    title = "# scikit-learn MLP through skl2onnx, quantized W8A8"
    lines = [title, "", meta_stamp(meta), "", *md_table(headers, cells)]
    write("sklearn_mlp", {"meta": meta, "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--side":
        _write(Path(sys.argv[2]))
    else:
        main()
