"""The options `faaq quantize` shares with `analyze` and `reliability`, and the QuantConfig they
make."""

from __future__ import annotations

import sys

import click

from faaq_onnx.cli.common import seed_option
from faaq_onnx.cli.optimize_options import OPTIMIZE_OPTIONS
from faaq_onnx.config import Candidate, QuantConfig
from faaq_onnx.errors import FaaqError
from faaq_onnx.quant.range_setters import ACTIVATION_METHODS, WEIGHT_METHODS


def quant_options(f):
    """The options every command that quantizes shares (quantize, analyze, eval --trials)."""
    opts = [
        click.option(
            "--calib",
            required=True,
            help="Calibration data: .npz, folder of .npy or images, 'random[:N]' for a smoke run, or "
            "'bn-stats[:N]' / 'none' for data-free calibration (inputs distilled from BatchNorm "
            "statistics).",
        ),
        click.option(
            "--scheme",
            default=None,
            help="Uniform scheme such as w8a8, w4a8, w6a6, w8a16 (default w8a8).",
        ),
        click.option(
            "--first-last",
            default=None,
            help="Keep the first and last weighted layers at this scheme (e.g. w8a8), the common "
            "convention of PTQ papers for W4A4 (a uniform --scheme only).",
        ),
        click.option(
            "--coverage",
            type=click.Choice(["gain", "ort"]),
            default="gain",
            show_default=True,
            help="Which ops get quantizers: 'gain', only those whose integer kernel removes float "
            "work; 'ort', every op ONNX Runtime's own quantizer runs on an integer kernel (also "
            "Sigmoid, Softmax, the Add before a LayerNormalization, a GELU's products...). On "
            "all-MiniLM-L6-v2 W8A8 'ort' was 3.4 pt less accurate at the same speed.",
        ),
        click.option(
            "--weight-bits",
            type=int,
            default=None,
            help="Weight bits (with --act-bits, instead of --scheme).",
        ),
        click.option(
            "--act-bits", type=int, default=None, help="Activation bits (with --weight-bits)."
        ),
        click.option(
            "--granularity",
            type=click.Choice(["per-channel", "per-tensor", "block"]),
            default=None,
            help="Weight scale granularity [default: per-channel; block for weight-only schemes].",
        ),
        click.option(
            "--block-size",
            type=int,
            default=None,
            help="Block size for --granularity block [default: 32; 128 for weight-only schemes, as ONNX "
            "Runtime's MatMul 4-bit quantizer].",
        ),
        click.option(
            "--weight-symmetric/--weight-asymmetric",
            default=None,
            help="[default: asymmetric up to 6 bits, written with zero point 0 (packed codes plus "
            "an int8 offset per channel, folded by ONNX Runtime at load: the symmetric kernel's "
            "speed); symmetric from 7 bits; asymmetric for weight-only schemes, as ONNX Runtime's "
            "quantizer. 7-8-bit asymmetric weights on integer kernels run on a slow path of ORT's "
            "CPU EP (EfficientNet-Lite0 W8A8: 35x): the summary warns]",
        ),
        click.option("--act-symmetric/--act-asymmetric", default=False, show_default=True),
        click.option(
            "--act-range",
            type=click.Choice(ACTIVATION_METHODS),
            default=None,
            help="Activation range setter. mse fits the calibration data's histograms. "
            "[default: mse; minmax with --calib-domain other]",
        ),
        click.option(
            "--weight-range",
            type=click.Choice(WEIGHT_METHODS),
            default="minmax",
            show_default=True,
            help="Weight range setter.",
        ),
        click.option("--percentile", type=float, default=99.99, show_default=True),
        click.option(
            "--calib-size",
            default="256",
            show_default=True,
            help="Use at most this many calibration samples (a seeded subset), or 'all'.",
        ),
        click.option("--batch-size", type=int, default=16, show_default=True),
        click.option(
            "--sensitivity-samples",
            default="auto",
            show_default=True,
            help="Measure sensitivity on this many of the calibration samples, 'all', or 'auto': "
            "16, 32, 64... until the ranking from the first half of the samples agrees with the "
            "second half's (Kendall tau >= 0.9).",
        ),
        click.option("--no-simplify", is_flag=True, help="Skip onnxsim."),
        click.option(
            "--weight-storage",
            type=click.Choice(["cast", "dequant"]),
            default="cast",
            show_default=True,
            help="cast: 2-4-bit weights stored packed (int4, int2) and widened by Cast(int8) in the graph, "
            "which ONNX Runtime folds at load and runs on int8 kernels (QLinearConv, QGemm, "
            "QLinearMatMul). dequant: DequantizeLinear reads the packed int4 weight itself, for runtimes "
            "whose kernels take int4 QDQ weights natively (e.g. ONNX Runtime's QNN EP; TensorRT for "
            "weight-only int4 MatMul); ORT's CPU EP dequantizes such weights on every run and runs "
            "float kernels.",
        ),
        click.option(
            "--int2/--no-int2",
            "int2",
            default=True,
            show_default=True,
            help="Store 2-bit weights as int2 (needs opset 25 and an ONNX Runtime that runs it, checked at "
            "run time; else int4 containers, with a warning).",
        ),
        click.option(
            "--reduce-range",
            type=click.Choice(["auto", "on", "off"]),
            default="auto",
            show_default=True,
            help="8-bit weights in a 7-bit range (ONNX Runtime's reduce_range). Without VNNI (AVX2 x86), "
            "ORT's uint8 x int8 kernels add two products in int16 and saturate: the model no longer "
            "computes what its QDQ graph says. auto: on where ORT saturates on this CPU (asked of ORT "
            "once); off for a model deployed on VNNI CPUs or GPUs.",
        ),
        click.option(
            "--matmul-kernel",
            type=click.Choice(["int8", "nbits", "auto"]),
            default="int8",
            show_default=True,
            help="MatMul/Gemm weights of W*A8 groups: int8 kernels (QLinearMatMul/MatMulInteger, cast "
            "storage), weight-only com.microsoft MatMulNBits (activations stay float), or per node "
            "whichever ORT runs faster on --ep (measured). Weight-only schemes (w4, w8) always use "
            "MatMulNBits.",
        ),
        *OPTIMIZE_OPTIONS,
        seed_option,
        click.option("-q", "--quiet", is_flag=True, help="No progress bars."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def mixed_options(f):
    """Options of the mixed-precision stages (sensitivity and allocation)."""
    from faaq_onnx.analysis.candidates import PRESETS

    opts = [
        click.option(
            "--budget",
            default=None,
            help="avg-bits=N[@effective] | size-mb=N | bops=R[@w8a16] | latency=R | latency-ms=MS | "
            "sqnr-db=N | max-drop=PT: allocate bits per group. avg-bits counts the bits stored "
            "(container width: a 6-bit weight occupies 8) unless @effective. Every budget is "
            "measured on the emitted model; when it cannot be met nothing is written.",
        ),
        click.option(
            "--ep",
            default="cpu",
            show_default=True,
            help="Execution provider whose measured kernel costs a latency budget uses (cpu, cuda).",
        ),
        click.option(
            "--latency-batch",
            type=int,
            default=1,
            show_default=True,
            help="Batch size at which a latency budget (and --measure-latency) is measured.",
        ),
        click.option(
            "--measure-latency",
            is_flag=True,
            help="Time the written model against the float model on --ep at --latency-batch "
            "(interleaved medians) and report the ratio beside the plan's bit operations.",
        ),
        click.option(
            "--candidates",
            default=None,
            help=f"Kernels per group, e.g. w4a8,w8a8,w8a16, or a preset: {', '.join(PRESETS)}.",
        ),
        click.option(
            "--metric",
            type=click.Choice(["sqnr", "kl", "fit"]),
            default="sqnr",
            show_default=True,
            help="Sensitivity metric the allocator minimizes.",
        ),
        click.option(
            "--allocator",
            type=click.Choice(["knapsack", "greedy"]),
            default="knapsack",
            show_default=True,
        ),
        click.option(
            "--labels-data", default=None, help="Labeled .npz (x, y) for --budget max-drop=..."
        ),
        click.option(
            "--cache-dir",
            default=None,
            type=click.Path(file_okay=False),
            help="Where sensitivity tables (and measured kernel costs) are cached "
            "[default: $FAAQ_CACHE_DIR, else ~/.cache/faaq].",
        ),
        click.option(
            "--no-cache", is_flag=True, help="Do not read or write the sensitivity cache."
        ),
        click.option(
            "--workers",
            type=int,
            default=1,
            show_default=True,
            help="Run the sensitivity sweep on this many local Ray workers (needs the ray extra).",
        ),
        click.option(
            "--ray-address",
            default=None,
            help="Run the sensitivity sweep on an existing Ray cluster (ray start --head ...).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def load_labeled_option(path, seed, preset=None):
    if not path:
        return None
    from faaq_onnx import data

    return data.load_labeled(data.resolve_data_path(path), preset=preset, seed=seed)


def _calib_size(text) -> int | None:
    if str(text).strip().lower() == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        raise FaaqError(f"--calib-size must be a positive number or 'all', got {text!r}") from None
    if n < 1:
        raise FaaqError(f"--calib-size must be at least 1 (or 'all'), got {n}")
    return n


def _sensitivity_samples(text) -> int | str | None:
    if text is None or str(text).strip().lower() == "all":
        return None
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        return int(text)  # QuantConfig checks it is at least 1
    except ValueError:
        raise FaaqError(
            f"--sensitivity-samples must be a number, 'all' or 'auto', got {text!r}"
        ) from None


def _bits(option: str, value: int) -> int:
    from faaq_onnx.quant.formats import SUPPORTED_BITS

    if value not in SUPPORTED_BITS:
        raise FaaqError(
            f"{option} {value} unsupported: choose one of {', '.join(map(str, SUPPORTED_BITS))}"
        )
    return value


def config_from_options(o: dict, candidates: str | None = None, **extra) -> QuantConfig:
    """The QuantConfig of the shared options; `extra` sets further fields (workers, latency_batch),
    validated with the rest."""
    wb, ab = o.get("weight_bits"), o.get("act_bits")
    if o.get("scheme") and (wb is not None or ab is not None):
        raise FaaqError("give either --scheme or --weight-bits/--act-bits, not both")
    if wb is not None or ab is not None:
        if wb is None or ab is None:
            raise FaaqError("--weight-bits and --act-bits go together")
        scheme = Candidate(_bits("--weight-bits", wb), _bits("--act-bits", ab))
    else:
        scheme = Candidate.parse(o.get("scheme") or "w8a8")
    weight_only = scheme.weight_only
    if candidates:
        from faaq_onnx.analysis.candidates import parse_candidates

        weight_only = all(c.weight_only for c in parse_candidates(candidates))
    granularity = o["granularity"] or ("block" if weight_only else "per-channel")
    return QuantConfig(
        scheme=scheme,
        weight_granularity=granularity,
        block_size=o["block_size"] if o["block_size"] is not None else (128 if weight_only else 32),
        weight_symmetric=(False if weight_only else None)
        if o["weight_symmetric"] is None
        else o["weight_symmetric"],
        act_symmetric=o["act_symmetric"],
        act_range=o["act_range"],
        weight_range=o["weight_range"],
        percentile=o["percentile"],
        calib_size=_calib_size(o["calib_size"]),
        batch_size=o["batch_size"],
        sensitivity_samples=_sensitivity_samples(o.get("sensitivity_samples", "auto")),
        seed=o["seed"],
        simplify=not o["no_simplify"],
        weight_storage=o.get("weight_storage", "cast"),
        first_last=o.get("first_last"),
        coverage=o.get("coverage", "gain"),
        optimize=o.get("optimize", "none"),
        optimize_iters=o.get("optimize_iters", 1000),
        effort=o.get("effort", "default"),
        calib_domain=o.get("calib_domain", "same"),
        optimize_inputs=o.get("optimize_inputs", "quantized"),
        optimize_samples=o.get("optimize_samples", 256),
        rounding_start=o.get("rounding_start"),
        optimize_positions=o.get("optimize_positions"),
        optimize_holdout=o.get("optimize_holdout", 0.0),
        optimize_patience=o.get("optimize_patience"),
        gptq_asymmetric=o.get("gptq_asymmetric"),
        gptq_clip=o.get("gptq_clip", True),
        optimize_scales=o.get("optimize_scales", False),
        reround=o.get("reround"),
        qdrop=o.get("qdrop", 0.0),
        cle_relu6=o.get("cle_relu6", "keep"),
        smoothquant_alpha=o.get("smoothquant_alpha", 0.5),
        int2=o.get("int2", True),
        reduce_range=o.get("reduce_range", "auto"),
        matmul_kernel=o.get("matmul_kernel", "int8"),
        preset=o.get("preset"),
        progress=not o["quiet"] and sys.stderr.isatty(),
        **extra,
    )
