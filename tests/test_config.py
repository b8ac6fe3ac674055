"""QuantConfig: what --optimize auto and --effort resolve to."""

from __future__ import annotations

import pytest

from faaq_onnx.config import FLOAT, Candidate, QuantConfig
from faaq_onnx.errors import FaaqError


@pytest.mark.parametrize(
    "scheme, effort, optimize, inputs, iters, qdrop",
    [
        ("w4a8", "fast", ("gptq",), "float", 1000, 0.0),
        ("w4a8", "default", ("gptq", "bias-correction"), "quantized", 1000, 0.0),
        ("w4a8", "best", ("adaround",), "quantized", 2000, 0.0),
        ("w4a4", "best", ("brecq", "bias-correction"), "quantized", 2000, 0.5),
    ],
)
def test_effort_maps_auto_to_its_settings(scheme, effort, optimize, inputs, iters, qdrop):
    c = QuantConfig(scheme=scheme, optimize="auto", effort=effort)
    assert (c.optimize, c.optimize_inputs, c.optimize_iters, c.qdrop) == (
        optimize,
        inputs,
        iters,
        qdrop,
    )
    assert c.optimize_auto


def test_an_explicit_rounding_optimizer_wins_over_effort():
    c = QuantConfig(scheme="w4a8", optimize="auto,adaround", effort="best")
    assert (c.optimize, c.optimize_iters, c.optimize_auto) == (("adaround",), 1000, False)
    c = QuantConfig(scheme="w4a8", optimize="auto,cle", effort="best", optimize_iters=300)
    assert c.optimize == ("cle", "adaround") and c.optimize_iters == 300


def test_an_unknown_effort_is_one_clear_error():
    with pytest.raises(FaaqError, match="unknown --effort 'max'"):
        QuantConfig(scheme="w4a8", optimize="auto", effort="max")


def test_calib_domain_other_fits_nothing_to_the_calibration_samples():
    """--calib-domain other: auto rounds to nearest (no GPTQ, no bias correction), activation
    ranges min-max; what the user named explicitly stands."""
    same = QuantConfig(scheme="w4a8", optimize="auto")
    assert (same.optimize, same.act_range) == (("gptq", "bias-correction"), "mse")
    c = QuantConfig(scheme="w4a8", optimize="auto", calib_domain="other")
    assert (c.optimize, c.act_range, c.calib_domain) == ((), "minmax", "other")
    c = QuantConfig(scheme="w4a8", optimize="auto,cle", calib_domain="other", act_range="mse")
    assert (c.optimize, c.act_range) == (("cle",), "mse")
    c = QuantConfig(scheme="w4a8", optimize="auto,gptq", calib_domain="other")
    assert c.optimize == ("gptq",) and not c.optimize_auto


def test_calib_domain_mistakes_are_one_clear_error():
    with pytest.raises(FaaqError, match="unknown --calib-domain 'ood'"):
        QuantConfig(calib_domain="ood")
    with pytest.raises(FaaqError, match=r"--effort best fits the rounding .* choose one"):
        QuantConfig(scheme="w4a8", optimize="auto", effort="best", calib_domain="other")


# ---- Candidate: the scheme spellings, and QuantConfig's validation at its boundaries ----


@pytest.mark.parametrize(
    "text, w, a",
    [
        ("w8a8", 8, 8),
        (" W4A16 ", 4, 16),
        ("w4", 4, 32),
        ("w2a32", 2, 32),
        ("float", 32, 32),
        ("FP32", 32, 32),
        ("f32", 32, 32),
        ("w32a32", 32, 32),
    ],
)
def test_candidate_parse_reads_every_spelling(text, w, a):
    """w<bits>[a<bits>] (no a: float activations), float/fp32/f32, any case and spacing."""
    c = Candidate.parse(text)
    assert (c.w, c.a) == (w, a)
    assert str(c) == f"w{w}a{a}"


def test_candidate_kinds():
    """weight_only: quantized weights, float activations; is_float: neither quantized."""
    assert Candidate(4, FLOAT).weight_only and not Candidate(4, FLOAT).is_float
    assert not Candidate(4, 8).weight_only and not Candidate(4, 8).is_float
    assert Candidate(FLOAT, FLOAT).is_float and not Candidate(FLOAT, FLOAT).weight_only
    assert not Candidate(FLOAT, 8).is_float and not Candidate(FLOAT, 8).weight_only
    assert not Candidate(8, 4).is_float


@pytest.mark.parametrize(
    "text, message",
    [
        ("w8x8", "cannot read scheme 'w8x8'"),
        ("a8", "cannot read scheme"),
        ("w9a8", "weight bits 9 in 'w9a8' unsupported"),
        ("w1", "weight bits 1 in 'w1' unsupported"),
        ("w8a12", "activation bits 12 in 'w8a12' unsupported"),
        ("w32a8", "float weights with quantized activations is not a kernel"),
    ],
)
def test_candidate_parse_refuses_with_the_reason(text, message):
    """Unreadable text, unsupported widths, float weights with quantized activations: refused."""
    with pytest.raises(FaaqError, match=message):
        Candidate.parse(text)


