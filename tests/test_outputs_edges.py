"""faaq_onnx.outputs at its edges: the data file's name from its content, byte counts, JSON text,
failures before a file exists, and cleanup of what is already gone."""

import hashlib
import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

from faaq_onnx import outputs
from faaq_onnx.errors import FaaqError
from faaq_onnx.outputs import (
    OutputSet,
    _remove_old_data,
    _Staged,
    save_model_atomic,
    tensor_bytes,
    write_json_atomic,
)
from tests.conftest import one_weight_model


def _model(values=None):
    w = np.arange(1000, dtype=np.float32).reshape(1, 1000) if values is None else values
    return one_weight_model("Add", w, [1, 1000], [1, 1000])


def test_data_file_is_named_after_a_hash_of_its_content(tmp_path):
    out = tmp_path / "m.onnx"
    save_model_atomic(_model(), out, external_data=True)
    (data,) = [p for p in tmp_path.iterdir() if p.suffix == ".data"]
    digest = hashlib.blake2b(data.read_bytes(), digest_size=16).hexdigest()
    assert data.name == f"m.onnx.{digest[:12]}.data"
    header = onnx.load(str(out), load_external_data=False)
    locations = {e.value for e in header.graph.initializer[0].external_data if e.key == "location"}
    assert locations == {data.name}
    # the same content saved again: the same name, nothing else left
    save_model_atomic(_model(), out, external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.onnx", data.name])


def test_file_digest_is_blake2b_128(tmp_path):
    p = tmp_path / "blob"
    payload = bytes(range(256)) * 50
    p.write_bytes(payload)
    want = hashlib.blake2b(payload, digest_size=16).hexdigest()
    assert outputs._file_digest(p) == want and len(want) == 32


def test_tensor_bytes_counts_raw_data_or_four_bytes_an_element():
    m = _model()
    assert tensor_bytes(m) == 4000
    t = helper.make_tensor("f", TensorProto.FLOAT, [3, 5], [0.0] * 15)  # float_data, no raw_data
    m.graph.initializer.append(t)
    assert tensor_bytes(m) == 4000 + 60
    assert outputs._approx_bytes(helper.make_tensor("s", TensorProto.FLOAT, [], [1.0])) == 4
    assert tensor_bytes(ir.from_proto(_model(np.zeros((2, 3), np.float64)))) == 48


def test_big_models_get_external_data_by_size(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "EXTERNAL_DATA_THRESHOLD", 3999)
    save_model_atomic(_model(), tmp_path / "big.onnx")
    assert [p.suffix for p in tmp_path.iterdir() if p.name.startswith("big.onnx.")] == [".data"]
    monkeypatch.setattr(outputs, "EXTERNAL_DATA_THRESHOLD", 4000)
    save_model_atomic(_model(), tmp_path / "small.onnx")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("small")) == [
        "small.onnx"
    ]


def test_a_model_still_reading_external_data_gets_its_own_data_file(tmp_path):
    save_model_atomic(_model(), tmp_path / "a.onnx", external_data=True)
    loaded = onnx.load(str(tmp_path / "a.onnx"), load_external_data=False)
    assert outputs._has_external(loaded)
    assert not outputs._has_external(_model())


def test_json_is_indented_with_a_final_newline_and_numpy_values(tmp_path):
    p = write_json_atomic(
        tmp_path / "sub" / "r.json",
        {"a": np.float32(1.5), "b": np.arange(3), "c": np.int64(7), "d": "set"},
    )
    text = p.read_text()
    assert text == json.dumps({"a": 1.5, "b": [0, 1, 2], "c": 7, "d": "set"}, indent=2) + "\n"
    assert outputs._jsonable(tmp_path) == str(tmp_path)  # anything else: its text


def test_a_failed_external_save_raises_its_own_error_and_leaves_nothing(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ir, "save", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_model_atomic(_model(), tmp_path / "m.onnx", external_data=True)
    assert list(tmp_path.iterdir()) == []


def test_staged_cleanup_tolerates_files_already_gone(tmp_path):
    s = _Staged(
        tmp_path / "t", tmp_path / "gone.tmp", renames=[(tmp_path / "gone.data", tmp_path / "d")]
    )
    s.discard()  # neither temp file exists: nothing to do, no error
    (tmp_path / "new.tmp").write_text("x")
    s2 = _Staged(tmp_path / "t", tmp_path / "new.tmp", obsolete=[tmp_path / "never.data"])
    s2.commit()
    assert (tmp_path / "t").read_text() == "x"


def test_remove_old_data_keeps_the_one_named(tmp_path):
    for n in ("a.data", "b.data", "c.data"):
        (tmp_path / n).write_text(n)
    _remove_old_data(tmp_path / "m.onnx", "b.data", {"a.data", "b.data", "gone.data"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.data", "c.data"]
    _remove_old_data(tmp_path / "m.onnx", None, {"b.data"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.data"]


def test_referenced_data_ignores_files_that_are_not_our_models(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    assert outputs._referenced_data(tmp_path / "junk.onnx") == set()
    assert outputs._referenced_data(tmp_path / "absent.onnx") == set()
    save_model_atomic(_model(), tmp_path / "m.onnx", external_data=True)
    (data,) = [p.name for p in tmp_path.iterdir() if p.suffix == ".data"]
    assert outputs._referenced_data(tmp_path / "m.onnx") == {data}


def test_output_set_names_an_option_whose_folder_cannot_be_made(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FaaqError) as e, OutputSet() as outs:
        outs.add_text(tmp_path / "ok.txt", "fine", "--a")
        outs.add_text(tmp_path / "file" / "sub" / "r.txt", "no", "--json")
    assert str(e.value).startswith(f"cannot write --json {tmp_path / 'file' / 'sub' / 'r.txt'}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_output_set_reuses_a_folder_made_meanwhile(tmp_path, monkeypatch):
    real = outputs.Path.mkdir
    made = []

    def racing_mkdir(self, *a, **k):
        if not a and not k and self.name == "race" and not made:
            made.append(self)
            real(self)  # someone else made it first
            raise FileExistsError(str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(outputs.Path, "mkdir", racing_mkdir)
    with OutputSet() as outs:
        outs.add_text(tmp_path / "race" / "deep" / "r.txt", "ok", "--json")
    assert (tmp_path / "race" / "deep" / "r.txt").read_text() == "ok"


def test_commit_failure_discards_what_is_left_and_names_the_option(tmp_path, monkeypatch):
    outs = OutputSet()
    outs.add_text(tmp_path / "a.txt", "a", "--a")
    outs.add_text(tmp_path / "b.txt", "b", "--b")
    (tmp_path / "a.txt").mkdir()  # a folder where --a goes: its rename fails
    (tmp_path / "a.txt" / "inside").write_text("x")
    with pytest.raises(FaaqError, match=r"^cannot write --a .*a\.txt: "):
        outs.commit()
    assert not (tmp_path / "b.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temp file left
