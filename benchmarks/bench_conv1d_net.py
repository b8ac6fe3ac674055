"""A 1-D CNN (keyword spotting / ECG style: Conv1d ResNet with squeeze-excite, 40 x 400 input)
through both torch exporters: faaq W8A8's kernels, output SQNR and latency against the float file.

Random weights and BatchNorm statistics, Gaussian inputs with a per-band offset (64 to
calibrate, one more to time), batch 1, interleaved (faaq_onnx.runtime.timing).

    python benchmarks/bench_conv1d_net.py
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
from common import write_table


def _net():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class SE(nn.Module):
        def __init__(s, c):
            super().__init__()
            s.a, s.b = nn.Conv1d(c, c // 4, 1), nn.Conv1d(c // 4, c, 1)

        def forward(s, x):
            return x * torch.sigmoid(s.b(F.relu(s.a(x.mean(2, keepdim=True)))))

    class Block(nn.Module):
        def __init__(s, cin, cout, st):
            super().__init__()
            s.c1, s.b1 = nn.Conv1d(cin, cout, 9, st, 4, bias=False), nn.BatchNorm1d(cout)
            s.c2, s.b2 = nn.Conv1d(cout, cout, 9, 1, 4, bias=False), nn.BatchNorm1d(cout)
            s.se = SE(cout)
            s.down = (
                nn.Sequential(nn.Conv1d(cin, cout, 1, st, bias=False), nn.BatchNorm1d(cout))
                if st > 1 or cin != cout
                else None
            )

        def forward(s, x):
            y = s.se(s.b2(s.c2(F.relu(s.b1(s.c1(x))))))
            return F.relu(y + (s.down(x) if s.down is not None else x))

    class Net(nn.Module):  # a 1-D ResNet with SE (keyword spotting / ECG style), 40 x 400 input
        def __init__(s):
            super().__init__()
            s.stem = nn.Sequential(
                nn.Conv1d(40, 64, 7, 2, 3, bias=False), nn.BatchNorm1d(64), nn.ReLU()
            )
            s.blocks = nn.Sequential(
                Block(64, 64, 1), Block(64, 128, 2), Block(128, 128, 1), Block(128, 256, 2)
            )
            s.fc = nn.Linear(256, 12)

        def forward(s, x):
            return s.fc(s.blocks(s.stem(x)).mean(2))

    return Net


def main() -> None:
    import torch
    import torch.nn as nn

    from faaq_onnx.runtime.timing import interleaved_median_ms

    work = Path(tempfile.mkdtemp(prefix="faaq-conv1d-"))
    torch.manual_seed(0)
    model = _net()().eval()
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm1d):
            mod.running_mean.normal_(0, 0.1)
            mod.running_var.uniform_(0.5, 1.0)
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((65, 40, 400)) + rng.standard_normal((65, 40, 1))).astype("float32")
    np.savez(work / "calib.npz", input=data[:64])
    rows, loads = [], [os.getloadavg()[0]]
    for exporter, opset in (("ts", 17), ("dynamo", 18)):
        src = work / f"conv1d-{exporter}.onnx"
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
            torch.no_grad(),
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.randn(1, 40, 400),),
                str(src),
                dynamo=exporter == "dynamo",
                opset_version=opset,
                input_names=["input"],
                output_names=["output"],
                **({"external_data": False} if exporter == "dynamo" else {}),
            )
        out = work / f"conv1d-{exporter}.q.onnx"
        cmd = ["faaq", "quantize", str(src), "-o", str(out), "--calib", str(work / "calib.npz")]
        done = subprocess.run(
            [*cmd, "--scheme", "w8a8"], capture_output=True, text=True, check=True
        )
        sqnr = re.search(r"output SQNR (-?[0-9.]+) dB", done.stdout)
        kernels = re.search(r"weighted ops \(Conv, Gemm, MatMul\): (\d+ of \d+)", done.stdout)
        ms = interleaved_median_ms([str(src), str(out)], {"input": data[64:]}, pairs=300, seed=0)
        loads.append(os.getloadavg()[0])
        rows.append(
            {
                "exporter": f"{exporter} {opset}",
                "sqnr_db": float(sqnr.group(1)) if sqnr else None,
                "weighted_int": kernels.group(1) if kernels else None,
                "ms": [round(v, 4) for v in ms],
            }
        )
        print(rows[-1])
    write_table(
        "conv1d_net",
        "A 1-D CNN (Conv1d ResNet with squeeze-excite): faaq W8A8 against the float file",
        "python benchmarks/bench_conv1d_net.py",
        loads,
        [
            "exporter",
            "weighted ops on integer kernels",
            "output SQNR dB",
            "ms float",
            "ms W8A8",
            "ratio",
        ],
        [
            [
                r["exporter"],
                r["weighted_int"],
                r["sqnr_db"],
                *r["ms"],
                round(r["ms"][1] / r["ms"][0], 2),
            ]
            for r in rows
        ],
        how="300 interleaved pairs, batch 1",
    )


if __name__ == "__main__":
    main()