GOOD = [
    {"block_size": 2},
    {"block_size": 128},
    {"percentile": 100},
    {"percentile": 50.001},
    {"calib_size": 1},
    {"calib_size": None},
    {"sensitivity_samples": 1},
    {"optimize_iters": 1},
    {"optimize_samples": 1},
    {"smoothquant_alpha": 0.01},
    {"smoothquant_alpha": 0.99},
    {"qdrop": 0.0},
    {"qdrop": 0.99},
    {"workers": 1},
    {"batch_size": 1},
    {"latency_batch": 1},
    {"weight_granularity": "block"},
    {"weight_granularity": "per-tensor"},
    {"act_range": "entropy"},
    {"weight_range": "mse"},
    {"matmul_kernel": "nbits"},
    {"matmul_kernel": "auto"},
    {"reduce_range": "off"},
    {"weight_storage": "dequant"},
    {"optimize_inputs": "mixed", "optimize": "adaround"},
    {"optimize_scales": True, "optimize": "brecq"},
    {"optimize": "smoothquant"},
    {"preset": "cifar10"},
]


@pytest.mark.parametrize("kw", GOOD, ids=str)
def test_values_at_the_edge_of_what_is_allowed_are_accepted(kw):
    """The last value each check allows is allowed."""
    QuantConfig(**kw)


BAD = [
    ({"block_size": 0}, "--block-size must be an even number >= 2, got 0"),
    ({"block_size": 3}, "--block-size must be an even number >= 2, got 3"),
    ({"block_size": True}, "--block-size"),
    ({"block_size": 8.0}, "--block-size"),
    ({"percentile": 50}, r"--percentile must be in \(50, 100\], got 50"),
    ({"percentile": 100.5}, "--percentile"),
    ({"calib_size": 0}, "--calib-size must be at least 1, got 0"),
    ({"sensitivity_samples": 0}, "--sensitivity-samples must be at least 1"),
    ({"optimize_iters": 0}, "--optimize-iters must be at least 1"),
    ({"optimize_iters": None}, "--optimize-iters must be at least 1"),
    ({"optimize_samples": True}, "--optimize-samples must be at least 1"),
    ({"workers": 0}, "--workers must be at least 1"),
    ({"batch_size": 0}, "--batch-size must be at least 1"),
    ({"batch_size": 2.0}, "--batch-size must be at least 1"),
    ({"latency_batch": 0}, "--latency-batch must be at least 1"),
    ({"smoothquant_alpha": 0}, r"--smoothquant-alpha must be in \(0, 1\)"),
    ({"smoothquant_alpha": 1}, "--smoothquant-alpha"),
    ({"qdrop": 1.0}, r"--qdrop must be in \[0, 1\)"),
    ({"qdrop": -0.1}, "--qdrop"),
    ({"weight_granularity": "per-row"}, "unknown weight granularity 'per-row'"),
    ({"act_range": "max"}, "unknown activation range setter 'max'"),
    ({"weight_range": "entropy"}, "unknown weight range setter 'entropy'"),
    ({"matmul_kernel": "fp16"}, "unknown --matmul-kernel 'fp16'"),
    ({"reduce_range": "yes"}, "unknown --reduce-range 'yes'"),
    ({"weight_storage": "packed"}, "unknown weight storage 'packed'"),
    ({"optimize_inputs": "both"}, "--optimize-inputs must be one of"),
    ({"optimize": "cle,fast"}, "unknown --optimize 'fast'"),
    ({"optimize": "gptq,adaround"}, "choose one rounding optimizer"),
    ({"optimize": "smoothquant,awq"}, "choose one channel scaling"),
    ({"optimize_scales": True, "optimize": "gptq"}, "--optimize-scales learns weight scales"),
    ({"optimize_scales": True}, "--optimize-scales"),
    ({"optimize_inputs": "mixed", "optimize": "gptq"}, "--optimize-inputs mixed"),
    ({"preset": "nope"}, "unknown --preset 'nope'"),
    ({"scheme": "w3a9"}, "activation bits 9"),
    ({"first_last": "w33"}, "weight bits 33"),
]


@pytest.mark.parametrize("kw, message", BAD, ids=[str(k) for k, _ in BAD])
def test_values_past_the_edge_are_one_clear_error(kw, message):
    """The first value past each check is a FaaqError naming the option and the value."""
    with pytest.raises(FaaqError, match=message):
        QuantConfig(**kw)


def test_optimize_text_is_split_and_none_dropped():
    """A comma list with spaces and 'none' entries: the optimizers in order, nothing else."""
    c = QuantConfig(optimize=" cle , none,, gptq ")
    assert c.optimize == ("cle", "gptq") and c.rounding == "gptq" and not c.optimize_auto
    assert QuantConfig(optimize="none").optimize == ()
    assert QuantConfig(optimize=["cle", "brecq"]).rounding == "brecq"
    assert QuantConfig(optimize="cle").rounding is None


