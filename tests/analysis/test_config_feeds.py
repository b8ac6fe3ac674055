"""ConfigFeeds keeps each weight's dequantized values while its QuantizedWeight stays the same."""

import numpy as np
import pytest

import faaq_onnx.analysis.config_feeds as config_feeds
from faaq_onnx.analysis.config_feeds import ConfigFeeds
from faaq_onnx.config import QuantConfig
from faaq_onnx.pipeline import Compilation


@pytest.fixture
def comp(tiny_cnn, cnn_calib):
    return Compilation(tiny_cnn, cnn_calib, QuantConfig(progress=False), target_opset=21)


def _feeds(comp):
    return ConfigFeeds(comp.qgraph, comp.calibration, comp.weights, comp.config)


def test_the_same_weight_feeds_the_same_read_only_values_until_it_is_rounded_again(comp):
    feeds = _feeds(comp)
    plan = comp.uniform("w4a8").choices
    first, _ = feeds.feeds(plan)
    again, _ = feeds.feeds(plan)
    name = next(iter(first))
    assert all(again[w] is first[w] for w in first)  # not dequantized a second time
    assert not first[name].flags.writeable  # a caller cannot change what the next one reads
    np.testing.assert_array_equal(first[name], comp.weights.get(name, 4).dequantized())
    # a weight rounded again (GPTQ, AdaRound put a new QuantizedWeight) feeds its new values
    qw = comp.weights.get(name, 4)
    codes = np.clip(qw.q.astype(np.int64) + 1, qw.fmt.qmin, qw.fmt.qmax)
    comp.weights.put(name, 4, qw.with_codes(codes, "gptq"))
    after, _ = feeds.feeds(plan)
    assert after[name] is not first[name]
    np.testing.assert_array_equal(after[name], comp.weights.get(name, 4).dequantized())
    assert all(after[w] is first[w] for w in first if w != name)


def test_values_past_the_byte_cap_are_dequantized_per_call(comp, monkeypatch):
    plan = comp.uniform("w4a8").choices
    sizes = {w: v.nbytes for w, v in _feeds(comp).feeds(plan)[0].items()}
    cap = min(sizes.values())
    monkeypatch.setattr(config_feeds, "FEED_CACHE_BYTES", cap)
    feeds = _feeds(comp)
    first, _ = feeds.feeds(plan)
    again, _ = feeds.feeds(plan)
    kept = [w for w in first if again[w] is first[w]]
    assert 1 <= len(kept) < len(first)
    assert sum(sizes[w] for w in kept) <= cap
    for w in first:
        np.testing.assert_array_equal(again[w], first[w])
