"""User-facing options of a quantization run, validated once, up front."""

from __future__ import annotations

import numbers
import re
from dataclasses import asdict, dataclass

from faaq_onnx.errors import FaaqError
from faaq_onnx.quant.formats import SUPPORTED_BITS
from faaq_onnx.quant.range_setters import ACTIVATION_METHODS, WEIGHT_METHODS

COVERAGES = ("ort", "gain")  # which ops get quantizers (analysis/coverage.py)

GRANULARITIES = ("per-tensor", "per-channel", "block")
OPTIMIZERS = ("cle", "smoothquant", "awq", "bias-correction", "adaround", "brecq", "gptq")
AUTO = "auto"  # --optimize's default on the command line: gptq where weights go below 8 bits
# what auto adds, for plans with weights below 8 bits (bias correction also where 8-bit weights
# keep a 7-bit range in a network with depthwise convolutions, see stages/weights.py): EfficientNet-Lite0 W4A8 73.5 % with GPTQ alone,
# 79.7 % with bias correction after it; W8A8 at a 7-bit range 81.13 -> 81.61 % (float 81.61)
AUTO_OPTIMIZERS = ("gptq", "bias-correction")
# --effort: what --optimize auto does below 8 bits. fast: GPTQ from one float pass; default:
# GPTQ on the quantized model's own layer inputs, then bias correction; best: AdaRound (2000
# iterations from GPTQ's solution; ResNet-20 W4A8 80.91 % test, 80.41 % from nearest, 80.33 % from
# nearest with bias correction, so none; it stops after BEST_PATIENCE layers in a row keep
# GPTQ's rounding) or, with activations below 8 bits, BRECQ with QDrop 0.5
# (ResNet-20 W4A4), then bias correction; and then the default too, keeping the model with the
# higher held-out output SQNR (stages/effort.py); best also keeps a sub-8-bit --scheme's first and
# last weighted layers at W8A8 (effort.keep_first_last_at_8_bits)
EFFORTS = ("fast", "default", "best")
# --calib-domain: are the calibration samples the deployment's kind ("same") or not ("other": e.g.
# another dataset's images)? With "other", --optimize auto fits nothing to them (weights round to
# nearest) and activation ranges default to min-max: what is fit to a calibration set's statistics
# (GPTQ's Hessians, bias correction, the re-round's fit to the float output, mse ranges) does not
# carry over to other data. EfficientNet-Lite0 `--budget bops=0.25@w8a16 --candidates wide`
# calibrated on upscaled CIFAR-10 images: 76.6 / 76.7 % with the defaults (two draws), 81.42 /
# 80.94 / 80.65 % this way (three draws), 81.51 % with the defaults on ImageNet images, float
# 81.61; over five paired folds this way on CIFAR is 0.25 pt below the defaults on ImageNet images
# (docs/results/seed003.md); the allocation itself transfers.
CALIB_DOMAINS = ("same", "other")
BEST_PATIENCE = 3  # --effort best: learning stops after 3 units in a row keep GPTQ's rounding
VERIFY_SAMPLES = 64
# --effort best judges its two roundings on this many held-out samples where the source has them:
# on 64, ResNet-20 W4A8 kept the learned model by 23.4 vs 22.8 dB, and on the 10,000 test images
# it was the farther from float (logit SQNR 21.5 vs 21.7 dB, top-1 80.83 vs 81.19 %)
BEST_VERIFY_SAMPLES = 256
# where AdaRound/BRECQ start: the float weights (rounded to nearest) or GPTQ's solution
ROUNDING_STARTS = ("nearest", "gptq")
# where AdaRound takes a lone Conv's loss: every output position, or sampled ones (patches.py)
POSITIONS = ("all", "sampled")
ROUNDING = ("adaround", "brecq", "gptq")
OPTIMIZE_INPUTS = (
    "quantized",
    "weights",
    "float",
    "mixed",
)  # what reconstruction units are fed (optimize/unit_data.py)


FLOAT = (
    32  # "bits" of a tensor left in float: w4a32 is weight-only W4, w32a32 keeps the group float
)


