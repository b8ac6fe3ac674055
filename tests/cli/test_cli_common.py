"""cli/common.py's helpers: JSON to a file or stdout, warnings on stderr, sizes, bounds, the cache
option and the input files a command must not overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from faaq_onnx.cli import common
from faaq_onnx.errors import FaaqError


def run(fn):
    @click.command()
    def cmd():
        fn()

    return CliRunner().invoke(cmd, [])


def test_json_to_stdout_or_to_a_file(tmp_path):
    r = run(lambda: common.write_json("-", {"a": np.float32(1.5), "b": [1]}))
    assert r.exit_code == 0 and r.stdout == json.dumps({"a": 1.5, "b": [1]}, indent=2) + "\n"
    common.write_json(tmp_path / "r.json", {"a": np.int64(2)})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 2}


def test_warnings_are_one_line_each_on_stderr():
    r = run(lambda: common.echo_warnings(["first", "second"]))
    assert r.stderr == "warning: first\nwarning: second\n" and r.stdout == ""


@pytest.mark.parametrize(
    "n,text",
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KB"),
        (1536, "1.50 KB"),
        (1024**2 - 1, "1024.00 KB"),
        (5 * 1024**2, "5.00 MB"),
        (3 * 1024**3, "3.00 GB"),
        (5 * 1024**4, "5120.00 GB"),
        (-2048, "-2.00 KB"),
    ],
)
def test_human_bytes(n, text):
    assert common.human_bytes(n) == text


def test_at_least():
    common.at_least("--trials", None)
    common.at_least("--trials", 1)
    common.at_least("--trials", 2, minimum=2)
    with pytest.raises(FaaqError) as e:
        common.at_least("--trials", 0)
    assert str(e.value) == "--trials must be at least 1, got 0"
    with pytest.raises(FaaqError, match="--x must be at least 3, got 2"):
        common.at_least("--x", 2, minimum=3)


def test_cache_option_and_its_check(tmp_path, monkeypatch):
    assert common.cache_option(None, True) is False
    assert common.cache_option(str(tmp_path), True) is False
    assert common.cache_option(str(tmp_path), False) == Path(tmp_path)
    assert common.cache_option(None, False) is None
    common.check_cache_dir(None, True)  # no cache: nothing to check
    common.check_cache_dir(str(tmp_path / "new"), False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FaaqError, match=r"cannot write --cache-dir .*it is a file, not a folder"):
        common.check_cache_dir(str(tmp_path / "file"), False)
    import faaq_onnx.analysis.sensitivity as sens

    monkeypatch.setattr(sens, "default_cache_dir", lambda: tmp_path / "file")
    with pytest.raises(FaaqError) as e:
        common.check_cache_dir(None, False)
    assert str(e.value).startswith("cannot write the sensitivity cache ")
    assert str(e.value).endswith(" (pass --cache-dir DIR or --no-cache)")
    monkeypatch.setattr(sens, "default_cache_dir", lambda: tmp_path / "cache")
    common.check_cache_dir(None, False)


def test_input_files_are_the_files_that_exist(tmp_path):
    (tmp_path / "m.onnx").write_text("x")
    (tmp_path / "calib.npz").write_text("x")
    got = common.input_files(
        model=tmp_path / "m.onnx",
        plan=None,
        folder=tmp_path,
        missing=tmp_path / "nope.onnx",
    )
    assert got == {"model": tmp_path / "m.onnx"}
    got = common.input_files(**{"calibration data": "random:8", "labeled data": ""})
    assert got == {}
    got = common.input_files(**{"calibration data": str(tmp_path / "calib.npz")})
    assert got == {"calibration data": tmp_path / "calib.npz"}
