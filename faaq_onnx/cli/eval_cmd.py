"""`faaq eval`: accuracy of one or more models on labeled data."""

from __future__ import annotations

import click

from faaq_onnx.cli.common import at_least, input_files, json_option, write_json


@click.command("eval")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--data",
    required=True,
    help="Labeled data: .npz with x and y, .npz with y and one array per model input, or an image folder with --labels.",
)
@click.option(
    "--labels", default=None, help="Labels file (FILENAME, LABEL per line) for an image folder."
)
@click.option(
    "--preset", default=None, help="Preprocessing preset: cifar10, imagenet, digits, none."
)
@click.option(
    "--limit", type=int, default=None, help="Evaluate on a seeded subset of this many samples."
)
@click.option("--per-class", is_flag=True, help="Print per-class accuracy.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option(
    "--ep", default="cpu", show_default=True, help="Execution provider: cpu, cuda or auto."
)
@click.option("--seed", type=int, default=0, show_default=True)
@json_option
def command(models, data, labels, preset, limit, per_class, batch_size, ep, seed, json_path):
    """Top-1/top-5 (and per-class, worst-class) accuracy of MODELS on labeled data.

    With several models the first is the reference and the others get their drop
    against it, overall and for the worst class, and how closely they follow it: the
    share of samples where both predict the same class, KL and logit SQNR, and the
    samples fixed and broken behind the net drop.
    """
    from faaq_onnx import data as data_mod
    from faaq_onnx.evaluate import accuracy_report, compare, fidelity, predict
    from faaq_onnx.outputs import check_destinations

    at_least("--batch-size", batch_size)
    at_least("--limit", limit)
    check_destinations(
        {"--json": json_path},
        input_files(
            **{f"model {m}": m for m in models}, **{"labeled data": data, "labels": labels}
        ),
    )
    kwargs = {"labels": labels} if labels else {}
    from faaq_onnx.data.labeled_inputs import load_labeled_data

    x, y = load_labeled_data(
        data_mod.resolve_data_path(data), preset=preset, limit=limit, seed=seed, **kwargs
    )
    results = {}
    ref = ref_logits = None
    for m in models:
        logits = predict(m, x, batch_size, ep)
        rep = accuracy_report(logits, y)
        if ref is not None:
            rep["vs_reference"] = {**compare(ref, rep), **fidelity(logits, ref_logits, y)}
        else:
            ref, ref_logits = rep, logits
        results[m] = rep
        line = f"{m}: top-1 {100 * rep['top1']:.2f}%  top-5 {100 * rep['top5']:.2f}%  ({rep['samples']} samples)"
        line += (
            f"  worst class {rep['worst_class']['class']} {100 * rep['worst_class']['top1']:.1f}%"
        )
        if "vs_reference" in rep:
            v = rep["vs_reference"]
            line += (
                f"  drop {100 * v['top1_drop']:+.2f} pt, worst-class drop "
                f"{100 * v['worst_class_drop']['drop']:+.1f} pt ({v['worst_class_drop']['class']})"
            )
            sqnr = (
                "identical logits"
                if v["logit_sqnr_db"] is None
                else f"logit SQNR {v['logit_sqnr_db']:.1f} dB"
            )
            line += (
                f"\n    vs reference: same class on {100 * v['agreement']:.2f}%, KL {v['kl']:.4f}, {sqnr}, "
                f"{v['fixed']} fixed / {v['broken']} broken"
            )
        click.echo(line)
        if per_class:
            for c, v in rep["per_class"].items():
                click.echo(f"    class {c:>12}: {100 * v['top1']:6.2f}%  (n={v['samples']})")
    if json_path:
        write_json(json_path, {"data": str(data), "models": results})