@dataclass(frozen=True)
class Candidate:
    """One kernel choice for a quantizer group: weight bits and activation bits (32 = float)."""

    w: int
    a: int

    def __str__(self) -> str:
        return f"w{self.w}a{self.a}"

    @property
    def weight_only(self) -> bool:
        return self.a == FLOAT and self.w < FLOAT

    @property
    def is_float(self) -> bool:
        return self.w == FLOAT and self.a == FLOAT

    @classmethod
    def parse(cls, text: str) -> Candidate:
        t = text.strip().lower()
        if t in ("float", "fp32", "f32"):
            return cls(FLOAT, FLOAT)
        m = re.fullmatch(r"w(\d+)(?:a(\d+))?", t)
        if not m:
            raise FaaqError(
                f"cannot read scheme {text!r}: write it like w8a8, w4a16, w4 (weight-only) or float"
            )
        w, a = int(m.group(1)), int(m.group(2) or FLOAT)
        for bits, what in ((w, "weight"), (a, "activation")):
            if bits not in SUPPORTED_BITS and bits != FLOAT:
                raise FaaqError(
                    f"{what} bits {bits} in {text!r} unsupported: choose one of {SUPPORTED_BITS} "
                    f"(or {FLOAT}: float)"
                )
        if w == FLOAT and a != FLOAT:
            raise FaaqError(
                f"{text!r}: float weights with quantized activations is not a kernel; use float"
            )
        return cls(w, a)


