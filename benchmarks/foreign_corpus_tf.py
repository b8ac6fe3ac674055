"""TensorFlow-converted graphs for the foreign-graph corpus (benchmarks/foreign_corpus.py).

Users bring ONNX files that tf2onnx wrote from Keras models and from TFLite files: NHWC inputs
behind one Transpose, BatchNorms left as Mul + Add after a Conv, Dense layers as MatMul + Add,
Keras 'same' padding as explicit Pads before strided convs, swish as Sigmoid x Mul, and SE
blocks through Squeeze / Reshape. TensorFlow is no dependency of faaq (nor of the benchmark
environment: its wheels pin their own numpy), so the files are written by this same module run
under a second Python that has it:

    python -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0
    FAAQ_TF_PYTHON=/tmp/tfenv/bin/python python benchmarks/bench_foreign_graphs.py \\
        --data-dir ../shared/data \\
        --models tf-mbv2-keras13,tf-effb0-keras17,tf-mbv2-tflite13,tf-resnet50-keras15,tf-encoder-keras17,\\
tf-mnv3s-keras17,tf-mnv3l-keras17,tf-densenet121-keras17,tf-unet-keras17,tf-audio-keras17

| name | what tf2onnx converted | input |
| --- | --- | --- |
| tf-mbv2-keras13 | keras.applications.MobileNetV2 (alpha 0.35, 100 classes), from_keras, opset 13 | 1x96x96x3, [-1, 1] |
| tf-effb0-keras17 | keras.applications.EfficientNetB0 (100 classes; its own rescaling), from_keras, opset 17 | 1x96x96x3, 0-255 |
| tf-mbv2-tflite13 | the same MobileNetV2 saved, converted to a float .tflite, from_tflite, opset 13 | 1x96x96x3, [-1, 1] |
| tf-resnet50-keras15 | keras.applications.ResNet50 (100 classes), from_keras, opset 15 | 1x96x96x3, caffe BGR means |
| tf-mnv3s-keras17, tf-mnv3l-keras17 | keras.applications.MobileNetV3Small / Large (100 classes; their own rescaling; tf2onnx leaves them NHWC: hard-swish, SE and BatchNorms between layout Transposes), opset 17 | 1x96x96x3, 0-255 |
| tf-densenet121-keras17 | keras.applications.DenseNet121 (100 classes; pre-activation BatchNorms as Mul/Add after each Concat), opset 17 | 1x96x96x3, torch preprocessing |
| tf-xception-keras17, tf-inceptionv3-keras17 | keras.applications.Xception (SeparableConv2D) / InceptionV3 (100 classes), opset 17 | 1x96x96x3, [-1, 1] |
| tf-nasnetm-keras17, tf-resnet50v2-keras17 | keras.applications.NASNetMobile / ResNet50V2 (pre-activation), opset 17 | 1x96x96x3, [-1, 1] |
| tf-effv2b0-keras17, tf-mbv1-keras17 | keras.applications.EfficientNetV2B0 (fused MBConv; its own rescaling) / MobileNet (v1, alpha 0.5), 100 classes, opset 17. Not in the corpus: ConvNeXtTiny (tf2onnx 1.17 leaves its depthwise convs as StatefulPartitionedCall from Keras and has no GELU from TFLite), RegNet (not in Keras 3.15) | 1x96x96x3, 0-255 / [-1, 1] |
| tf-unet-keras17 | a small U-Net: Conv + BN, SeparableConv2D, DepthwiseConv2D (multiplier 2, ReLU6), Conv2DTranspose, UpSampling2D (Tile), Concatenate, Sigmoid; opset 17 | 1x64x64x3, [0, 1] |
| tf-audio-keras17 | Conv1D (as Unsqueeze -> Conv 1xk -> Squeeze), BN after ReLU, a GRU (tf2onnx writes a Loop), Dense + BN, Softmax; opset 17 | 1x100x40 features |
| tf-encoder-keras17 | 2 post-norm Keras encoder layers (MultiHeadAttention, 4 heads, d 64, ReLU FF 256; tf2onnx has no Erfc for GELU), mean-pooled, Dense 10; from_keras, opset 17 | 1x32x64 token embeddings |

Random weights (seeded) and random BatchNorm statistics, as the corpus's other random-weight
nets: what is measured is what the graph lets a quantizer do, not accuracy. The files are not
bit-reproducible run to run (TensorFlow and tf2onnx's constant folding: two runs of the same
code left 89 of MobileNetV2's 126 initializers identical), so SQNRs move a little between runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SIDE = 96
SEQ, WIDTH = 32, 64  # the encoder's tokens and model width
UNET_SIDE, FRAMES, BANDS = 64, 100, 40
# name: (family, tf2onnx route, opset)
TF_MODELS = {
    "tf-mbv2-keras13": ("mobilenetv2", "keras", 13),
    "tf-mbv2-tflite13": ("mobilenetv2", "tflite", 13),
    "tf-resnet50-keras15": ("resnet50", "keras", 15),
    **{
        f"tf-{short}-keras17": (family, "keras", 17)
        for short, family in [
            ("effb0", "efficientnetb0"),
            ("encoder", "encoder"),
            ("mnv3s", "mobilenetv3small"),
            ("mnv3l", "mobilenetv3large"),
            ("densenet121", "densenet121"),
            ("xception", "xception"),
            ("inceptionv3", "inceptionv3"),
            ("nasnetm", "nasnetmobile"),
            ("resnet50v2", "resnet50v2"),
            ("effv2b0", "efficientnetv2b0"),
            ("mbv1", "mobilenet"),
            ("unet", "unet"),
            ("audio", "audio"),
        ]
    },
}
INSTALL = (
    "set FAAQ_TF_PYTHON to a Python with tensorflow-cpu and tf2onnx "
    "(python -m venv /tmp/tfenv; /tmp/tfenv/bin/pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0)"
)


# ----------------------------------------------------------------------------- main environment

_SOURCES = {
    "encoder": f"Keras encoder (2 layers, MultiHeadAttention, d {WIDTH}), 1x{SEQ}x{WIDTH}",
    "unet": f"Keras U-Net (SeparableConv2D, Conv2DTranspose, UpSampling2D), NHWC 1x{UNET_SIDE}x{UNET_SIDE}x3",
    "audio": f"Keras Conv1D + GRU (a Loop) + Dense, 1x{FRAMES}x{BANDS}",
}
_DATA = {
    "encoder": "Gaussian token embeddings with a per-sample offset (seeded)",
    "audio": "Gaussian features with a per-band level (seeded)",
    "unet": f"val1300 photos resized to {UNET_SIDE}x{UNET_SIDE}, scaled to [0, 1]",
}


def tf_entry(name: str, work: Path, ddir: Path | None):
    """The corpus Entry of a TF-converted model, its file written by FAAQ_TF_PYTHON."""
    import numpy as np
    import onnx
    from foreign_corpus import Entry, Skip, _photo, _split_seeds, _val_files

    family, route, opset = TF_MODELS[name]
    path = work / f"{name}.onnx"
    if not path.exists():
        python = os.environ.get("FAAQ_TF_PYTHON")
        if not python:
            raise Skip(INSTALL)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
        done = subprocess.run(
            [python, __file__, name, str(path)], env=env, capture_output=True, text=True
        )
        if done.returncode != 0 or not path.exists():
            raise Skip(f"{name}: the TF side failed: {done.stderr.strip().splitlines()[-1:]}")
    input_name = onnx.load(str(path), load_external_data=False).graph.input[0].name

    def preprocess(rgb: np.ndarray) -> np.ndarray:
        x = rgb.astype(np.float32)
        if family in (
            "mobilenetv2",
            "mobilenet",
            "xception",
            "inceptionv3",
            "nasnetmobile",
            "resnet50v2",
        ):
            # keras' "tf" preprocessing
            return x / 127.5 - 1.0
        if family == "resnet50":  # keras' "caffe" preprocessing: BGR, ImageNet means
            return x[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
        if family == "densenet121":  # keras' "torch" preprocessing
            mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
            return ((x / 255.0 - mean) / std).astype(np.float32)
        return x  # EfficientNet(V2) and MobileNetV3 rescale inside the model

    def feeds(split, n):
        out = []
        for s in _split_seeds(split, n):
            if family == "encoder":  # as the torch encoders': unit rows, an offset per sample
                rng = np.random.default_rng(10_000 + s)
                x = rng.standard_normal((1, SEQ, WIDTH)) + 0.5 * rng.standard_normal((1, 1, WIDTH))
                out.append({input_name: x.astype(np.float32)})
                continue
            if family == "audio":  # log-mel-like features: a per-band level, unit noise
                rng = np.random.default_rng(20_000 + s)
                x = rng.standard_normal((1, FRAMES, BANDS)) + rng.standard_normal((1, 1, BANDS))
                out.append({input_name: x.astype(np.float32)})
                continue
            if family == "unet":
                photo = _photo(ddir, s if split == "calib" else 1299 - (s % 1000), (64, 64))
                out.append({input_name: (photo.astype(np.float32) / 255.0)[None]})
                continue
            seed = s if split == "calib" else 1299 - (s % 1000)
            out.append({input_name: preprocess(_photo(ddir, seed, (SIDE, SIDE)))[None]})
        return out

    how = (
        "from_tflite (Keras -> SavedModel -> float .tflite)" if route == "tflite" else "from_keras"
    )
    return Entry(
        name,
        path,
        feeds,
        source=f"{_SOURCES.get(family, f'keras.applications {family}')}, random weights; "
        f"tf2onnx {how}, opset {opset}",
        data=_DATA.get(family)
        or (
            f"val1300 photos resized to {SIDE}x{SIDE}, the Keras preprocessing"
            if _val_files(ddir)
            else "smooth noise images (no --data-dir)"
        ),
    )


# ----------------------------------------------------------------------------- TF environment

APPLICATIONS = {  # family: (keras.applications class, its other arguments)
    "mobilenetv2": ("MobileNetV2", {"alpha": 0.35}),
    "efficientnetb0": ("EfficientNetB0", {}),
    "resnet50": ("ResNet50", {}),
    "mobilenetv3small": ("MobileNetV3Small", {}),
    "mobilenetv3large": ("MobileNetV3Large", {}),
    "densenet121": ("DenseNet121", {}),
    "xception": ("Xception", {}),
    "inceptionv3": ("InceptionV3", {}),
    "nasnetmobile": ("NASNetMobile", {}),
    "resnet50v2": ("ResNet50V2", {}),
    "efficientnetv2b0": ("EfficientNetV2B0", {}),
    "mobilenet": ("MobileNet", {"alpha": 0.5}),
}


def _write(name: str, out: Path) -> None:
    """Build the Keras model `name` names and write tf2onnx's ONNX file to `out` (TF side)."""
    import numpy as np
    import tensorflow as tf
    import tf2onnx

    keras = tf.keras
    family, route, opset = TF_MODELS[name]
    keras.utils.set_random_seed(sum(map(ord, family)))
    shape = (SIDE, SIDE, 3)
    if family in APPLICATIONS:  # keras.applications, random weights, 100 classes
        cls, extra = APPLICATIONS[family]
        model = getattr(keras.applications, cls)(
            weights=None, input_shape=shape, classes=100, **extra
        )
    else:
        model = {"encoder": _encoder, "unet": _unet, "audio": _audio}[family](keras)
    for i, layer in enumerate(model.layers):  # random statistics, so folding has work to do
        if isinstance(layer, keras.layers.BatchNormalization):
            c, rng = layer.moving_mean.shape[0], np.random.default_rng(i)
            layer.moving_mean.assign((rng.standard_normal(c) * 0.1).astype("float32"))
            layer.moving_variance.assign((rng.random(c) * 0.5 + 0.5).astype("float32"))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    if family in ("encoder", "unet", "audio"):
        shape = {"encoder": (SEQ, WIDTH), "unet": (UNET_SIDE, UNET_SIDE, 3)}.get(
            family, (FRAMES, BANDS)
        )
    if route == "keras":
        spec = (tf.TensorSpec((1, *shape), tf.float32, name="input"),)
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, output_path=str(tmp))
    else:
        saved = out.with_suffix(".savedmodel")
        model.export(str(saved))
        flat = out.with_suffix(".tflite")
        flat.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert())
        tf2onnx.convert.from_tflite(str(flat), opset=opset, output_path=str(tmp))
    tmp.replace(out)


