"""Every output is whole or absent, and readable as the user's umask says."""

import json
import os
import stat

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.outputs import save_model_atomic, write_json_atomic, write_text_atomic
from tests.conftest import run_model


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_text_and_json_get_umask_mode(tmp_path, umask_022):
    write_text_atomic(tmp_path / "a.md", "hello")
    write_json_atomic(tmp_path / "b.json", {"x": np.float32(1.5)})
    assert _mode(tmp_path / "a.md") == 0o644 and _mode(tmp_path / "b.json") == 0o644
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": 1.5}


def test_umask_077_is_respected(tmp_path):
    old = os.umask(0o077)
    try:
        write_text_atomic(tmp_path / "a.md", "x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.md") == 0o600


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "r.json"
    write_json_atomic(target, {"old": 1})
    with pytest.raises(TypeError):
        from faaq_onnx.outputs import atomic_path

        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise TypeError("boom")
    assert json.loads(target.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def _model(n=1000):
    w = numpy_helper.from_array(np.arange(n, dtype=np.float32).reshape(1, n), "w")
    g = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return m


def test_model_saved_with_umask_mode(tmp_path, umask_022):
    save_model_atomic(_model(), tmp_path / "m.onnx")
    assert _mode(tmp_path / "m.onnx") == 0o644


def test_external_data_pair_commits_together_and_leaves_model_usable(tmp_path, umask_022):
    proto = _model()
    before = proto.SerializeToString()
    out = tmp_path / "m.onnx"
    save_model_atomic(proto, out, external_data=True)
    assert proto.SerializeToString() == before  # the caller's model is untouched and usable
    datas = [p for p in tmp_path.iterdir() if p.suffix == ".data"]
    assert len(datas) == 1 and datas[0].name.startswith("m.onnx.") and _mode(datas[0]) == 0o644
    x = {"x": np.ones((1, 1000), np.float32)}
    np.testing.assert_array_equal(run_model(str(out), x)[0], run_model(proto, x)[0])
    # a second save with other data replaces the pair and removes the old data file
    proto2 = _model()
    proto2.graph.initializer[0].CopyFrom(
        numpy_helper.from_array(np.ones((1, 1000), np.float32), "w")
    )
    save_model_atomic(proto2, out, external_data=True)
    datas2 = [p for p in tmp_path.iterdir() if p.suffix == ".data"]
    assert len(datas2) == 1 and datas2 != datas
    np.testing.assert_array_equal(run_model(str(out), x)[0], 2 * np.ones((1, 1000), np.float32))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_ir_model_saves_too(tmp_path):
    save_model_atomic(ir.from_proto(_model()), tmp_path / "m.onnx", external_data=True)
    assert onnx.load(str(tmp_path / "m.onnx")).graph.initializer[0].dims == [1, 1000]


def test_small_model_over_an_external_one_removes_the_old_data_file(tmp_path):
    out = tmp_path / "m.onnx"
    save_model_atomic(_model(), out, external_data=True)
    assert [p for p in tmp_path.iterdir() if p.suffix == ".data"]
    save_model_atomic(_model(), out, external_data=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert onnx.load(str(out)).graph.initializer[0].dims == [1, 1000]


def test_output_set_commits_every_file_with_umask_mode(tmp_path, umask_022):
    from faaq_onnx.outputs import OutputSet

    with OutputSet() as outs:
        size = outs.add_model(tmp_path / "new" / "m.onnx", _model(), "-o")
        outs.add_json(tmp_path / "r.json", {"x": np.float32(2.5)}, "--json")
        outs.add_file(tmp_path / "p.txt", "--plot", lambda tmp: tmp.write_text("drawn"))
        assert not (tmp_path / "r.json").exists()  # nothing in place before the commit
    assert (tmp_path / "new" / "m.onnx").stat().st_size == size
    assert json.loads((tmp_path / "r.json").read_text()) == {"x": 2.5}
    assert (tmp_path / "p.txt").read_text() == "drawn"
    assert {
        _mode(p) for p in (tmp_path / "new" / "m.onnx", tmp_path / "r.json", tmp_path / "p.txt")
    } == {0o644}
    assert not [p for p in tmp_path.rglob(".*")]


def test_output_set_failure_leaves_every_target_as_it_was(tmp_path):
    import errno

    from faaq_onnx.errors import FaaqError
    from faaq_onnx.outputs import OutputSet

    write_json_atomic(tmp_path / "r.json", {"old": 1})

    def disk_full(tmp):
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with (
        pytest.raises(FaaqError, match=r"cannot write --plot .*p\.png: No space left on device"),
        OutputSet() as outs,
    ):
        outs.add_model(tmp_path / "new" / "deeper" / "m.onnx", _model(), "-o")
        outs.add_json(tmp_path / "r.json", {"new": 2}, "--json")
        outs.add_file(tmp_path / "p.png", "--plot", disk_full)
    assert json.loads((tmp_path / "r.json").read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["r.json"]  # no temp file, no folder made


def test_check_destinations(tmp_path):
    from faaq_onnx.errors import FaaqError
    from faaq_onnx.outputs import check_destinations

    (tmp_path / "f.txt").write_text("x")
    check_destinations({"-o": tmp_path / "a" / "b" / "q.onnx", "--json": "-", "--plan": None})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]  # checking makes nothing
    with pytest.raises(
        FaaqError, match=r"cannot write -o .*f\.txt/q\.onnx: .*f\.txt is not a folder"
    ):
        check_destinations({"-o": tmp_path / "f.txt" / "q.onnx"})
    with pytest.raises(
        FaaqError, match=r"cannot write --report .*f\.txt: it is a file, not a folder"
    ):
        check_destinations({"--report": tmp_path / "f.txt"}, folders=("--report",))
    with pytest.raises(FaaqError, match=r"cannot write -o .*: it is a folder, not a file"):
        check_destinations({"-o": tmp_path})
    with pytest.raises(FaaqError, match="--json and -o name the same file"):
        check_destinations({"-o": tmp_path / "q.onnx", "--json": tmp_path / "." / "q.onnx"})
    with pytest.raises(FaaqError, match=r"--json .*f\.txt is the input model"):
        check_destinations({"--json": tmp_path / "f.txt"}, inputs={"model": tmp_path / "f.txt"})
