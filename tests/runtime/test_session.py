"""runtime/session.py: providers and options as asked, load failures in one line, and models
whose weights stay in external data files (hard-linked beside the graph, or handed over)."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

from faaq_onnx.errors import FaaqError
from faaq_onnx.runtime import session as sm
from faaq_onnx.runtime.session import available_eps, make_session, resolve_ep
from tests.conftest import one_weight_model

W = np.arange(12, dtype=np.float32).reshape(3, 4) / 10


def model():
    return one_weight_model("MatMul", W, ["n", 3], ["n", 4])


X = np.ones((2, 3), np.float32)


def test_providers():
    assert "cpu" in available_eps()
    assert resolve_ep("CPU") == "cpu"
    assert resolve_ep("auto") == ("cuda" if "cuda" in available_eps() else "cpu")
    with pytest.raises(FaaqError) as e:
        resolve_ep("tpu")
    assert str(e.value) == "unknown execution provider 'tpu': choose cpu, cuda or auto"
    if "cuda" not in available_eps():
        with pytest.raises(FaaqError) as e:
            resolve_ep("cuda")
        assert str(e.value) == (
            "execution provider 'cuda' is not available in this onnxruntime build "
            f"(have: {', '.join(available_eps())}); install onnxruntime-gpu and a CUDA runtime"
        )


def test_options_reach_the_session(tmp_path):
    s = make_session(model(), threads=1, opt_level="basic", spinning=False)
    so = s.get_session_options()
    assert so.intra_op_num_threads == 1 and so.log_severity_level == 3
    assert so.graph_optimization_level == sm._OPT_LEVELS["basic"]
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert s.get_providers() == ["CPUExecutionProvider"]
    np.testing.assert_allclose(s.run(None, {"x": X})[0], X @ W, rtol=1e-6)
    plain = make_session(model()).get_session_options()
    assert plain.graph_optimization_level == sm._OPT_LEVELS["all"] and not plain.enable_profiling
    with pytest.raises(Exception, match="allow_spinning"):
        plain.get_session_config_entry("session.intra_op.allow_spinning")
    opt = tmp_path / "opt.onnx"
    s = make_session(model(), optimized_model_path=str(opt), log_severity=2)
    so = s.get_session_options()
    assert so.log_severity_level == 2 and opt.exists()
    assert (
        so.get_session_config_entry("session.optimized_model_external_initializers_file_name")
        == "opt.onnx.data"
    )
    assert (
        so.get_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes"
        )
        == "1048576"
    )
    with pytest.raises(FaaqError) as e:
        make_session(model(), opt_level="max")
    assert str(e.value) == "unknown optimization level 'max': choose disable, basic, extended, all"


def test_bytes_and_paths_load_too(tmp_path):
    onnx.save(model(), str(tmp_path / "m.onnx"))
    for m in (model().SerializeToString(), str(tmp_path / "m.onnx"), tmp_path / "m.onnx"):
        np.testing.assert_allclose(make_session(m).run(None, {"x": X})[0], X @ W, rtol=1e-6)


def test_a_model_that_does_not_load_is_one_line():
    bad = model()
    bad.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(FaaqError) as e:
        make_session(bad)
    text = str(e.value)
    assert text.startswith("onnxruntime could not load the model: ") and "\n" not in text


def external_model(tmp_path):
    onnx.save_model(
        model(),
        str(tmp_path / "m.onnx"),
        save_as_external_data=True,
        location="m.data",
        size_threshold=0,
    )
    header = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    for t in header.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = str(tmp_path / e.value)
    return header


def test_external_weights_are_mapped_from_hard_links(tmp_path, monkeypatch):
    header = external_model(tmp_path)
    made = []
    real = sm._remove
    monkeypatch.setattr(sm, "_remove", lambda folder: made.append(folder) or real(folder))
    s = make_session(header)
    np.testing.assert_allclose(s.run(None, {"x": X})[0], X @ W, rtol=1e-6)
    assert len(made) == 1 and not made[0].exists()  # the folder goes once the session is open
    assert getattr(s, "_faaq_external", None) is None
    with pytest.raises(Exception, match="disable_prepacking"):
        s.get_session_options().get_session_config_entry("session.disable_prepacking")


def test_external_weights_are_handed_over_where_no_link_can_be_made(tmp_path, monkeypatch):
    header = external_model(tmp_path)

    def no_link(*a):
        raise OSError("cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(sm, "BIG_MODEL_BYTES", 0)  # big: no prepacked second copy
    s = make_session(header)
    np.testing.assert_allclose(s.run(None, {"x": X})[0], X @ W, rtol=1e-6)
    assert s._faaq_external is not None and len(s._faaq_external) == 1
    assert s.get_session_options().get_session_config_entry("session.disable_prepacking") == "1"
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".faaq-session-")]
    assert leftovers == []


def test_candidate_dirs_are_on_the_data_files_filesystem(tmp_path):
    import tempfile

    f = tmp_path / "a.data"
    f.write_bytes(b"x")
    dirs = sm._candidate_dirs([str(f)])
    assert str(tmp_path) in dirs or tempfile.gettempdir() in dirs
    assert all(os.stat(d).st_dev == os.stat(f).st_dev for d in dirs)
    assert len(dirs) == len(set(dirs))


def test_large_inline_weights_are_handed_over_not_serialized(monkeypatch):
    """An in-memory model whose inline weights pass INLINE_HANDOVER_BYTES gives ORT those of at
    least HANDOVER_MIN_BYTES as arrays: the serialized graph carries none of their bytes, small
    ones and types numpy cannot view (int4) stay inline, the session computes the same, and the
    arrays live as long as it does."""
    rng = np.random.default_rng(0)
    big = rng.standard_normal((3, 400)).astype(np.float32)  # 4,800 bytes
    m = one_weight_model("MatMul", big, ["n", 3], ["n", 400])
    small = onnx.numpy_helper.from_array(np.ones(4, np.float32), "unused_small")
    m.graph.initializer.append(small)
    four = onnx.helper.make_tensor(  # big enough, but packed two to a byte
        "unused_int4", onnx.TensorProto.INT4, [8192], bytes(4096), raw=True
    )
    m.graph.initializer.append(four)
    # both read by a node (an initializer no node reads is left out: the test below)
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.array(0.5, np.float32), "s4"))
    m.graph.node.extend(
        [
            onnx.helper.make_node("Identity", ["unused_small"], ["o_small"]),
            onnx.helper.make_node("DequantizeLinear", ["unused_int4", "s4"], ["o_int4"]),
        ]
    )
    m.graph.output.extend(
        [
            onnx.helper.make_tensor_value_info("o_small", onnx.TensorProto.FLOAT, [4]),
            onnx.helper.make_tensor_value_info("o_int4", onnx.TensorProto.FLOAT, [8192]),
        ]
    )
    m.opset_import[0].version, m.ir_version = 21, 10
    x = rng.standard_normal((2, 3)).astype(np.float32)
    serialized = []
    real = sm.light_model

    def spy(model):
        light, arrays = real(model)
        serialized.append(light)
        return light, arrays

    monkeypatch.setattr(sm, "light_model", spy)
    monkeypatch.setattr(sm, "INLINE_HANDOVER_BYTES", 4000)
    before = m.SerializeToString()
    s = make_session(m)
    np.testing.assert_allclose(s.run(None, {"x": x})[0], x @ big, rtol=1e-5)
    assert m.SerializeToString() == before  # the caller's model is untouched
    inits = {t.name: t for t in serialized[0].graph.initializer}
    assert inits["w"].data_location == onnx.TensorProto.EXTERNAL and not inits["w"].raw_data
    assert inits["unused_small"].raw_data and inits["unused_int4"].raw_data
    assert s._faaq_external is not None
    monkeypatch.setattr(sm, "INLINE_HANDOVER_BYTES", 10**9)  # below it: serialized whole
    s = make_session(m)
    assert len(serialized) == 1 and getattr(s, "_faaq_external", None) is None
    np.testing.assert_allclose(s.run(None, {"x": x})[0], x @ big, rtol=1e-5)


def test_an_initializer_no_node_reads_is_not_handed_over(monkeypatch):
    """ORT drops an unread initializer at load and then failed to find it for the array handed
    over in its name ('ReplaceInitializedTensorImpl Failed to find existing initializer'): a
    Keras DenseNet quantized left its BatchNorms' float scales behind their uint8 copies."""
    rng = np.random.default_rng(0)
    big = rng.standard_normal((3, 400)).astype(np.float32)
    m = one_weight_model("MatMul", big, ["n", 3], ["n", 400])
    m.graph.initializer.append(
        onnx.numpy_helper.from_array(rng.standard_normal(2048).astype(np.float32), "dead")
    )
    monkeypatch.setattr(sm, "INLINE_HANDOVER_BYTES", 4000)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    s = make_session(m)
    np.testing.assert_allclose(s.run(None, {"x": x})[0], x @ big, rtol=1e-5)
    light, arrays = sm.light_model(m)
    assert "dead" not in arrays and "dead" not in {t.name for t in light.graph.initializer}


def test_models_derived_from_a_light_model_run_on_its_arrays():
    """A caller making many models from one (the sensitivity sweep) copies the light graph and
    passes the arrays: the session computes as on the full model; a missing array is one clear
    error, not ORT's."""
    rng = np.random.default_rng(1)
    big = rng.standard_normal((3, 2000)).astype(np.float32)
    m = one_weight_model("MatMul", big, ["n", 3], ["n", 2000])
    light, arrays = sm.light_model(m)
    assert set(arrays) == {"w"} and light.ByteSize() < 1000
    derived = onnx.ModelProto()
    derived.CopyFrom(light)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    s = make_session(derived, arrays=arrays)
    np.testing.assert_allclose(s.run(None, {"x": x})[0], x @ big, rtol=1e-5)
    with pytest.raises(FaaqError, match="no array was given for the in-memory weight 'w'"):
        make_session(derived, arrays={})