def _encoder(keras):
    """Two post-norm encoder layers as Keras writes them, mean-pooled, a 10-way Dense head."""
    inp = keras.Input((SEQ, WIDTH), batch_size=1, name="input")
    x = inp
    for _ in range(2):
        a = keras.layers.MultiHeadAttention(num_heads=4, key_dim=WIDTH // 4)(x, x)
        x = keras.layers.LayerNormalization()(x + a)
        f = keras.layers.Dense(4 * WIDTH, activation="relu")(x)
        x = keras.layers.LayerNormalization()(x + keras.layers.Dense(WIDTH)(f))
    return keras.Model(inp, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling1D()(x)))


def _unet(keras):
    """A small U-Net with the layer types Keras segmentation models use."""
    L = keras.layers
    i = keras.Input((UNET_SIDE, UNET_SIDE, 3), batch_size=1, name="input")
    x1 = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(i)))
    x2 = L.SeparableConv2D(32, 3, strides=2, padding="same", activation="relu")(x1)
    x3 = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu6")(x2)
    x4 = L.Conv2D(32, 1)(x3)
    up = L.Conv2DTranspose(16, 3, strides=2, padding="same")(x4)
    c = L.Concatenate()([up, x1, L.Conv2D(8, 1)(L.UpSampling2D()(x4))])
    return keras.Model(i, L.Conv2D(2, 3, padding="same", activation="sigmoid")(c))


def _audio(keras):
    """Conv1D front end, a GRU, a Dense head: a keyword-spotting model's shape."""
    L = keras.layers
    i = keras.Input((FRAMES, BANDS), batch_size=1, name="input")
    x = L.BatchNormalization()(L.Conv1D(32, 5, padding="same", activation="relu")(i))
    x = L.GRU(32)(L.Conv1D(32, 3, strides=2, activation="relu")(x))
    x = L.ReLU()(L.BatchNormalization()(L.Dense(16)(x)))
    return keras.Model(i, L.Dense(5, activation="softmax")(x))


if __name__ == "__main__":
    _write(sys.argv[1], Path(sys.argv[2]))
