"""User-facing options of a quantization run, validated once, up front."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from faaq_onnx.errors import FaaqError
from faaq_onnx.quant.formats import SUPPORTED_BITS
from faaq_onnx.quant.range_setters import ACTIVATION_METHODS, WEIGHT_METHODS

GRANULARITIES = ("per-tensor", "per-channel", "block")
OPTIMIZERS = ("cle", "bias-correction", "adaround", "brecq")


@dataclass(frozen=True)
class Candidate:
    """One kernel choice for a quantizer group: weight bits and activation bits."""

    w: int
    a: int

    def __str__(self) -> str:
        return f"w{self.w}a{self.a}"

    @classmethod
    def parse(cls, text: str) -> "Candidate":
        m = re.fullmatch(r"\s*w(\d+)a(\d+)\s*", text.lower())
        if not m:
            raise FaaqError(f"cannot read scheme {text!r}: write it like w8a8 or w4a16")
        w, a = int(m.group(1)), int(m.group(2))
        for bits, what in ((w, "weight"), (a, "activation")):
            if bits not in SUPPORTED_BITS:
                raise FaaqError(f"{what} bits {bits} in {text!r} unsupported: choose one of {SUPPORTED_BITS}")
        return cls(w, a)


@dataclass
class QuantConfig:
    scheme: Candidate = Candidate(8, 8)
    weight_granularity: str = "per-channel"
    block_size: int = 32
    weight_symmetric: bool = True
    act_symmetric: bool = False
    weight_range: str = "minmax"
    act_range: str = "mse"
    percentile: float = 99.99
    calib_size: int | None = 256
    sensitivity_samples: int | None = None  # None: every calibration sample
    batch_size: int = 16
    seed: int = 0
    simplify: bool = True
    int32_bias: bool = True
    verify_samples: int = 64  # held-out samples the emitted model is measured on
    latency_tolerance: float = 0.05  # a latency budget holds within this share (timing noise)
    weight_storage: str = "cast"  # cast: packed low-bit + Cast -> int8 kernels; dequant: DQ(int4) read natively
    int2: bool = True  # store 2-bit weights as int2 (opset 25) where ORT accepts it, else in int4
    optimize: tuple[str, ...] = ()  # any of: cle, bias-correction, adaround, brecq
    optimize_iters: int = 1000
    optimize_inputs: str = "quantized"  # reconstruct from the quantized model's own inputs, or the float model's
    optimize_samples: int = 256
    qdrop: float = 0.0  # BRECQ: probability of keeping an activation element float (QDrop)
    cle_relu6: str = "keep"  # CLE across ReLU6 (Clip): keep such pairs as they are, or replace the Clip by Relu
    matmulnbits: bool = False  # eligible MatMul/Gemm weights (2/4/8-bit, blocked) -> MatMulNBits
    weight_only_matmul: bool = False  # with matmulnbits: drop the activation Q/DQ of converted nodes
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.scheme, str):
            self.scheme = Candidate.parse(self.scheme)
        if self.weight_granularity not in GRANULARITIES:
            raise FaaqError(f"unknown weight granularity {self.weight_granularity!r}: choose {', '.join(GRANULARITIES)}")
        if self.weight_granularity == "block" and (self.block_size < 2 or self.block_size % 2):
            raise FaaqError(f"block size must be an even number >= 2, got {self.block_size}")
        if self.act_range not in ACTIVATION_METHODS:
            raise FaaqError(f"unknown activation range setter {self.act_range!r}: choose {', '.join(ACTIVATION_METHODS)}")
        if self.weight_range not in WEIGHT_METHODS:
            raise FaaqError(f"unknown weight range setter {self.weight_range!r}: choose {', '.join(WEIGHT_METHODS)}")
        if not 50 < self.percentile <= 100:
            raise FaaqError(f"percentile must be in (50, 100], got {self.percentile}")
        if isinstance(self.optimize, str):
            self.optimize = tuple(m.strip() for m in self.optimize.split(",") if m.strip() and m.strip() != "none")
        self.optimize = tuple(self.optimize)
        unknown = [m for m in self.optimize if m not in OPTIMIZERS]
        if unknown:
            raise FaaqError(f"unknown --optimize {unknown[0]!r}: choose from none, {', '.join(OPTIMIZERS)}")
        if "adaround" in self.optimize and "brecq" in self.optimize:
            raise FaaqError("choose one rounding optimizer: adaround (layer by layer) or brecq (block by block)")
        if self.optimize_inputs not in ("quantized", "float"):
            raise FaaqError(f"--optimize-inputs must be quantized or float, got {self.optimize_inputs!r}")
        if self.optimize_iters < 1 or self.optimize_samples < 1:
            raise FaaqError("--optimize-iters and --optimize-samples must be at least 1")
        if not 0 <= self.qdrop < 1:
            raise FaaqError(f"--qdrop must be in [0, 1), got {self.qdrop}")
        if self.weight_storage not in ("cast", "dequant"):
            raise FaaqError(f"unknown weight storage {self.weight_storage!r}: choose cast or dequant")
        if self.batch_size < 1:
            raise FaaqError("batch size must be at least 1")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scheme"] = str(self.scheme)
        d["optimize"] = list(self.optimize)
        return d

    @property
    def rounding(self) -> str | None:
        return next((m for m in self.optimize if m in ("adaround", "brecq")), None)
