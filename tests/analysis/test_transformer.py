"""A BERT-shaped block: MatMul projections, scores, Softmax, LayerNorm, GELU."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from faaq_onnx.config import QuantConfig  # noqa: E402
from faaq_onnx.pipeline import Compilation, quantize  # noqa: E402


class Block(torch.nn.Module):
    def __init__(self, d=32, heads=4):
        super().__init__()
        self.h, self.d = heads, d
        self.q, self.k, self.v, self.o = (torch.nn.Linear(d, d) for _ in range(4))
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.ff1, self.ff2 = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    def forward(self, x):
        b, s, d = x.shape

        def split(t):
            return t.reshape(b, s, self.h, d // self.h).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.h) ** 0.5, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, s, d)
        x = self.ln1(x + self.o(y))
        return self.ln2(x + self.ff2(torch.nn.functional.gelu(self.ff1(x))))


def _export_block(path, dynamic_axes=None):
    import onnx

    torch.manual_seed(0)
    torch.onnx.export(
        Block().eval(),
        (torch.randn(1, 8, 32),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes=dynamic_axes,
    )
    p = onnx.load(path)
    p.ir_version = 10
    onnx.save(p, path)
    return str(path)


@pytest.fixture
def bert_block(tmp_path):
    return _export_block(tmp_path / "block.onnx", {"x": {0: "b"}, "y": {0: "b"}})


@pytest.fixture
def calib():
    return {"x": np.random.default_rng(0).standard_normal((32, 8, 32)).astype(np.float32)}


def test_qkv_projections_share_a_group_and_scores_are_attention(bert_block, calib):
    comp = Compilation(bert_block, calib, QuantConfig(progress=False))
    kinds = [g.kind for g in comp.qgraph.groups.values()]
    assert kinds.count("attention") == 2  # q@k^T and att@v
    qkv = [g for g in comp.qgraph.groups.values() if len(g.weights) == 3]
    assert len(qkv) == 1 and qkv[0].kind == "matmul"


def test_transformer_w8a8_and_budget(bert_block, calib):
    res = quantize(bert_block, calib, config=QuantConfig(progress=False))
    assert res.report["verify"]["outputs"]["y"]["sqnr_db"] > 20
    mixed = quantize(
        bert_block,
        calib,
        config=QuantConfig(progress=False),
        budget="bops=0.8",
        candidates="practical",
        cache_dir=False,
    )
    assert mixed.report["verify"]["outputs"]["y"]["sqnr_db"] > 15
    att = [g for g in mixed.qgraph.groups.values() if g.kind == "attention"]
    table = mixed.report["sensitivity"]
    assert att and table["candidates"] == ["w4a8", "w8a8", "w8a16"]
    # a budget of exactly W8A8's bit operations leaves no room for 16-bit attention
    tight = quantize(
        bert_block,
        calib,
        config=QuantConfig(progress=False),
        budget="bops=1.0",
        candidates="w8a8,w8a16",
        cache_dir=False,
    )
    assert {str(tight.plan.choices[g.name]) for g in att} == {"w8a8"}
    roomy = quantize(
        bert_block,
        calib,
        config=QuantConfig(progress=False),
        budget="bops=2.0",
        candidates="w8a8,w8a16",
        cache_dir=False,
    )
    assert {str(roomy.plan.choices[g.name]) for g in att} == {"w8a16"}


def test_residual_add_before_layernorm_stays_float(bert_block, calib):
    """Q/DQ around an Add that feeds LayerNormalization buys no integer kernel."""
    comp = Compilation(bert_block, calib, QuantConfig(progress=False))
    assert all(g.kind != "eltwise" for g in comp.qgraph.groups.values())


def test_attention_mask_range_stays_float(tmp_path):
    """A mask of finfo.min added to scores must not be quantized (its step would erase the scores)."""
    import onnx

    class Masked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = (torch.nn.Linear(16, 16) for _ in range(3))

        def forward(self, x, mask):
            s = self.q(x) @ self.k(x).transpose(-1, -2)
            s = s + (1.0 - mask[:, None, :]) * torch.finfo(torch.float32).min
            return torch.relu(s) @ self.v(x)  # the masked Add feeds a quantized MatMul

    torch.manual_seed(0)
    path = tmp_path / "masked.onnx"
    torch.onnx.export(
        Masked().eval(),
        (torch.randn(1, 6, 16), torch.ones(1, 6)),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["x", "mask"],
        output_names=["p"],
        dynamic_axes={"x": {0: "b"}, "mask": {0: "b"}, "p": {0: "b"}},
    )
    p = onnx.load(path)
    p.ir_version = 10
    onnx.save(p, path)
    rng = np.random.default_rng(0)
    mask = np.ones((16, 6), np.float32)
    mask[:, 4:] = 0
    calib = {"x": rng.standard_normal((16, 6, 16)).astype(np.float32), "mask": mask}
    res = quantize(str(path), calib, config=QuantConfig(progress=False))
    assert any("too wide for an integer grid" in s for s in res.report["skipped"])
    assert res.report["verify"]["outputs"]["p"]["sqnr_db"] > 20


def test_attention_groups_of_a_dynamic_shape_export_cost_their_macs(calib, tmp_path):
    """With batch and sequence dynamic, the exporter leaves the score/context MatMuls' shapes
    symbolic; the MACs faaq weighs groups by (bops budgets) are those of a static export of
    the same block, from the shapes calibration observed (sequence 8)."""
    from faaq_onnx.analysis.discover import discover_groups
    from faaq_onnx.model_io import load_model
    from faaq_onnx.passes.canonicalize import canonicalize

    static = _export_block(tmp_path / "static.onnx")
    m, _ = canonicalize(load_model(static), target_opset=21)
    want_groups = discover_groups(m)
    want = {g.name: g.macs for g in want_groups.groups.values()}
    attention = {n for n, g in want_groups.groups.items() if g.kind == "attention"}

    axes = {"x": {0: "b", 1: "s"}, "y": {0: "b", 1: "s"}}
    dynamic = _export_block(tmp_path / "dynamic.onnx", axes)
    dyn, _ = canonicalize(load_model(dynamic), target_opset=21)
    unseen = {g.name for g in discover_groups(dyn).groups.values() if g.macs == 0}
    assert attention and attention <= unseen  # what the graph alone cannot count

    comp = Compilation(dynamic, calib, QuantConfig(progress=False), target_opset=21)
    assert {g.name: g.macs for g in comp.qgraph.groups.values()} == want
    # initializer names differ between the two exports; their consumers' names do not
    assert {tuple(w.consumers): w.macs for w in comp.qgraph.weights.values()} == {
        tuple(w.consumers): w.macs for w in want_groups.weights.values()
    }


def test_a_fixed_shape_export_runs_every_weighted_matmul_on_an_integer_kernel(tmp_path, calib):
    """torch.onnx.export without dynamic axes (the default) fixes [1, 8, 32]: ORT fused the
    output projection's and feed-forward's MatMul + bias Add into float Gemms at load (3 of 6
    weighted ops in float); as Reshape -> Gemm -> Reshape they run as QGemm."""
    from faaq_onnx.runtime.kernels import kernel_report

    src, out = _export_block(tmp_path / "fixed.onnx"), tmp_path / "q.onnx"
    quantize(src, {"x": calib["x"][:16]}, str(out), QuantConfig(progress=False))
    weighted = kernel_report(str(out))["weighted_ops"]
    assert weighted["total"] == 6 and weighted["integer"] == 6, weighted["float"]
