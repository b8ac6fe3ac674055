"""`faaq quantize`: its options reach QuantConfig as documented, its help states QuantConfig's
defaults, and its summary lines say what the report holds."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from faaq_onnx.cli import main
from faaq_onnx.config import AUTO, Candidate, QuantConfig
from faaq_onnx.errors import FaaqError


def _default(text: str) -> str | None:
    m = re.search(r"\[default: ([^\]]*)\]\s*$", text)
    return m.group(1) if m else None


def test_help_states_the_config_defaults(option_help):
    """Each option's shown default is QuantConfig's (the one source of defaults); flag pairs show
    the side that is on."""
    c = QuantConfig()
    h = option_help("quantize")
    expected = {
        # the default that --calib-domain other changes says so
        "--act-range": f"{c.act_range}; {QuantConfig(calib_domain='other').act_range} with "
        "--calib-domain other",
        "--calib-domain": c.calib_domain,
        "--weight-range": c.weight_range,
        "--percentile": str(c.percentile),
        "--calib-size": str(c.calib_size),
        "--batch-size": str(c.batch_size),
        "--weight-storage": c.weight_storage,
        "--reduce-range": c.reduce_range,
        "--matmul-kernel": c.matmul_kernel,
        "--optimize": AUTO,
        "--effort": c.effort,
        "--optimize-iters": str(c.optimize_iters),
        "--optimize-inputs": c.optimize_inputs,
        "--optimize-samples": str(c.optimize_samples),
        "--qdrop": str(c.qdrop),
        "--smoothquant-alpha": str(c.smoothquant_alpha),
        "--cle-relu6": c.cle_relu6,
        "--seed": str(c.seed),
        "--ep": c.ep,
        "--latency-batch": str(c.latency_batch),
        "--workers": str(c.workers),
        "--metric": "sqnr",
        "--allocator": "knapsack",
        "--act-symmetric": "act-symmetric" if c.act_symmetric else "act-asymmetric",
        "--int2": "int2" if c.int2 else "no-int2",
        "--optimize-scales": "optimize-scales" if c.optimize_scales else "no-optimize-scales",
    }
    assert {k: _default(h[k]) for k in expected} == expected
    for flag in ("--no-simplify", "--quiet", "--no-cache"):
        assert not h[flag].lstrip().startswith(("TEXT", "INTEGER")), flag  # a flag takes no value
    for required in ("--output", "--calib"):
        assert "[required]" in h[required], required


class _Stop(Exception):
    pass


@pytest.fixture
def config_of(tiny_cnn, tmp_path, monkeypatch):
    """The QuantConfig (and keyword arguments) `faaq quantize ... <extra>` hands the pipeline."""
    import faaq_onnx.pipeline as pipeline

    def run(*extra):
        seen = {}

        def fake(model, calib, _, config, **kw):
            seen.update(config=config, calib=calib, **kw)
            raise _Stop

        monkeypatch.setattr(pipeline, "quantize", fake)
        out = str(tmp_path / "q.onnx")
        r = CliRunner().invoke(
            main, ["quantize", tiny_cnn, "-o", out, "--calib", "random:4", *extra]
        )
        assert isinstance(r.exception, _Stop), r.output
        return seen

    return run


def test_no_options_is_w8a8_per_channel_symmetric_with_auto_optimization(config_of):
    seen = config_of()
    c = seen["config"]
    assert c.scheme == Candidate(8, 8) and c.weight_granularity == "per-channel"
    assert (c.block_size, c.weight_symmetric, c.act_symmetric) == (32, None, False)
    assert c.symmetric_weights(8) and not c.symmetric_weights(4)  # asymmetric up to 6 bits
    assert (c.act_range, c.weight_range, c.percentile) == ("mse", "minmax", 99.99)
    assert (c.calib_size, c.batch_size, c.seed, c.simplify) == (256, 16, 0, True)
    assert c.optimize == ("gptq", "bias-correction") and c.optimize_auto
    assert (c.int2, c.reround, c.optimize_scales, c.reduce_range) == (True, None, False, "auto")
    assert not c.progress  # not a terminal
    assert seen["calib"] == "random:4" and seen["budget"] is None and seen["plan"] is None
    assert (seen["metric"], seen["allocator"], seen["ep"], seen["latency_batch"]) == (
        "sqnr",
        "knapsack",
        "cpu",
        1,
    )


def test_weight_only_schemes_default_to_asymmetric_blocks_of_128(config_of):
    """As ONNX Runtime's MatMul 4-bit quantizer: block granularity, 128, asymmetric."""
    c = config_of("--scheme", "w4")["config"]
    assert (c.weight_granularity, c.block_size, c.weight_symmetric) == ("block", 128, False)
    c = config_of("--scheme", "w4", "--block-size", "64", "--weight-symmetric")["config"]
    assert (c.weight_granularity, c.block_size, c.weight_symmetric) == ("block", 64, True)
    c = config_of("--scheme", "w4", "--granularity", "per-channel")["config"]
    assert c.weight_granularity == "per-channel"
    c = config_of("--budget", "avg-bits=6", "--candidates", "w4,w8", "--no-cache")["config"]
    assert (c.weight_granularity, c.block_size) == ("block", 128)
    c = config_of("--budget", "avg-bits=6", "--candidates", "w4,w8a8", "--no-cache")["config"]
    assert (c.weight_granularity, c.block_size) == ("per-channel", 32)


