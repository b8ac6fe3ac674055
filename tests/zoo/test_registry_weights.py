"""zoo/registry.py's checkpoint handling on a tiny module: every wrapping read, every misfit named
in one line, and the registry's entries."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from faaq_onnx.errors import FaaqError  # noqa: E402
from faaq_onnx.zoo import registry as reg  # noqa: E402


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
        self.bn = torch.nn.BatchNorm1d(2)


def state():
    torch.manual_seed(0)
    return Tiny().state_dict()


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "model_state_dict", "module"])
def test_every_wrapping_reads_as_a_plain_state_dict(tmp_path, wrap):
    sd = state()
    obj = {
        "plain": sd,
        "state_dict": {"state_dict": sd, "epoch": 3},
        "model": {"model": sd},
        "model_state_dict": {"model_state_dict": sd},
        "module": {f"module.{k}": v for k, v in sd.items()},
    }[wrap]
    torch.save(obj, tmp_path / "w.pt")
    got = reg.load_state_dict_file(tmp_path / "w.pt")
    assert list(got) == list(sd) and all(torch.equal(got[k], sd[k]) for k in sd)


def test_unreadable_files_are_one_line(tmp_path):
    with pytest.raises(FaaqError) as e:
        reg.load_state_dict_file(tmp_path / "none.pt")
    assert str(e.value) == f"weights file not found: {tmp_path / 'none.pt'}"
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint\nat all")
    with pytest.raises(FaaqError) as e:
        reg.load_state_dict_file(tmp_path / "junk.pt")
    assert str(e.value).startswith(f"cannot read weights file {tmp_path / 'junk.pt'}: ")
    assert "\n" not in str(e.value)
    torch.save({}, tmp_path / "empty.pt")
    with pytest.raises(FaaqError) as e:
        reg.load_state_dict_file(tmp_path / "empty.pt")
    assert str(e.value) == f"weights file {tmp_path / 'empty.pt'} holds no state dict (got dict)"
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(FaaqError, match=r"holds no state dict \(got list\)"):
        reg.load_state_dict_file(tmp_path / "list.pt")
    torch.save({"fc.weight": 3}, tmp_path / "int.pt")
    with pytest.raises(FaaqError) as e:
        reg.load_state_dict_file(tmp_path / "int.pt")
    assert str(e.value) == f"weights file {tmp_path / 'int.pt'}: entry 'fc.weight' is not a tensor"


def test_misfits_name_their_keys_and_shapes():
    sd = state()
    model = Tiny()
    reg._load_into(model, dict(sd), "tiny", "w.pt")
    assert torch.equal(model.fc.weight, sd["fc.weight"])
    old = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    reg._load_into(Tiny(), old, "tiny", "w.pt")  # pre-1.0 checkpoints lack the step counter
    short = {k: v for k, v in sd.items() if not k.startswith("bn.")}
    with pytest.raises(FaaqError) as e:
        reg._load_into(Tiny(), short, "tiny", "w.pt")
    assert str(e.value) == (
        "weights w.pt do not fit tiny: keys 4 missing (e.g. bn.weight, bn.bias, bn.running_mean)"
    )
    extra = {**sd, "head.weight": torch.zeros(1), "head.bias": torch.zeros(1)}
    with pytest.raises(FaaqError) as e:
        reg._load_into(Tiny(), extra, "tiny", "w.pt")
    assert str(e.value) == (
        "weights w.pt do not fit tiny: keys 2 unexpected (e.g. head.weight, head.bias)"
    )
    both = {**short, "head.weight": torch.zeros(1)}
    with pytest.raises(FaaqError, match=r"keys 4 missing .*; 1 unexpected"):
        reg._load_into(Tiny(), both, "tiny", "w.pt")
    wrong = {**sd, "fc.weight": torch.zeros(2, 4), "fc.bias": torch.zeros(3)}
    with pytest.raises(FaaqError) as e:
        reg._load_into(Tiny(), wrong, "tiny", "w.pt")
    assert str(e.value) == (
        "weights w.pt do not fit tiny: 2 tensors have the wrong shape "
        "(e.g. fc.weight: (2, 4) vs (2, 3))"
    )


def test_weights_resolution(tmp_path):
    assert reg.resolve_weights("resnet20-cifar10", None) is None
    assert reg.resolve_weights("resnet20-cifar10", str(tmp_path / "w.th")) == tmp_path / "w.th"
    with pytest.raises(FaaqError) as e:
        reg.resolve_weights("resnet20-cifar10", "auto")
    assert str(e.value) == (
        "resnet20-cifar10 has no packaged weights for --weights auto; pass a checkpoint file "
        "(pytorch_resnet_cifar10 checkpoint (.th))"
    )
    with pytest.raises(FaaqError) as e:
        reg.resolve_weights("digits-cnn", "auto")
    assert str(e.value) == (
        "digits-cnn has no packaged weights for --weights auto; pass a checkpoint file"
    )
    with pytest.raises(FaaqError) as e:
        reg.build("resnet99")
    assert str(e.value).startswith(
        "unknown zoo model 'resnet99'; choose one of: resnet20-cifar10, "
    )


def test_registry_entries():
    z = reg.ZOO
    assert [z[f"resnet{d}-cifar10"].input_shape for d in (20, 32, 44, 56)] == [(1, 3, 32, 32)] * 4
    assert {z[f"resnet{d}-cifar10"].num_classes for d in (20, 32, 44, 56)} == {10}
    for name in ("resnet18-imagenet", "resnet50-imagenet", "mobilenetv2-imagenet"):
        assert (z[name].input_shape, z[name].num_classes, z[name].preset) == (
            (1, 3, 224, 224),
            1000,
            "imagenet",
        )
    assert z["efficientnet-lite0-imagenet"].preset == "imagenet-inception"
    assert (z["digits-cnn"].input_shape, z["digits-cnn"].num_classes) == ((1, 1, 8, 8), 10)
    assert [len(z[f"resnet{d}-cifar10"].builder().layer1) for d in (20, 32)] == [3, 5]
