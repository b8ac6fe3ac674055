"""`faaq eval` on two linear classifiers: every number of its lines computed here in numpy."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from faaq_onnx.cli import main
from tests.conftest import one_weight_model

RNG = np.random.default_rng(0)
X = RNG.standard_normal((40, 4)).astype(np.float32)
W = RNG.standard_normal((4, 3)).astype(np.float32)
W2 = W + 0.6 * RNG.standard_normal((4, 3)).astype(np.float32)
Y = (X @ W).argmax(1)
Y[:4] = (Y[:4] + 1) % 3  # the reference gets 36 of 40


def save(w, path):
    m = one_weight_model("MatMul", w, ["n", 4], ["n", 3], x="input", y="logits")
    onnx.save(m, str(path))
    return str(path)


@pytest.fixture
def files(tmp_path):
    np.savez(tmp_path / "d.npz", x=X, y=Y)
    return save(W, tmp_path / "a.onnx"), save(W2, tmp_path / "b.onnx"), str(tmp_path / "d.npz")


def per_class(logits):
    pred = logits.argmax(1)
    return {c: float(np.mean(pred[c == Y] == c)) for c in np.unique(Y)}


def test_lines_state_accuracy_drop_and_fidelity(files, tmp_path):
    a, b, data = files
    r = CliRunner().invoke(
        main, ["eval", a, b, "--data", data, "--per-class", "--json", str(tmp_path / "e.json")]
    )
    assert r.exit_code == 0, r.output
    la, lb = X.astype(np.float64) @ W, X.astype(np.float64) @ W2
    top_a, top_b = np.mean(la.argmax(1) == Y), np.mean(lb.argmax(1) == Y)
    pa, pb = per_class(la), per_class(lb)
    worst_a = min(pa, key=pa.get)
    lines = r.stdout.splitlines()
    assert lines[0] == (
        f"{a}: top-1 {100 * top_a:.2f}%  top-5 100.00%  (40 samples)"
        f"  worst class {worst_a} {100 * pa[worst_a]:.1f}%"
    )
    for i, c in enumerate(sorted(pa), start=1):
        n = int(np.sum(c == Y))
        assert lines[i] == f"    class {c:>12}: {100 * pa[c]:6.2f}%  (n={n})"
    drops = {c: pa[c] - pb[c] for c in pa}
    worst_drop = max(drops, key=drops.get)
    worst_b = min(pb, key=pb.get)
    agree = np.mean(la.argmax(1) == lb.argmax(1))
    sqnr = 10 * np.log10(np.sum(la**2) / np.sum((la - lb) ** 2))
    fixed = int(np.sum((lb.argmax(1) == Y) & (la.argmax(1) != Y)))
    broken = int(np.sum((lb.argmax(1) != Y) & (la.argmax(1) == Y)))
    first_b = 1 + len(pa)
    assert lines[first_b] == (
        f"{b}: top-1 {100 * top_b:.2f}%  top-5 100.00%  (40 samples)"
        f"  worst class {worst_b} {100 * pb[worst_b]:.1f}%"
        f"  drop {100 * (top_a - top_b):+.2f} pt, worst-class drop "
        f"{100 * drops[worst_drop]:+.1f} pt ({worst_drop})"
    )
    assert lines[first_b + 1].startswith(f"    vs reference: same class on {100 * agree:.2f}%, KL ")
    assert lines[first_b + 1].endswith(
        f", logit SQNR {sqnr:.1f} dB, {fixed} fixed / {broken} broken"
    )
    rep = json.loads((tmp_path / "e.json").read_text())
    assert rep["data"] == data and list(rep["models"]) == [a, b]
    assert rep["models"][b]["vs_reference"]["fixed"] == fixed


def test_the_same_model_twice_has_identical_logits(files):
    a, _, data = files
    r = CliRunner().invoke(main, ["eval", a, a, "--data", data, "--limit", "10"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and "(10 samples)" in lines[0]
    assert "drop +0.00 pt" in lines[1] and lines[2].endswith(
        ", identical logits, 0 fixed / 0 broken"
    )


@pytest.mark.parametrize("option,value", [("--batch-size", "0"), ("--limit", "0")])
def test_bad_counts_are_refused(files, option, value):
    a, _, data = files
    r = CliRunner().invoke(main, ["eval", a, "--data", data, option, value])
    assert r.exit_code != 0 and f"{option} must be at least 1, got 0" in r.output
