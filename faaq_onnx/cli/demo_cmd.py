"""`faaq demo`: the whole job on data that ships with scikit-learn, no downloads.

Trains the small digits CNN (a few seconds), exports it to ONNX, quantizes it at
several uniform schemes with calibration on the training split, and evaluates each
on the held-out split: the main job on an embedded default.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option(
    "--out",
    "out_dir",
    default="out/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the models, data and reports.",
)
@click.option("--schemes", default="w8a8,w6a6,w4a8,w4a4", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def command(out_dir, schemes, seed):
    """Train, export, quantize and evaluate a digits CNN end to end."""
    import numpy as np

    _require_dev_extra()

    from faaq_onnx import zoo
    from faaq_onnx.cli.common import human_bytes, write_json
    from faaq_onnx.config import QuantConfig
    from faaq_onnx.evaluate import compare, evaluate
    from faaq_onnx.outputs import check_destinations
    from faaq_onnx.pipeline import quantize

    out = Path(out_dir)
    check_destinations({"--out": out}, folders=("--out",))
    out.mkdir(parents=True, exist_ok=True)
    click.echo("training digits-cnn on scikit-learn's digits ...")
    module, (x_tr, _y_tr), (x_te, y_te) = zoo.train_digits_cnn(seed=seed)
    import torch

    float_path = zoo.export_module(module, torch.from_numpy(x_tr[:1]), out / "digits_cnn.onnx")
    np.savez(out / "calib.npz", input=x_tr)
    np.savez(out / "test.npz", x=x_te, y=y_te)
    ref = evaluate(float_path, x_te, y_te)
    click.echo(
        f"float      top-1 {100 * ref['top1']:6.2f}%  {human_bytes(float_path.stat().st_size):>10}"
    )
    summary = {"float": {"top1": ref["top1"], "bytes": float_path.stat().st_size}}
    for scheme in schemes.split(","):
        q_path = out / f"digits_cnn.{scheme}.onnx"
        res = quantize(
            float_path,
            str(out / "calib.npz"),
            q_path,
            QuantConfig(scheme=scheme, seed=seed, progress=False),
        )
        rep = evaluate(q_path, x_te, y_te)
        drop = compare(ref, rep)
        size = res.report["verify"]["size"]
        click.echo(
            f"{scheme:10} top-1 {100 * rep['top1']:6.2f}%  {human_bytes(q_path.stat().st_size):>10}  "
            f"weights {size['effective_weight_bits']:.0f} bits ({human_bytes(size['weight_stored_bytes'])} stored)  "
            f"worst-class drop {100 * drop['worst_class_drop']['drop']:+.1f} pt"
        )
        summary[scheme] = {
            "top1": rep["top1"],
            "bytes": q_path.stat().st_size,
            "report": res.report,
            "worst_class_drop": drop["worst_class_drop"],
        }
    write_json(out / "demo.json", summary)
    click.echo(f"models, data and demo.json in {out}/")


def _require_dev_extra() -> None:
    """The demo trains with torch on scikit-learn's digits: both come with the dev extra."""
    import importlib

    from faaq_onnx.errors import FaaqError

    missing = []
    for module, package in (("torch", "torch==2.13.0"), ("sklearn", "scikit-learn")):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise FaaqError(
            f"faaq demo needs {' and '.join(missing)}, which come with the dev extra: "
            "pip install -c constraints.txt -e '.[dev]'"
        )
