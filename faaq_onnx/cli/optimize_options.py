"""The weight-optimization options of every command that quantizes (--optimize, --effort, the
rounding optimizers' settings), in the order `--help` lists them: options.quant_options
places them."""

from __future__ import annotations

import click

from faaq_onnx.config import CALIB_DOMAINS, EFFORTS, OPTIMIZE_INPUTS

OPTIMIZE_OPTIONS = [
    click.option(
        "--optimize",
        default="auto",
        show_default=True,
        help="Weight optimizations, comma-separated. auto (the default): gptq rounds every weight "
        "below 8 bits, then bias correction, which also runs where 8-bit weights keep a 7-bit range "
        "(--reduce-range) in a network with depthwise convolutions; nothing else at 8 bits; none: round to nearest. cle (cross-layer equalization, "
        "data-free), "
        "smoothquant (activation outliers moved into MatMul weights, for W8A8 transformers) or awq "
        "(activation-aware channel scaling, for weight-only), bias-correction (empirical, per "
        "output channel), and one rounding optimizer: adaround (learned rounding, layer by layer), "
        "brecq (block reconstruction between residual Adds, also learns activation step sizes) or "
        "gptq (Hessian-compensated rounding of Conv, ConvTranspose, Gemm and MatMul weights).",
    ),
    click.option(
        "--effort",
        type=click.Choice(list(EFFORTS)),
        default="default",
        show_default=True,
        help="What --optimize auto does to weights below 8 bits. fast: GPTQ on the float "
        "model's layer inputs (one forward pass); default: GPTQ on the quantized model's own "
        "layer inputs, then bias correction; best: AdaRound from GPTQ's solution, 2000 "
        "iterations per layer, a lone Conv's loss on sampled output positions, stopping once "
        "3 layers in a row keep GPTQ's rounding (BRECQ with "
        "QDrop 0.5 and bias correction where activations go below 8 bits), then the "
        "default's rounding of the same plan too, and the model with the higher held-out "
        "output SQNR is written: minutes. With a --scheme below 8 bits (activations at most "
        "8), best also keeps the first and last weighted layers at W8A8 (--first-last to "
        "choose otherwise). An explicit rounding optimizer in --optimize wins.",
    ),
    click.option(
        "--calib-domain",
        type=click.Choice(list(CALIB_DOMAINS)),
        default="same",
        show_default=True,
        help="Are the calibration samples the kind the model will see (same), or not (other: "
        "e.g. another dataset's images)? other fits nothing to them: --optimize auto rounds "
        "weights to nearest (no GPTQ, no bias correction) and activation ranges are min-max "
        "unless --act-range says otherwise. EfficientNet-Lite0 at bops=0.25@w8a16, "
        "calibrated on upscaled CIFAR-10 images: 76.6 % with same, 81.4 % with other (float "
        "81.6); over five folds other on CIFAR images is 0.25 pt below same on ImageNet ones.",
    ),
    click.option(
        "--optimize-iters",
        type=int,
        default=1000,
        show_default=True,
        help="Iterations per layer (adaround) or block (brecq).",
    ),
    click.option(
        "--rounding-start",
        type=click.Choice(["nearest", "gptq"]),
        default=None,
        help="Where adaround/brecq start: the float weights rounded to nearest, or GPTQ's "
        "solution (its error-compensated weights; GPTQ runs first). [default: nearest; gptq "
        "with --effort best]",
    ),
    click.option(
        "--optimize-positions",
        type=click.Choice(["all", "sampled"]),
        default=None,
        help="Where adaround takes a lone Conv layer's loss: every output position of every "
        "image, or positions sampled over all images (the product of their input patches "
        "with the weight: far less work on large feature maps). [default: all; sampled with "
        "--effort best]",
    ),
    click.option(
        "--optimize-holdout",
        type=float,
        default=0.0,
        show_default=True,
        help="Share of the samples (the last) each adaround/brecq unit is not fit to: a unit "
        "keeps its learned rounding only where it measures a lower error than its start on them.",
    ),
    click.option(
        "--optimize-patience",
        type=int,
        default=None,
        help="Stop adaround/brecq after this many units in a row keep their start (GPTQ's "
        "rounding with --rounding-start gptq) because their learned rounding measured worse; "
        "the rest keep their start. 0: never stop. [default: 0; 3 with --effort best]",
    ),
    click.option(
        "--gptq-clip/--no-gptq-clip",
        default=True,
        show_default=True,
        help="GPTQ first narrows each channel's min-max weight range where that lowers the "
        "layer's output error under its Hessian (not with --weight-range mse, which is kept).",
    ),
    click.option(
        "--gptq-asymmetric/--no-gptq-asymmetric",
        default=None,
        help="GPTQ fits each layer to the float model's output (the error upstream layers "
        "left is compensated where it arrives) instead of to its own float weights' output "
        "on the same inputs. Costs a layer-by-layer pass of the float model besides the "
        "quantized one. [default: on for a --scheme or --plan and for a --budget's allocated "
        "plan rounded again (--reround); off for the candidates a --budget rounds, which are "
        "stitched into plans they were not fit in]",
    ),
    click.option(
        "--optimize-inputs",
        type=click.Choice(list(OPTIMIZE_INPUTS)),
        default="quantized",
        show_default=True,
        help="What each reconstructed layer/block is fed: the quantized model's own inputs (weights "
        "upstream rounded, activations quantized), the same with activations float (weights; "
        "what AIMET's AdaRound feeds), the float model's, or a random half-and-half mix of "
        "the quantized and the float model's, drawn anew per element and iteration (mixed; "
        "QDrop's input drop; adaround and brecq).",
    ),
    click.option(
        "--optimize-samples",
        type=int,
        default=256,
        show_default=True,
        help="Calibration samples used for rounding optimization and bias correction.",
    ),
    click.option(
        "--optimize-scales/--no-optimize-scales",
        default=False,
        show_default=True,
        help="adaround/brecq: learn each weight scale (per channel or block) together with the rounding; "
        "the learned scales are the ones emitted.",
    ),
    click.option(
        "--reround/--no-reround",
        default=None,
        help="with a budget: once the plan is allocated, optimize its rounding again with each "
        "layer fed what the mixed plan feeds it (one more pass over its sub-8-bit layers); "
        "--no-reround ships the weights rounded per width in uniform models. Default: on "
        "(GPTQ fits each layer to the float output there, unless --no-gptq-asymmetric).",
    ),
    click.option(
        "--qdrop",
        type=float,
        default=0.0,
        show_default=True,
        help="brecq: probability of keeping an activation element float during reconstruction (QDrop).",
    ),
    click.option(
        "--smoothquant-alpha",
        type=float,
        default=0.5,
        show_default=True,
        help="smoothquant: migration strength (0: none, towards 1: all into the weights).",
    ),
    click.option(
        "--cle-relu6",
        type=click.Choice(["keep", "replace"]),
        default="keep",
        show_default=True,
        help="cle across ReLU6 (Clip 0..6): leave such pairs alone, or replace the Clip by Relu "
        "(the DFQ recipe; changes the float function where activations exceed 6).",
    ),
]
