"""Turn the user's calibration / evaluation data into arrays a model can take.

Everything a user can get wrong here (a missing file, a wrong input name, a shape that
does not fit, NaN in the data, an empty folder) becomes a one-line ``FaaqError`` that
names the problem, so a bad calibration set fails before any quantization work starts.

Sources ``load_inputs`` understands:

(a) ``.npz`` with one array per model input name (batch on axis 0). An input with no sample
    axis in front (a recurrent state laid out [layers, batch, hidden], a scalar) takes one
    whole feed per sample instead: an array of rank one more than the input's, stacked on a
    new axis 0 (``state`` of shape [2, 1, 128]: an array [N, 2, 1, 128]; a scalar ``sr``: [N]);
    such a model is then fed one sample per run;
(b) ``.npz`` with ``x`` (and optionally ``y``, ignored here) for a one-input model;
    a single-array ``.npz`` or a ``.npy`` file also works for one input;
(c) a folder of ``.npy`` files: for a one-input model the ``*.npy`` files in the folder;
    for any model, one subfolder per input name holding ``*.npy`` files, paired across
    inputs by sorted file name. A file whose rank equals the model input's rank is a
    batch; one rank lower is a single sample. Without known shapes every file is a batch;
(d) a folder of images (``.jpg .jpeg .png``, any case) for a one-input model, decoded
    and preprocessed by a preset.

Raw uint8 images (``N x H x W x C`` with C = 1 or 3) get a preprocessing preset
(explicit, or guessed: 8x8x1 digits, 32x32x3 cifar10, other RGB imagenet) unless they
already have the model's input shape. Other floating arrays are passed as float32 and
integer arrays keep their dtype (token ids must stay int64). Models whose
preprocessing differs from the guess (``imagenet-inception`` for EfficientNet-Lite)
need the preset named explicitly.

Relative paths are looked up in ``$FAAQ_DATA_DIR`` when they do not exist as given.

The package is split by concern: ``presets`` (image preprocessing), ``readers``
(paths and files), ``inputs`` (model inputs for calibration) and ``labeled``
(``x``/``y`` for accuracy); everything public is re-exported here.
"""

from __future__ import annotations

from faaq_onnx.data.inputs import iter_batches, load_inputs, stacked_inputs, validate_inputs
from faaq_onnx.data.labeled import load_labeled, read_labels_file
from faaq_onnx.data.presets import (
    PRESET_METADATA_KEY,
    PRESETS,
    Preset,
    apply_preset,
    guess_preset,
    load_image,
    model_preset,
)
from faaq_onnx.data.readers import DATA_DIR_ENV, IMAGE_SUFFIXES, resolve_data_path

__all__ = [
    "DATA_DIR_ENV",
    "IMAGE_SUFFIXES",
    "PRESETS",
    "PRESET_METADATA_KEY",
    "Preset",
    "apply_preset",
    "guess_preset",
    "iter_batches",
    "load_image",
    "load_inputs",
    "load_labeled",
    "model_preset",
    "read_labels_file",
    "resolve_data_path",
    "stacked_inputs",
    "validate_inputs",
]