def test_every_option_reaches_the_config(config_of):
    seen = config_of(
        "--weight-bits", "4", "--act-bits", "16", "--weight-asymmetric", "--act-symmetric",
        "--act-range", "percentile", "--weight-range", "mse", "--percentile", "99.5",
        "--calib-size", "all", "--batch-size", "3", "--sensitivity-samples", "5", "--no-simplify",
        "--weight-storage", "dequant", "--no-int2", "--reduce-range", "off",
        "--matmul-kernel", "nbits", "--optimize", "cle,adaround", "--optimize-iters", "7",
        "--optimize-inputs", "mixed", "--optimize-samples", "9", "--optimize-scales",
        "--no-reround", "--qdrop", "0.25", "--cle-relu6", "replace", "--seed", "5",
        "--first-last", "w8a8", "-q", "--granularity", "per-tensor", "--block-size", "16",
        "--budget", "avg-bits=6", "--metric", "kl", "--allocator", "greedy", "--ep", "cpu",
        "--latency-batch", "2", "--no-cache", "--candidates", "w4a16,w8a16",
    )  # fmt: skip
    c = seen["config"]
    assert c.scheme == Candidate(4, 16) and c.first_last == Candidate(8, 8)
    assert (c.weight_symmetric, c.act_symmetric) == (False, True)
    assert (c.act_range, c.weight_range, c.percentile) == ("percentile", "mse", 99.5)
    assert (c.calib_size, c.batch_size, c.sensitivity_samples) == (None, 3, 5)
    assert (c.simplify, c.weight_storage, c.int2, c.reduce_range) == (
        False,
        "dequant",
        False,
        "off",
    )
    assert (c.matmul_kernel, c.optimize, c.optimize_iters) == ("nbits", ("cle", "adaround"), 7)
    assert (c.optimize_inputs, c.optimize_samples, c.optimize_scales) == ("mixed", 9, True)
    assert (c.reround, c.qdrop, c.cle_relu6, c.seed) == (False, 0.25, "replace", 5)
    assert (c.weight_granularity, c.block_size, seen["latency_batch"]) == ("per-tensor", 16, 2)
    assert (seen["metric"], seen["allocator"], seen["cache_dir"]) == ("kl", "greedy", False)
    assert str(seen["budget"]) == "avg-bits=6" and seen["candidates"] == "w4a16,w8a16"
    seen = config_of("--smoothquant-alpha", "0.7", "--optimize", "smoothquant", "--effort", "fast")
    c = seen["config"]
    assert (c.smoothquant_alpha, c.optimize, c.effort) == (0.7, ("smoothquant",), "fast")
    assert not c.measure_latency
    assert config_of("--measure-latency")["config"].measure_latency
    assert config_of("--optimize", "adaround", "--optimize-holdout", "0.25")[
        "config"
    ].optimize_holdout == pytest.approx(0.25)
    assert config_of()["config"].gptq_asymmetric is None  # quantize() decides (stages.effort)
    assert config_of("--no-gptq-asymmetric")["config"].gptq_asymmetric is False
    c = config_of("--scheme", "w4a8", "--calib-domain", "other")["config"]
    assert (c.calib_domain, c.optimize, c.act_range) == ("other", (), "minmax")
    c = config_of("--calib-domain", "other", "--act-range", "percentile")["config"]
    assert c.act_range == "percentile"
    assert config_of("--gptq-asymmetric")["config"].gptq_asymmetric is True
    assert config_of()["config"].gptq_clip is True
    assert config_of("--no-gptq-clip")["config"].gptq_clip is False
    assert config_of("--optimize", "adaround")["config"].optimize_patience == 0
    patient = config_of("--optimize", "adaround", "--optimize-patience", "4")
    assert patient["config"].optimize_patience == 4


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--scheme", "w8a8", "--weight-bits", "8"], "either --scheme or --weight-bits/--act-bits"),
        (["--scheme", "w8a8", "--act-bits", "8"], "either --scheme or --weight-bits/--act-bits"),
        (["--weight-bits", "8"], "--weight-bits and --act-bits go together"),
        (["--act-bits", "8"], "--weight-bits and --act-bits go together"),
        (
            ["--weight-bits", "9", "--act-bits", "8"],
            "--weight-bits 9 unsupported: choose one of 2, 3",
        ),
        (["--calib-size", "many"], "--calib-size must be a positive number or 'all', got 'many'"),
        (["--calib-size", "0"], "--calib-size must be at least 1 (or 'all'), got 0"),
        (["--workers", "2"], "--workers/--ray-address distribute the sensitivity sweep"),
        (["--ray-address", "auto"], "--workers/--ray-address distribute the sensitivity sweep"),
        (["--latency-batch", "0"], "--latency-batch must be at least 1, got 0"),
    ],
)
def test_option_mistakes_are_one_line(config_of, tiny_cnn, tmp_path, extra, message):
    out = str(tmp_path / "q.onnx")
    r = CliRunner().invoke(main, ["quantize", tiny_cnn, "-o", out, "--calib", "random:4", *extra])
    assert r.exit_code == 2 and message in r.stderr, r.output


