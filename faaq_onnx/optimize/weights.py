"""Moved to faaq_onnx.weight_cache (analysis/ reads the cache and must not import optimize/).

Re-exported here for callers that still import it from its old place (benchmarks).
"""

from faaq_onnx.weight_cache import WeightCache, quantize_weights

__all__ = ["WeightCache", "quantize_weights"]