def test_auto_keeps_explicit_optimizers_first_and_adds_each_once():
    """auto appends what the effort runs after what was named; best keeps iterations and a QDrop
    the user set, and only sets QDrop 0.5 where activations go below 8 bits."""
    c = QuantConfig(scheme="w4a8", optimize="bias-correction,auto")
    assert c.optimize == ("bias-correction", "gptq") and c.optimize_auto
    c = QuantConfig(scheme="w4a8", optimize="auto", effort="best", optimize_iters=500, qdrop=0.2)
    assert (c.optimize_iters, c.qdrop, c.optimize) == (500, 0.2, ("adaround",))
    c = QuantConfig(scheme="w4a7", optimize="auto", effort="best", qdrop=0.2)
    assert (c.qdrop, c.optimize) == (0.2, ("brecq", "bias-correction"))


def test_strings_become_candidates_and_to_dict_writes_them_back():
    """Scheme strings are parsed once; to_dict writes them (and the optimizers) back as text."""
    c = QuantConfig(scheme="w4a16", first_last="w8a8", optimize="cle")
    assert c.scheme == Candidate(4, 16) and c.first_last == Candidate(8, 8)
    d = c.to_dict()
    assert (d["scheme"], d["first_last"], d["optimize"]) == ("w4a16", "w8a8", ["cle"])
    assert QuantConfig().to_dict()["first_last"] is None
    assert QuantConfig().to_dict()["block_size"] == 32


def test_reduce_range_on_and_off_need_no_measurement():
    """on/off decide the 7-bit weight range themselves."""
    assert QuantConfig(reduce_range="on").weights_reduce_range is True
    assert QuantConfig(reduce_range="off").weights_reduce_range is False


def test_reduce_range_auto_asks_this_machine(monkeypatch):
    """'auto' is what runtime.capabilities measures on this CPU, whichever way it goes."""
    from faaq_onnx.runtime import capabilities

    for answer in (True, False):
        monkeypatch.setattr(capabilities, "int8_products_saturate", lambda a=answer: a)
        assert QuantConfig(reduce_range="auto").weights_reduce_range is answer


def test_defaults_are_the_documented_ones():
    """What the docs promise without options: W8A8 per-channel weights, symmetric from 7 bits and
    asymmetric below (emitted with zero point 0, quant.weights.symmetric_at), MSE-set
    asymmetric activations, 256 calibration samples, int32 biases, the 5 % latency tolerance
    (docs/mixed-precision.md), 256 optimization samples (docs/low-bit-accurate.md), ..."""
    c = QuantConfig()
    assert (c.scheme, c.first_last) == (Candidate(8, 8), None)
    assert (c.weight_granularity, c.block_size, c.weight_symmetric) == ("per-channel", 32, None)
    assert [c.symmetric_weights(b) for b in (2, 4, 6, 7, 8)] == [False, False, False, True, True]
    assert (c.act_symmetric, c.act_range, c.weight_range, c.percentile) == (
        False,
        "mse",
        "minmax",
        99.99,
    )
    assert (c.calib_size, c.sensitivity_samples, c.batch_size, c.seed) == (256, "auto", 16, 0)
    assert (c.simplify, c.int32_bias, c.verify_samples, c.latency_tolerance) == (
        True,
        True,
        64,
        0.05,
    )
    assert (c.weight_storage, c.int2, c.reduce_range, c.matmul_kernel) == (
        "cast",
        True,
        "auto",
        "int8",
    )
    assert (c.optimize, c.optimize_auto, c.effort, c.optimize_iters) == ((), False, "default", 1000)
    assert (c.optimize_inputs, c.optimize_samples, c.optimize_scales, c.reround) == (
        "quantized",
        256,
        False,
        None,
    )
    assert (c.qdrop, c.smoothquant_alpha, c.cle_relu6) == (0.0, 0.5, "keep")
    assert (c.workers, c.ray_address, c.ort_threads, c.ep, c.latency_batch) == (
        1,
        None,
        None,
        "cpu",
        1,
    )
    assert (c.preset, c.progress) == (None, True)


@pytest.mark.parametrize(
    "optimize, reround, expected",
    [
        ("gptq", None, True),  # fit to the float output there (PlanRounding.reround)
        ("adaround", None, True),
        ("brecq", None, True),
        ("gptq", True, True),
        ("adaround", False, False),
        ("none", True, False),  # nothing to round again
        ("auto", None, True),  # auto rounds by GPTQ
        ("gptq", False, False),
    ],
)
def test_a_mixed_plan_is_rounded_again_by_default(optimize, reround, expected):
    assert QuantConfig(optimize=optimize, reround=reround, scheme="w4a8").rerounds is expected
