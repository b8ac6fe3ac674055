"""faaq_onnx.inputs: random smoke data, and the calibration / held-out split of what the user gave."""

from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from faaq_onnx.config import QuantConfig
from faaq_onnx.errors import FaaqError
from faaq_onnx.inputs import prepare_calibration, random_inputs


def two_input_model(x_dims=("N", 3, 4), ids_dims=(None, 5)) -> onnx.ModelProto:
    """x (float32) and ids (int64) as inputs; an initializer listed as a graph input too."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"]), helper.make_node("Identity", ["ids"], ["z"])],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_dims)),
            helper.make_tensor_value_info("ids", TensorProto.INT64, list(ids_dims)),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("z", TensorProto.INT64, None),
        ],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def cfg(**kw):
    base = dict(verify_samples=3, calib_size=None, seed=0, progress=False, preset=None)
    base.update(kw)
    return SimpleNamespace(**base)


def test_random_inputs_shape_dtype_and_values():
    out = random_inputs(two_input_model(), 6, seed=0)
    assert set(out) == {"x", "ids"}  # the initializer is not an input to feed
    assert out["x"].shape == (6, 3, 4) and out["x"].dtype == np.float32
    assert out["ids"].shape == (6, 5) and out["ids"].dtype == np.int64
    assert set(np.unique(out["ids"])) == {0, 1}  # integers drawn from {0, 1}
    # standard normal, seeded: the same seed gives the same data, another seed other data
    big = random_inputs(two_input_model(), 4000, seed=3)["x"]
    assert abs(big.mean()) < 0.03 and abs(big.std() - 1) < 0.03
    np.testing.assert_array_equal(random_inputs(two_input_model(), 6, seed=0)["x"], out["x"])
    assert not np.array_equal(random_inputs(two_input_model(), 6, seed=1)["x"], out["x"])


@pytest.mark.parametrize("n,want", [(10, 8), (4, 4), (3, 4), (1, 4), (9, 8)])
def test_random_inputs_keep_a_fixed_batch_dim_as_whole_multiples(n, want):
    """A fixed batch of 4: n rounds down to a multiple of 4, at least one batch."""
    out = random_inputs(two_input_model(x_dims=(4, 3, 0), ids_dims=(2, "s")), n)
    assert out["x"].shape == (want, 3, 1)  # a 0 (unknown) dim becomes 1
    assert out["ids"].shape == (2 * max(1, n // 2), 1)


def test_random_inputs_of_a_scalar_input():
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["o"])],
        "g",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)],
    )
    out = random_inputs(helper.make_model(graph), 5)
    assert out["s"].shape == ()


def test_no_calibration_data_is_one_line():
    with pytest.raises(FaaqError, match=r"no calibration data: pass --calib FILE"):
        prepare_calibration(None, two_input_model(), cfg())


def test_random_calibration_default_and_explicit_sizes():
    model = two_input_model()
    calib, held, notes = prepare_calibration("random", model, cfg(verify_samples=5, seed=2))
    assert calib["x"].shape == (32, 3, 4) and held["x"].shape == (5, 3, 4) and notes == []
    np.testing.assert_array_equal(calib["x"], random_inputs(model, 32, 2)["x"])
    np.testing.assert_array_equal(held["x"], random_inputs(model, 5, 3)["x"])  # seed + 1
    calib, held, _ = prepare_calibration("random:7", model, cfg(verify_samples=2))
    assert calib["ids"].shape == (7, 5) and held["ids"].shape == (2, 5)
    with pytest.raises(FaaqError, match="random calibration needs at least one sample"):
        prepare_calibration("random:0", model, cfg())


def test_random_calibration_without_verification_falls_back_to_calibration_samples():
    _calib, held, notes = prepare_calibration("random:4", two_input_model(), cfg(verify_samples=0))
    assert held["x"].shape[0] == 0
    assert notes == [
        "verification uses 0 of the calibration samples: "
        "the calibration source has no samples left over to hold out"
    ]


def test_dict_calibration_splits_calibration_and_held_out_and_casts():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 3, 4))  # float64: cast to the model's float32
    ids = rng.integers(0, 9, (10, 5)).astype(np.int32)  # cast to int64
    calib, held, notes = prepare_calibration(
        {"x": x, "ids": ids, "extra": x}, two_input_model(), cfg(calib_size=6, verify_samples=3)
    )
    assert set(calib) == set(held) == {"x", "ids"}  # an array for no input is ignored
    assert calib["x"].dtype == np.float32 and calib["ids"].dtype == np.int64
    np.testing.assert_array_equal(calib["x"], x[:6].astype(np.float32))
    np.testing.assert_array_equal(held["x"], x[6:9].astype(np.float32))
    np.testing.assert_array_equal(held["ids"], ids[6:9])
    assert notes == []


def test_dict_calibration_without_calib_size_uses_everything_and_verifies_on_it():
    x = np.arange(4 * 12, dtype=np.float32).reshape(4, 3, 4)
    ids = np.zeros((4, 5), np.int64)
    calib, held, notes = prepare_calibration(
        {"x": x, "ids": ids}, two_input_model(), cfg(verify_samples=2)
    )
    np.testing.assert_array_equal(calib["x"], x)
    np.testing.assert_array_equal(held["x"], x[:2])  # the first calibration samples stand in
    assert notes == [
        "verification uses 2 of the calibration samples: "
        "the calibration source has no samples left over to hold out"
    ]


def test_dict_calibration_missing_an_input_names_it_and_what_was_found():
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(FaaqError) as e:
        prepare_calibration({"x": x}, two_input_model(), cfg())
    assert str(e.value) == "calibration data has no array for input 'ids' (found: x)"
    with pytest.raises(FaaqError) as e:
        prepare_calibration({}, two_input_model(), cfg())
    assert str(e.value) == "calibration data has no array for input 'x' (found: none)"


def test_dict_calibration_is_validated():
    with pytest.raises(FaaqError, match="rank"):
        prepare_calibration(
            {"x": np.zeros((2, 3), np.float32), "ids": np.zeros((2, 5), np.int64)},
            two_input_model(),
            cfg(),
        )


def test_file_calibration_holds_out_other_samples(tmp_path):
    x = np.arange(20 * 12, dtype=np.float32).reshape(20, 3, 4)
    ids = np.arange(20 * 5).reshape(20, 5)
    np.savez(tmp_path / "c.npz", x=x, ids=ids)
    calib, held, notes = prepare_calibration(
        str(tmp_path / "c.npz"), two_input_model(), cfg(calib_size=8, verify_samples=4)
    )
    assert calib["x"].shape == (8, 3, 4) and held["x"].shape == (4, 3, 4) and notes == []
    rows = lambda a: {r.tobytes() for r in a}  # noqa: E731
    assert not rows(calib["x"]) & rows(held["x"])  # held-out samples are other samples
    assert rows(calib["x"]) | rows(held["x"]) <= rows(x)
    # x and ids stay paired sample by sample
    np.testing.assert_array_equal(calib["ids"][:, 0] * 12, calib["x"][:, 0, 0] * 5)


def test_file_calibration_that_uses_every_sample_verifies_on_calibration_samples(tmp_path):
    x = np.arange(5 * 12, dtype=np.float32).reshape(5, 3, 4)
    np.savez(tmp_path / "c.npz", x=x, ids=np.zeros((5, 5), np.int64))
    calib, held, notes = prepare_calibration(
        str(tmp_path / "c.npz"), two_input_model(), cfg(verify_samples=3)
    )
    assert len(calib["x"]) == 5
    np.testing.assert_array_equal(held["x"], calib["x"][:3])
    assert len(notes) == 1 and notes[0].startswith("verification uses 3 of the calibration")


@pytest.mark.parametrize(
    "spec,calib_size,want_n",
    [("none", None, 128), ("none", 10, 10), ("none", 500, 128), ("bn-stats:7", None, 7)],
)
def test_data_free_calibration_sizes(monkeypatch, spec, calib_size, want_n):
    from faaq_onnx.optimize import datafree

    seen = {}

    def fake(proto, n, seed, progress=False):
        seen.update(n=n, seed=seed)
        return {"x": np.ones((n, 3, 4), np.float32)}

    monkeypatch.setattr(datafree, "distill_inputs", fake)
    calib, held, notes = prepare_calibration(
        spec, two_input_model(), cfg(calib_size=calib_size, verify_samples=4, seed=9)
    )
    assert seen == {"n": want_n, "seed": 9}
    assert len(calib["x"]) == want_n and len(held["x"]) == min(4, want_n)
    assert notes[0].startswith(f"data-free calibration: {want_n} inputs distilled")


def test_data_free_calibration_of_zero_samples_is_refused():
    with pytest.raises(FaaqError, match="data-free calibration needs at least one sample"):
        prepare_calibration("none:0", two_input_model(), cfg())


def test_random_calibration_says_which_symbolic_dims_it_set_to_one():
    """A symbolic dim past the batch becomes 1 (an image model sees a 1x1 picture): the notes say
    so, naming the input and the shape; a batch-only symbolic dim needs no note."""
    cfg = QuantConfig(verify_samples=2)
    _, _, notes = prepare_calibration("random:4", two_input_model(("N", 3, "W"), (None, 5)), cfg)
    assert any("'x' 4x3x1" in n and "smoke test" in n for n in notes)
    _, _, notes = prepare_calibration("random:4", two_input_model(), cfg)
    assert not any("symbolic dims" in n for n in notes)