@dataclass
class QuantConfig:
    scheme: Candidate = Candidate(8, 8)
    weight_granularity: str = "per-channel"
    block_size: int = 32
    weight_symmetric: bool | None = (
        None  # None: asymmetric up to 6 bits (quant.weights.symmetric_at)
    )
    act_symmetric: bool = False
    weight_range: str = "minmax"
    act_range: str | None = None  # None: "mse", or "minmax" with calib_domain "other"
    percentile: float = 99.99
    calib_size: int | None = 256
    # "auto": as many as the sweep's ranking needs (analysis.sensitivity.auto_sweep); None: all
    sensitivity_samples: int | str | None = AUTO
    batch_size: int = 16
    seed: int = 0
    simplify: bool = True
    int32_bias: bool = True
    verify_samples: int = VERIFY_SAMPLES  # held-out samples the emitted model is measured on
    latency_tolerance: float = 0.05  # a latency budget holds within this share (timing noise)
    weight_storage: str = (
        "cast"  # cast: packed low-bit + Cast -> int8 kernels; dequant: DQ(int4) read natively
    )
    int2: bool = True  # store 2-bit weights as int2 (opset 25) where ORT accepts it, else in int4
    # 8-bit weights in a 7-bit range (ORT's reduce_range): "auto" where this CPU's ORT saturates u8 x s8 products
    reduce_range: str = "auto"
    first_last: Candidate | None = (
        None  # keep the first and last weighted layers at this scheme (e.g. w8a8)
    )
    first_last_by_effort: bool = False  # first_last was set by --effort best, not asked for
    # which ops get quantizers: "gain", only where the integer kernel removes float work;
    # "ort", every op ORT's own quantizer puts on an integer kernel (analysis/coverage.py)
    coverage: str = "gain"
    optimize: tuple[str, ...] = ()  # any of: cle, bias-correction, adaround, brecq
    optimize_auto: bool = (
        False  # the rounding optimizer was chosen by --optimize auto (reported as such)
    )
    effort: str = "default"  # what --optimize auto chooses: one of EFFORTS
    calib_domain: str = (
        "same"  # one of CALIB_DOMAINS: are the calibration samples the deployment's kind
    )
    optimize_iters: int = 1000
    optimize_inputs: str = (
        "quantized"  # one of OPTIMIZE_INPUTS: what each reconstructed unit is fed
    )
    optimize_samples: int = 256
    rounding_start: str | None = None  # one of ROUNDING_STARTS; None: gptq with --effort best
    optimize_positions: str | None = None  # one of POSITIONS; None: sampled with --effort best
    # share of the samples each adaround/brecq unit is not fit to, its rounding judged on them
    # (EfficientNet-Lite0 W4A8 --effort best: 79.69 % with 0.125, 79.98 % without; off)
    optimize_holdout: float = 0.0
    # adaround/brecq stop learning after this many units in a row keep their start (0: never;
    # None: 3 with --effort best, else 0): from GPTQ's solution at 4 bits learning rarely wins
    # (ResNet-20 W4A8: 2 of 20 layers, by 2-4 % of their error; ResNet-18: none), at 2 bits it
    # wins most layers (ResNet-20 W2A8: 18 of 20), and every layer costs the same 2000 iterations
    optimize_patience: int | None = None
    # GPTQ fits each layer to the float model's output, not its float weights' (gptq.asymmetric_target);
    # None: for the plan that ships as rounded, not for a budget's candidates (pipeline.quantize)
    gptq_asymmetric: bool | None = None
    # GPTQ narrows each channel's min-max range where that lowers the layer's output error under
    # its Hessian (optimize/gptq_clip.py; not with --weight-range mse, which is kept as chosen)
    gptq_clip: bool = True
    optimize_scales: bool = (
        False  # adaround/brecq: learn each weight scale (per channel/block) with the rounding
    )
    # optimize an allocated mixed plan's rounding again, in its own context (None: on). GPTQ's
    # re-round fits each layer to the float output there (gptq_asymmetric unless turned off):
    # without that it bought nothing (EfficientNet-Lite0 avg-bits=4.5 w4a8/w8a8 80.27 % with it,
    # 81.23 % without: benchmarks/out/reround_gptq.md); with it, benchmarks/out/reround_fit.md
    reround: bool | None = None
    qdrop: float = 0.0  # BRECQ: probability of keeping an activation element float (QDrop)
    smoothquant_alpha: float = 0.5
    cle_relu6: str = (
        "keep"  # CLE across ReLU6 (Clip): keep such pairs as they are, or replace the Clip by Relu
    )
    # MatMul/Gemm weights of W*A8 groups: int8 kernels (cast form), weight-only MatMulNBits, or the faster
    # of the two as measured on the target. Weight-only groups (w4a32) always become MatMulNBits.
    matmul_kernel: str = "int8"
    workers: int = 1  # sensitivity sweep on this many Ray workers (1: in this process)
    ray_address: str | None = None  # an existing Ray cluster to run the sweep on
    ort_threads: int | None = (
        None  # ONNX Runtime intra-op threads of probe sessions (None: ORT's default)
    )
    ep: str = (
        "cpu"  # the target whose measured kernel costs latency budgets and matmul_kernel=auto use
    )
    latency_batch: int = 1
    measure_latency: bool = (
        False  # time the written model against the float one (ep, latency_batch)
    )
    preset: str | None = (
        None  # preprocessing of raw images in the calibration data (faaq_onnx.data.presets)
    )
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.scheme, str):
            self.scheme = Candidate.parse(self.scheme)
        if isinstance(self.first_last, str):
            self.first_last = Candidate.parse(self.first_last)
        if self.weight_granularity not in GRANULARITIES:
            raise FaaqError(
                f"unknown weight granularity {self.weight_granularity!r}: choose {', '.join(GRANULARITIES)}"
            )
        if (
            isinstance(self.block_size, bool)
            or not isinstance(self.block_size, numbers.Integral)
            or self.block_size < 2
            or self.block_size % 2
        ):
            raise FaaqError(f"--block-size must be an even number >= 2, got {self.block_size}")
        if self.coverage not in COVERAGES:
            raise FaaqError(
                f"unknown --coverage {self.coverage!r}: choose one of {', '.join(COVERAGES)}"
            )
        if self.calib_domain not in CALIB_DOMAINS:
            raise FaaqError(
                f"unknown --calib-domain {self.calib_domain!r}: choose {', '.join(CALIB_DOMAINS)}"
            )
        if self.act_range is None:
            self.act_range = "minmax" if self.calib_domain == "other" else "mse"
        if self.act_range not in ACTIVATION_METHODS:
            raise FaaqError(
                f"unknown activation range setter {self.act_range!r}: choose {', '.join(ACTIVATION_METHODS)}"
            )
        if self.weight_range not in WEIGHT_METHODS:
            raise FaaqError(
                f"unknown weight range setter {self.weight_range!r}: choose {', '.join(WEIGHT_METHODS)}"
            )
        if not 50 < self.percentile <= 100:
            raise FaaqError(f"--percentile must be in (50, 100], got {self.percentile}")
        _at_least_one("--calib-size", self.calib_size, optional=True)
        if self.sensitivity_samples != AUTO:
            _at_least_one("--sensitivity-samples", self.sensitivity_samples, optional=True)
        if self.preset is not None:
            from faaq_onnx.data.presets import PRESETS

            if self.preset not in PRESETS:
                raise FaaqError(
                    f"unknown --preset {self.preset!r}: choose one of {', '.join(PRESETS)}"
                )
        if isinstance(self.optimize, str):
            self.optimize = tuple(
                m.strip() for m in self.optimize.split(",") if m.strip() and m.strip() != "none"
            )
        self.optimize = tuple(self.optimize)
        if AUTO in self.optimize:  # the cheap accurate path below 8 bits: GPTQ + bias correction
            explicit = [m for m in self.optimize if m != AUTO]
            self.optimize_auto = not any(m in ROUNDING for m in explicit)
            if self.effort not in EFFORTS:
                raise FaaqError(f"unknown --effort {self.effort!r}: choose {', '.join(EFFORTS)}")
            fits = self.calib_domain == "same"  # with "other" auto adds nothing fit to samples
            if self.optimize_auto and not fits and self.effort != "default":
                raise FaaqError(
                    f"--effort {self.effort} fits the rounding to the calibration samples; "
                    "--calib-domain other rounds to nearest: choose one"
                )
            added = self._apply_effort() if self.optimize_auto and fits else ()
            self.optimize = tuple([*explicit, *(m for m in added if m not in explicit)])
        unknown = [m for m in self.optimize if m not in OPTIMIZERS]
        if unknown:
            raise FaaqError(
                f"unknown --optimize {unknown[0]!r}: choose from none, auto, {', '.join(OPTIMIZERS)}"
            )
        if sum(m in self.optimize for m in ROUNDING) > 1:
            raise FaaqError("choose one rounding optimizer: adaround, brecq or gptq")
        self.rounding_start = _one_of("--rounding-start", self.rounding_start, ROUNDING_STARTS)
        self.optimize_positions = _one_of(
            "--optimize-positions", self.optimize_positions, POSITIONS
        )
        if not 0 <= self.optimize_holdout < 0.5:
            raise FaaqError(
                f"--optimize-holdout must be at least 0 and below 0.5, got {self.optimize_holdout}"
            )
        if self.optimize_patience is None:
            self.optimize_patience = 0
        if self.optimize_patience < 0:
            raise FaaqError(
                f"--optimize-patience must be 0 (never stop) or more, got {self.optimize_patience}"
            )
        if self.rounding_start == "gptq" and self.rounding not in ("adaround", "brecq"):
            raise FaaqError(
                "--rounding-start gptq starts learned rounding from GPTQ's solution: it needs "
                "--optimize adaround or brecq"
            )
        if self.optimize_inputs not in OPTIMIZE_INPUTS:
            raise FaaqError(
                f"--optimize-inputs must be one of {', '.join(OPTIMIZE_INPUTS)}, "
                f"got {self.optimize_inputs!r}"
            )
        _at_least_one("--optimize-iters", self.optimize_iters)
        _at_least_one("--optimize-samples", self.optimize_samples)
        if self.optimize_scales and not any(m in self.optimize for m in ("adaround", "brecq")):
            raise FaaqError(
                "--optimize-scales learns weight scales during reconstruction: it needs "
                "--optimize adaround or brecq"
            )
        if self.optimize_inputs == "mixed" and "gptq" in self.optimize:
            raise FaaqError(
                "--optimize-inputs mixed mixes inputs during reconstruction (adaround, brecq); "
                "gptq has none: use quantized or float"
            )
        if sum(m in self.optimize for m in ("smoothquant", "awq")) > 1:
            raise FaaqError("choose one channel scaling: smoothquant (W8A8) or awq (weight-only)")
        if not 0 < self.smoothquant_alpha < 1:
            raise FaaqError(f"--smoothquant-alpha must be in (0, 1), got {self.smoothquant_alpha}")
        if not 0 <= self.qdrop < 1:
            raise FaaqError(f"--qdrop must be in [0, 1), got {self.qdrop}")
        if self.matmul_kernel not in ("int8", "nbits", "auto"):
            raise FaaqError(
                f"unknown --matmul-kernel {self.matmul_kernel!r}: choose int8, nbits or auto"
            )
        if self.reduce_range not in ("auto", "on", "off"):
            raise FaaqError(f"unknown --reduce-range {self.reduce_range!r}: choose auto, on or off")
        if self.weight_storage not in ("cast", "dequant"):
            raise FaaqError(
                f"unknown weight storage {self.weight_storage!r}: choose cast or dequant"
            )
        _at_least_one("--workers", self.workers)
        _at_least_one("--batch-size", self.batch_size)
        _at_least_one("--latency-batch", self.latency_batch)

    def _apply_effort(self) -> tuple[str, ...]:
        """Set the settings --effort goes with, and return what --optimize auto runs with them."""
        if self.effort == "fast":  # GPTQ on the float model's layer inputs: one forward pass
            self.optimize_inputs = "float"
            return ("gptq",)
        if self.effort == "best":  # learned rounding, the settings measured best (EFFORTS)
            if self.optimize_iters == 1000:
                self.optimize_iters = 2000
            if self.rounding_start is None:
                self.rounding_start = "gptq"
            if self.optimize_positions is None:
                self.optimize_positions = "sampled"
            if self.optimize_patience is None:
                self.optimize_patience = BEST_PATIENCE
            if self.verify_samples == VERIFY_SAMPLES:
                self.verify_samples = BEST_VERIFY_SAMPLES
            if self.scheme.a < 8:
                self.qdrop = self.qdrop or 0.5
                return ("brecq", "bias-correction")
            return ("adaround",)
        return AUTO_OPTIMIZERS

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scheme"] = str(self.scheme)
        d["optimize"] = list(self.optimize)
        d["first_last"] = str(self.first_last) if self.first_last else None
        return d

    @property
    def weights_reduce_range(self) -> bool:
        """Whether 8-bit weights keep a 7-bit range (asks ORT once under "auto")."""
        if self.reduce_range == "auto":
            from faaq_onnx.runtime.capabilities import int8_products_saturate

            return int8_products_saturate()
        return self.reduce_range == "on"

    def symmetric_weights(self, bits: int) -> bool:
        """Whether `bits`-wide weights get a symmetric grid (quant.weights.symmetric_at)."""
        from faaq_onnx.quant.weights import symmetric_at

        return symmetric_at(bits, self.weight_symmetric)

    @property
    def rounding(self) -> str | None:
        return next((m for m in self.optimize if m in ROUNDING), None)

    @property
    def rerounds(self) -> bool:
        """Whether an allocated mixed plan is rounded again in its own context (`reround`)."""
        if self.rounding is None:
            return False
        return self.reround if self.reround is not None else True


def _one_of(option: str, value: str | None, choices: tuple[str, ...]) -> str:
    """A choice the user may leave out (None: the first of `choices`), else one of them."""
    if value is None:
        return choices[0]
    if value not in choices:
        raise FaaqError(f"{option} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _at_least_one(option: str, value, optional: bool = False) -> None:
    """A count the user gives (samples, iterations, workers, a batch): a whole number >= 1
    (or None where `optional`); 0 never means "all" or "default"."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise FaaqError(f"{option} must be at least 1, got {value}")
