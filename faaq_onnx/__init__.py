"""faaq-onnx: an ONNX graph-level mixed-precision post-training quantization compiler."""

__version__ = "0.1.0"

from faaq_onnx.errors import FaaqError

__all__ = ["FaaqError", "__version__", "quantize"]


def quantize(*args, **kwargs):
    """See :func:`faaq_onnx.pipeline.quantize`."""
    from faaq_onnx.pipeline import quantize as _quantize

    return _quantize(*args, **kwargs)
