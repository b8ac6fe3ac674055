"""The whole compiler through its Python API: contracts a user relies on."""

import hashlib

import numpy as np
import onnx
import pytest

from faaq_onnx import quantize
from faaq_onnx.config import QuantConfig
from faaq_onnx.errors import FaaqError
from faaq_onnx.plan import BitPlan


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_writes_output_and_leaves_input_alone(tiny_cnn, cnn_calib, tmp_path):
    before = _sha(tiny_cnn)
    out = tmp_path / "q.onnx"
    res = quantize(tiny_cnn, cnn_calib, out, QuantConfig(progress=False))
    assert _sha(tiny_cnn) == before
    onnx.checker.check_model(onnx.load(out))
    assert res.report["output"] == str(out)
    assert [
        p.name for p in tmp_path.iterdir() if p.name.startswith(".")
    ] == []  # no temp files left


def test_same_seed_same_bytes(tiny_cnn, cnn_calib, tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    quantize(tiny_cnn, cnn_calib, a, QuantConfig(scheme="w4a8", seed=3, progress=False))
    quantize(tiny_cnn, cnn_calib, b, QuantConfig(scheme="w4a8", seed=3, progress=False))
    assert _sha(a) == _sha(b)


def test_refuses_to_overwrite_input(tiny_cnn, cnn_calib):
    with pytest.raises(FaaqError, match="input is never overwritten"):
        quantize(tiny_cnn, cnn_calib, tiny_cnn, QuantConfig(progress=False))


@pytest.mark.parametrize(
    "calib,match",
    [
        ({"wrong_name": np.zeros((4, 3, 16, 16), np.float32)}, "no array for input 'input'"),
        ({"input": np.zeros((4, 3, 8, 8), np.float32)}, "shape"),
        ({"input": np.full((4, 3, 16, 16), np.nan, np.float32)}, "NaN"),
        ({"input": np.zeros((0, 3, 16, 16), np.float32)}, "empty"),
        (None, "no calibration data"),
    ],
)
def test_bad_calibration_data(tiny_cnn, tmp_path, calib, match):
    out = tmp_path / "q.onnx"
    with pytest.raises(FaaqError, match=match):
        quantize(tiny_cnn, calib, out, QuantConfig(progress=False))
    assert not out.exists()


def test_random_calibration_smoke(tiny_cnn):
    res = quantize(tiny_cnn, "random:8", config=QuantConfig(progress=False))
    assert (
        res.report["calibration"]["samples"] == 8
        and res.report["calibration"]["verification_held_out"]
    )


def test_plan_round_trip(tiny_cnn, cnn_calib, tmp_path):
    res = quantize(tiny_cnn, cnn_calib, config=QuantConfig(scheme="w4a8", progress=False))
    res.plan.save(tmp_path / "plan.json")
    plan = BitPlan.load(tmp_path / "plan.json")
    again = quantize(tiny_cnn, cnn_calib, config=QuantConfig(progress=False), plan=plan)
    assert again.report["avg_weight_bits"] == 4.0
    assert again.model.SerializeToString() == res.model.SerializeToString()


def test_plan_for_another_model_is_refused(tiny_cnn, tiny_mlp, cnn_calib, mlp_calib, tmp_path):
    res = quantize(tiny_mlp, mlp_calib, config=QuantConfig(progress=False))
    with pytest.raises(FaaqError, match="plan does not match"):
        quantize(tiny_cnn, cnn_calib, config=QuantConfig(progress=False), plan=res.plan)


def test_unknown_scheme():
    with pytest.raises(FaaqError, match="w8a8"):
        QuantConfig(scheme="int8")


def _fixed_batch_cnn(tmp_path, batch=4):
    from tests.conftest import _save, build_tiny_cnn

    m = build_tiny_cnn()
    m.graph.input[0].type.tensor_type.shape.dim[0].ClearField("dim_param")
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = batch
    m.graph.output[0].type.tensor_type.shape.dim[0].ClearField("dim_param")
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_value = batch
    return _save(m, tmp_path / "fixed.onnx")


def test_fixed_batch_model_counts_every_calibration_sample(tmp_path, cnn_calib):
    """10 samples with batch 4: the ragged tail is padded, not silently dropped."""
    from faaq_onnx.pipeline import Compilation

    model = _fixed_batch_cnn(tmp_path)
    calib = {"input": cnn_calib["input"][:10]}
    comp = Compilation(model, calib, QuantConfig(progress=False, verify_samples=4))
    inner = [s for name, s in comp.calibration.stats.items() if name != "input"]
    assert inner and all(
        s.count == 10 * int(np.prod(s.shape)) for s in inner
    )  # each sample observed once
    res = comp.emit(comp.uniform("w8a8"))
    assert res.report["calibration"]["samples"] == 10


def test_fixed_batch_model_with_too_few_samples_says_so(tmp_path, cnn_calib):
    model = _fixed_batch_cnn(tmp_path, batch=8)
    with pytest.raises(FaaqError, match="batches of exactly 8 samples, but only 3"):
        quantize(model, {"input": cnn_calib["input"][:3]}, config=QuantConfig(progress=False))


def test_verification_is_held_out(tiny_cnn, cnn_calib):
    res = quantize(
        tiny_cnn, cnn_calib, config=QuantConfig(progress=False, calib_size=40, verify_samples=8)
    )
    cal = res.report["calibration"]
    assert (
        cal["samples"] == 40 and cal["verification_samples"] == 8 and cal["verification_held_out"]
    )
    all_in = quantize(tiny_cnn, cnn_calib, config=QuantConfig(progress=False, verify_samples=8))
    assert not all_in.report["calibration"]["verification_held_out"]
    assert any("verification uses" in w for w in all_in.report["warnings"])


def test_held_out_draw_does_not_change_the_calibration_subset(tmp_path):
    from faaq_onnx.data import load_inputs

    p = tmp_path / "c.npz"
    np.savez(p, x=np.random.default_rng(0).standard_normal((50, 3, 16, 16)).astype(np.float32))
    shapes = {"input": ["N", 3, 16, 16]}
    alone = load_inputs(p, ["input"], shapes, limit=20, seed=5)
    calib, held = load_inputs(p, ["input"], shapes, limit=20, seed=5, held_out=10)
    np.testing.assert_array_equal(alone["input"], calib["input"])
    assert len(held["input"]) == 10
    assert not (held["input"][:, None] == calib["input"][None]).all(axis=(2, 3, 4)).any()


def test_first_last_keeps_the_edge_layers_at_their_scheme(tiny_cnn, cnn_calib):
    res = quantize(
        tiny_cnn, cnn_calib, config=QuantConfig(scheme="w4a4", first_last="w8a8", progress=False)
    )
    choices = res.report["plan"]["choices"]
    assert choices["g:conv1"] == "w8a8" and choices["g:fc"] == "w8a8"
    assert [c for g, c in choices.items() if g not in ("g:conv1", "g:fc")] == ["w4a4"] * (
        len(choices) - 2
    )
    bits = {w: v["planned_bits"] for w, v in res.report["verify"]["size"]["per_weight"].items()}
    assert bits["fc.w"] == 8 and sorted(bits.values()) == [4, 8, 8]
    with pytest.raises(FaaqError, match="uniform"):
        quantize(
            tiny_cnn,
            cnn_calib,
            config=QuantConfig(first_last="w8a8", progress=False),
            budget="avg-bits=5",
        )


def test_verification_measures_against_the_file_given(tiny_cnn, cnn_calib):
    """The reference of verification is the model the user gave, read from its file (BatchNorm
    and all), not faaq's canonicalized float model; its size is that file's size."""
    import os

    from faaq_onnx.analysis.metrics import sqnr_db
    from tests.conftest import run_model

    before = _sha(tiny_cnn)
    res = quantize(
        tiny_cnn, cnn_calib, config=QuantConfig(progress=False, calib_size=32, verify_samples=16)
    )
    rep = res.report["verify"]
    assert rep["reference"] == f"the model given ({tiny_cnn})" and _sha(tiny_cnn) == before
    assert rep["size"]["float_model_bytes"] == os.path.getsize(tiny_cnn)
    x = {"input": cnn_calib["input"][32:48]}
    want = sqnr_db(run_model(tiny_cnn, x)[0], run_model(res.model, x)[0])
    assert rep["outputs"]["logits"]["sqnr_db"] == pytest.approx(want, abs=1e-5)
    assert rep["outputs"]["logits"]["sqnr_db_lower"] < want and rep["confidence"] == 0.95


def test_calib_domain_other_writes_what_nearest_rounding_and_minmax_ranges_write(
    tiny_cnn, cnn_calib, tmp_path
):
    """--calib-domain other is round-to-nearest weights with min-max activation ranges, byte for
    byte; the default (GPTQ, bias correction, mse ranges) writes another model."""
    paths = {k: str(tmp_path / f"{k}.onnx") for k in ("other", "spelled", "same")}
    base = dict(scheme="w4a8", optimize="auto", progress=False)
    quantize(tiny_cnn, cnn_calib, paths["other"], QuantConfig(**base, calib_domain="other"))
    spelled = dict(base, optimize="none")
    quantize(tiny_cnn, cnn_calib, paths["spelled"], QuantConfig(**spelled, act_range="minmax"))
    res = quantize(tiny_cnn, cnn_calib, paths["same"], QuantConfig(**base))
    assert res.report["optimization"]["rounding"]  # the default did fit the samples
    digest = {k: _sha(p) for k, p in paths.items()}
    assert digest["other"] == digest["spelled"] != digest["same"]


def test_the_callers_config_is_left_as_given(tiny_cnn, cnn_calib):
    """--effort best keeps the first and last layers at W8A8 for its own request: the same
    QuantConfig then serves a budget, which a first/last choice would make refuse."""
    config = QuantConfig(scheme="w4a8", optimize="auto", effort="best", progress=False)
    res = quantize(tiny_cnn, cnn_calib, config=config)
    assert res.plan.meta["first_last"] == "w8a8"
    assert config.first_last is None and config.gptq_asymmetric is None
    mixed = quantize(tiny_cnn, cnn_calib, config=config, budget="avg-bits=6")
    assert "budget" in mixed.plan.meta
