"""`faaq inspect`: the exact listing of quantizer groups, warnings on stderr, --no-simplify, --json."""

import json

import onnx
import pytest
from click.testing import CliRunner

from faaq_onnx.cli import main
from tests.conftest import build_tiny_cnn

LISTING = """\
4 quantizer groups, 3 weight quantizers, 5 activation quantizers
g:conv1  [conv]  MACs 55,296  params 216
    ops:         conv1
    weights:     c1.w_bnfold
    activation:  input
g:conv2  [conv]  MACs 37,376  params 576
    ops:         conv2, add2
    weights:     c2.w_bnfold
    activation:  c1, r1, p1  (replaces relu1)
    activation:  c2
g:gap  [pool]  MACs 512  params 0
    ops:         gap
    activation:  a2, r2  (replaces relu2)
g:fc  [gemm]  MACs 80  params 80
    ops:         fc
    weights:     fc.w
    activation:  gap, flat
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(build_tiny_cnn(), str(path))
    return str(path)


def test_inspect_lists_every_group(tiny, tmp_path):
    r = CliRunner().invoke(main, ["inspect", tiny, "--json", str(tmp_path / "q.json")])
    assert r.exit_code == 0, r.output
    assert r.stdout == LISTING and r.stderr == ""
    rep = json.loads((tmp_path / "q.json").read_text())
    assert set(rep["weights"]) == {"c1.w_bnfold", "c2.w_bnfold", "fc.w"}
    assert rep["weights"]["c1.w_bnfold"]["macs"] == 55296


def test_warnings_go_to_stderr_and_skipped_ops_are_named(tiny, monkeypatch):
    from faaq_onnx.analysis import discover
    from faaq_onnx.passes import canonicalize as canon

    seen = {}
    real_canon, real_discover = canon.canonicalize, discover.discover_groups

    def canonicalize(model, simplify=True, **kw):
        seen["simplify"] = simplify
        m, warnings = real_canon(model, simplify=simplify, **kw)
        return m, [*warnings, "something odd"]

    def discover_groups(model, *a, **kw):
        q = real_discover(model, *a, **kw)
        q.skipped.append("Foo node7: no integer kernel")
        return q

    monkeypatch.setattr(canon, "canonicalize", canonicalize)
    monkeypatch.setattr(discover, "discover_groups", discover_groups)
    r = CliRunner().invoke(main, ["inspect", tiny, "--no-simplify"])
    assert r.exit_code == 0, r.output
    assert seen == {"simplify": False}
    assert r.stderr == "warning: something odd\n"
    assert r.stdout == LISTING + "not quantized: Foo node7: no integer kernel\n"
    CliRunner().invoke(main, ["inspect", tiny])
    assert seen == {"simplify": True}


def test_inspect_refuses_to_write_over_its_model(tiny):
    r = CliRunner().invoke(main, ["inspect", tiny, "--json", tiny])
    assert r.exit_code != 0 and "inputs are never overwritten" in r.output
