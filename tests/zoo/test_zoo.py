"""Zoo models: names that load public checkpoints, exports that ORT runs, errors that say why."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from faaq_onnx import data, zoo
from faaq_onnx.errors import FaaqError


def _forward(model: torch.nn.Module, shape) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.randn(*shape, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_every_model_builds_and_runs(name):
    entry = zoo.ZOO[name]
    model = zoo.build(name)
    assert not model.training
    shape = (2, *entry.input_shape[1:]) if entry.input_shape[-1] <= 32 else entry.input_shape
    out = _forward(model, shape)
    assert out.shape == (shape[0], entry.num_classes)
    assert torch.isfinite(out).all()
    assert entry.preset in data.PRESETS


@pytest.mark.parametrize(
    "name, depth",
    [
        ("resnet20-cifar10", 20),
        ("resnet32-cifar10", 32),
        ("resnet44-cifar10", 44),
        ("resnet56-cifar10", 56),
    ],
)
def test_cifar_resnet_has_the_checkpoint_layout(name, depth):
    keys = zoo.build(name).state_dict().keys()
    n = (depth - 2) // 6
    assert {
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.conv1.weight",
        "layer1.0.bn2.bias",
        f"layer3.{n - 1}.conv2.weight",
        "linear.weight",
        "linear.bias",
    } <= set(keys)
    assert f"layer3.{n}.conv1.weight" not in keys
    assert not any("shortcut" in k for k in keys)  # option A has no parameters
    convs = [k for k in keys if k.endswith("conv1.weight") or k.endswith("conv2.weight")]
    assert len(convs) == 1 + 2 * 3 * n


def test_torchvision_names():
    r18 = zoo.build("resnet18-imagenet").state_dict()
    r50 = zoo.build("resnet50-imagenet").state_dict()
    mb2 = zoo.build("mobilenetv2-imagenet").state_dict()
    assert {
        "conv1.weight",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_var",
        "fc.weight",
    } <= set(r18)
    assert {"layer1.0.conv3.weight", "layer4.2.bn3.bias", "fc.weight"} <= set(r50)
    assert r50["fc.weight"].shape == (1000, 2048)
    # parameter counts are torchvision's
    assert (
        sum(v.numel() for k, v in r18.items() if "running" not in k and "num_batches" not in k)
        == 11_689_512
    )
    assert (
        sum(v.numel() for k, v in r50.items() if "running" not in k and "num_batches" not in k)
        == 25_557_032
    )
    assert (
        sum(v.numel() for k, v in mb2.items() if "running" not in k and "num_batches" not in k)
        == 3_504_872
    )
    assert {
        "features.0.0.weight",
        "features.1.conv.0.0.weight",
        "features.1.conv.1.weight",
        "features.2.conv.3.running_mean",
        "features.18.0.weight",
        "classifier.1.weight",
    } <= set(mb2)


def test_seeded_init_is_reproducible():
    a = zoo.build("resnet20-cifar10", seed=3).state_dict()
    b = zoo.build("resnet20-cifar10", seed=3).state_dict()
    c = zoo.build("resnet20-cifar10", seed=4).state_dict()
    assert torch.equal(a["conv1.weight"], b["conv1.weight"])
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_state_dict_round_trip_strict(tmp_path):
    src = zoo.build("mobilenetv2-imagenet", seed=1)
    path = tmp_path / "mbv2.pth"
    torch.save(src.state_dict(), path)
    dst = zoo.build("mobilenetv2-imagenet", weights=path, seed=2)
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrapped_and_module_prefixed_weights_load(tmp_path, wrapper):
    src = zoo.build("resnet20-cifar10", seed=5)
    # the pytorch_resnet_cifar10 layout: DataParallel prefix, no BN step counters
    sd = {f"module.{k}": v for k, v in src.state_dict().items() if "num_batches" not in k}
    path = tmp_path / "ckpt.th"
    torch.save({wrapper: sd, "best_prec1": 91.0}, path)
    dst = zoo.build("resnet20-cifar10", weights=path)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(src(x), dst(x))


def test_bad_weights_raise_faaq_error(tmp_path):
    with pytest.raises(FaaqError, match="not found"):
        zoo.build("resnet20-cifar10", weights=tmp_path / "nope.th")
    junk = tmp_path / "junk.th"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(FaaqError, match="cannot read weights"):
        zoo.build("resnet20-cifar10", weights=junk)
    other = tmp_path / "r32.th"
    torch.save(zoo.build("resnet32-cifar10").state_dict(), other)
    with pytest.raises(FaaqError, match="unexpected") as e:
        zoo.build("resnet20-cifar10", weights=other)
    assert "\n" not in str(e.value)
    wide = zoo.build("resnet20-cifar10").state_dict()
    wide["linear.weight"] = torch.zeros(100, 64)
    torch.save(wide, other)
    with pytest.raises(FaaqError, match=r"wrong shape.*linear\.weight"):
        zoo.build("resnet20-cifar10", weights=other)
    with pytest.raises(FaaqError, match="unknown zoo model"):
        zoo.build("resnet21-cifar10")


def test_export_resnet20_matches_torch(tmp_path):
    out = zoo.export("resnet20-cifar10", tmp_path / "sub" / "r20.onnx", seed=7)
    assert out.exists()
    assert [p.name for p in out.parent.iterdir()] == ["r20.onnx"]  # no temp file left
    model = onnx.load(out)
    assert model.ir_version == 10
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    with torch.no_grad():
        want = zoo.build("resnet20-cifar10", seed=7)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_export_fixed_batch_and_failure_leaves_nothing(tmp_path):
    out = zoo.export("digits-cnn", tmp_path / "d.onnx", batch=4)
    dim0 = onnx.load(out).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_value == 4
    assert data.model_preset(onnx.load(out)) == "digits"  # zoo exports record their preset
    with pytest.raises(FaaqError, match="batch"):
        zoo.export("digits-cnn", tmp_path / "bad.onnx", batch=0)
    with pytest.raises(RuntimeError, match="channels"):  # torch refuses the wrong input
        zoo.export_module(zoo.DigitsCNN().eval(), torch.zeros(1, 3, 8, 8), tmp_path / "bad2.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.onnx"]


def test_digits_cnn_is_accurate_and_deterministic():
    model, (x_tr, _y_tr), (x_te, y_te) = zoo.train_digits_cnn(seed=0)
    assert x_tr.dtype == np.float32 and x_tr.shape[1:] == (1, 8, 8)
    assert x_tr.min() >= 0.0 and x_tr.max() <= 1.0
    assert abs(len(x_te) / (len(x_tr) + len(x_te)) - 1 / 3) < 0.01
    assert set(np.bincount(y_te)) <= set(range(55, 63))  # stratified: ~60 per class
    with torch.no_grad():
        acc = (model(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean()
    assert acc >= 0.95
    # training itself is deterministic: a second, independent run gives the same weights
    again, _, _ = zoo.train_digits_cnn(seed=0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    other, _, _ = zoo.train_digits_cnn(seed=1)
    assert not torch.equal(other.state_dict()["fc.weight"], model.state_dict()["fc.weight"])


# --- real data (skips cleanly without ../shared/data) ---------------------------------

_DATA = os.environ.get("FAAQ_DATA_DIR")


def _real(rel: str) -> Path:
    if not _DATA or not (Path(_DATA) / rel).exists():
        pytest.skip(f"needs FAAQ_DATA_DIR with {rel}")
    return Path(_DATA) / rel


def test_resnet20_float_top1_on_lossless_subset_torch_and_ort(tmp_path):
    weights = _real("cifar10/resnet20-12fca82f.th")
    data_file = _real("cifar10/cifar10_test_lossless1017.npz")
    from faaq_onnx.data import iter_batches, load_labeled

    x, y = load_labeled(data_file)
    model = zoo.build("resnet20-cifar10", weights=weights)
    with torch.no_grad():
        top1_torch = 100 * (model(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
    assert abs(top1_torch - 91.64) <= 0.05

    path = zoo.export("resnet20-cifar10", tmp_path / "r20.onnx", weights=weights)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pred = np.concatenate([sess.run(None, b)[0].argmax(1) for b in iter_batches({"input": x}, 256)])
    assert abs(100 * (pred == y).mean() - 91.64) <= 0.05


PUBLISHED_PARAMETERS = {
    # pytorch_resnet_cifar10 (akamaster), option-A shortcuts: 0.27M, 0.46M, 0.66M, 0.85M
    "resnet20-cifar10": 269_722,
    "resnet32-cifar10": 464_154,
    "resnet44-cifar10": 658_586,
    "resnet56-cifar10": 853_018,
    # torchvision's model cards (num_params)
    "resnet18-imagenet": 11_689_512,
    "resnet50-imagenet": 25_557_032,
    "mobilenetv2-imagenet": 3_504_872,
    # TensorFlow's EfficientNet-Lite0 (4.7M)
    "efficientnet-lite0-imagenet": 4_652_008,
}


@pytest.mark.parametrize("name", PUBLISHED_PARAMETERS)
def test_parameter_counts_are_the_published_ones(name):
    """Every layer's shape, bias or not, adds up to the reference implementation's count."""
    model = zoo.ZOO[name].builder()
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMETERS[name]


PUBLISHED_GMACS = {  # multiply-accumulates of one sample, convolutions and linear layers
    "resnet18-imagenet": 1.81,  # torchvision's model cards (GFLOPS, counted as MACs)
    "mobilenetv2-imagenet": 0.30,
    "resnet20-cifar10": 0.04,  # He et al. 2016: 41 M
}


@pytest.mark.parametrize("name", PUBLISHED_GMACS)
def test_compute_is_the_published_one(name):
    """Strides and resolutions add up too: a stride changed anywhere changes the MACs."""
    entry = zoo.ZOO[name]
    model, total = entry.builder().eval(), [0]

    def conv(mod, _inp, out):
        total[0] += (
            out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        )

    def linear(mod, _inp, _out):
        total[0] += mod.in_features * mod.out_features

    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            mod.register_forward_hook(conv)
        elif isinstance(mod, torch.nn.Linear):
            mod.register_forward_hook(linear)
    with torch.no_grad():
        model(torch.zeros(entry.input_shape))
    assert round(total[0] / 1e9, 2) == PUBLISHED_GMACS[name]


def test_an_exported_model_is_readable_per_the_umask(tmp_path):
    """mkstemp makes 0600 files: the export must end with the mode the umask gives (0644
    under 022), like every other file faaq writes."""
    import stat

    old = os.umask(0o022)
    try:
        out = zoo.export("resnet20-cifar10", tmp_path / "m.onnx")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
