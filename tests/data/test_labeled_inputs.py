"""Labeled data for multi-input models: an .npz with y and one array per input name."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from faaq_onnx.cli import main
from faaq_onnx.data.labeled_inputs import (
    is_multi_input_labeled,
    load_labeled_data,
    load_labeled_inputs,
)
from faaq_onnx.errors import FaaqError
from faaq_onnx.evaluate import predict


def _two_input_model(path):
    """logits = Gather(table, ids) summed over tokens where mask is 1: a toy text classifier."""
    table = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], np.float32)  # token 0 -> class 0, 1 -> 1
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["emb"], axis=0),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["logits"], keepdims=0),
    ]
    g = helper.make_graph(
        nodes,
        "toy",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", 4]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", 4]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [
            helper.make_tensor("table", TensorProto.FLOAT, table.shape, table.flatten().tolist()),
            helper.make_tensor("axis2", TensorProto.INT64, [1], [2]),
            helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def _data(path, n=10):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 3, size=(n, 4)).astype(np.int64)
    mask = np.ones((n, 4), np.int64)
    mask[:, 3] = 0
    emb = np.eye(3, 2)[ids] * mask[..., None]
    y = emb.sum(1).argmax(1).astype(np.int64)
    y[0] = 1 - y[0]  # one wrong label: accuracy (n-1)/n
    np.savez(path, input_ids=ids, attention_mask=mask, y=y)
    return ids, mask, y


def test_named_inputs_load_keep_int64_and_predict(tmp_path):
    ids, _mask, y = _data(tmp_path / "d.npz")
    np.savez(tmp_path / "xy.npz", x=np.zeros((3, 2), np.float32), y=np.zeros(3, np.int64))
    assert is_multi_input_labeled(tmp_path / "d.npz")
    assert not is_multi_input_labeled(tmp_path / "xy.npz")
    x, gy = load_labeled_inputs(tmp_path / "d.npz")
    assert set(x) == {"input_ids", "attention_mask"} and x["input_ids"].dtype == np.int64
    np.testing.assert_array_equal(x["input_ids"], ids)
    np.testing.assert_array_equal(gy, y)
    sx, sy = load_labeled_data(tmp_path / "d.npz", limit=4, seed=0)
    assert len(sy) == 4 and all(len(a) == 4 for a in sx.values())
    xx, _ = load_labeled_data(tmp_path / "xy.npz")  # the x/y layout still goes to load_labeled
    assert isinstance(xx, np.ndarray)
    logits = predict(_two_input_model(tmp_path / "m.onnx"), x, batch_size=3)
    assert logits.shape == (10, 2)
    assert np.mean(logits.argmax(1) == y) == pytest.approx(0.9)


def test_named_inputs_mistakes_are_one_line_errors(tmp_path):
    model = _two_input_model(tmp_path / "m.onnx")
    ids, mask, y = _data(tmp_path / "d.npz")
    np.savez(tmp_path / "short.npz", input_ids=ids[:5], attention_mask=mask, y=y)
    with pytest.raises(FaaqError, match="'input_ids' has 5 samples"):
        load_labeled_inputs(tmp_path / "short.npz")
    with pytest.raises(FaaqError, match="takes"):
        predict(model, {"input_ids": ids}, 4)
    with pytest.raises(FaaqError, match="does not fit"):
        predict(model, {"input_ids": ids[:, :3], "attention_mask": mask[:, :3]}, 4)
    np.savez(tmp_path / "noy.npz", input_ids=ids)
    with pytest.raises(FaaqError, match="needs an array 'y'"):
        load_labeled_inputs(tmp_path / "noy.npz")


def test_faaq_eval_reads_named_inputs(tmp_path):
    model = _two_input_model(tmp_path / "m.onnx")
    _data(tmp_path / "d.npz")
    res = CliRunner().invoke(
        main,
        ["eval", str(model), str(model), "--data", str(tmp_path / "d.npz"), "--json", "-"],
    )
    assert res.exit_code == 0, res.output
    assert "top-1 90.00%" in res.output
    rep = json.loads(res.output[res.output.index("{") :])
    assert rep["models"][str(model)]["samples"] == 10