def test_calib_size_all_and_one():
    from faaq_onnx.cli.options import _calib_size

    assert _calib_size(" ALL ") is None and _calib_size("1") == 1 and _calib_size(12) == 12


# ---- the summary lines ----


@pytest.mark.parametrize(
    ("text", "want"), [("auto", "auto"), ("AUTO", "auto"), ("all", None), ("12", 12)]
)
def test_sensitivity_samples_option_reads_a_count_all_or_auto(text, want):
    from faaq_onnx.cli.options import _sensitivity_samples

    assert _sensitivity_samples(text) == want


def test_sensitivity_samples_option_names_a_bad_value():
    from faaq_onnx.cli.options import _sensitivity_samples

    with pytest.raises(
        FaaqError, match="--sensitivity-samples must be a number, 'all' or 'auto', got 'some'"
    ):
        _sensitivity_samples("some")


def test_cache_dir_must_not_be_a_file(config_of, tiny_cnn, tmp_path):
    """--cache-dir names a folder: an existing file is refused before any work (click)."""
    f = tmp_path / "not_a_dir"
    f.write_text("x")
    out = str(tmp_path / "q.onnx")
    r = CliRunner().invoke(
        main, ["quantize", tiny_cnn, "-o", out, "--calib", "random:4", "--cache-dir", str(f)]
    )
    assert r.exit_code == 2 and "is a file" in r.stderr, r.output


def test_coverage_ort_reaches_the_written_model(tmp_path):
    """`--coverage ort` puts the Sigmoid, the GELU-like product and the bias Add that the default
    leaves float (each named in the model) on Q/DQ: the option reaches discovery."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from faaq_onnx.runtime.kernels import recorded_left_float

    f32, rng = onnx.TensorProto.FLOAT, np.random.default_rng(1)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "b"], ["hb"], name="bias"),
        helper.make_node("MatMul", ["h", "w2"], ["side"], name="mm2"),
        helper.make_node("Sigmoid", ["hb"], ["s"], name="sig"),
        helper.make_node("Mul", ["hb", "s"], ["m"], name="swish"),
        helper.make_node("MatMul", ["m", "w3"], ["y"], name="mm3"),
    ]
    inits = {f"w{i}": rng.standard_normal((8, 8)).astype(np.float32) for i in (1, 2, 3)}
    inits["b"] = np.ones(8, np.float32)
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", f32, ["n", 6, 8])],
        [helper.make_tensor_value_info(o, f32, ["n", 6, 8]) for o in ("side", "y")],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 10
    src = tmp_path / "m.onnx"
    onnx.save(proto, src)
    calib = tmp_path / "c.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((16, 6, 8)).astype(np.float32))
    readers = {}
    for coverage in ("gain", "ort"):
        out = tmp_path / f"{coverage}.onnx"
        r = CliRunner().invoke(
            main,
            ["quantize", str(src), "-o", str(out), "--calib", str(calib), "--coverage", coverage],
        )
        assert r.exit_code == 0, r.output
        model = onnx.load(out)
        by_output = {o: n for n in model.graph.node for o in n.output}
        readers[coverage] = {
            n.name: [by_output[i].op_type if i in by_output else "" for i in n.input]
            for n in model.graph.node
            if n.name in ("sig", "swish", "bias")
        }
        readers[coverage]["left_float"] = sorted(recorded_left_float(model) or {})
    assert readers["gain"]["left_float"] == ["bias", "sig", "swish"]
    assert readers["ort"]["left_float"] == []
    assert readers["ort"]["sig"] == ["DequantizeLinear"]
    assert readers["ort"]["swish"] == ["DequantizeLinear", "DequantizeLinear"]
    assert readers["gain"]["sig"] != ["DequantizeLinear"]
