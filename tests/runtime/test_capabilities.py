"""runtime/capabilities.py: the probe models it builds, and how it reads ORT's answers."""

import numpy as np
import onnxruntime
import pytest
from onnx import numpy_helper

from faaq_onnx.runtime import capabilities, session


class FakeSession:
    def __init__(self, out=None, exc=None):
        self.out, self.exc, self.feeds = out, exc, None

    def run(self, names, feeds):
        self.feeds = feeds
        if self.exc is not None:
            raise self.exc
        return [self.out]


@pytest.fixture
def fake(monkeypatch):
    """make_session replaced by one returning the given FakeSession; the models it got."""
    models = []
    box = {}

    def make(model, *a, **k):
        models.append(model)
        return box["session"]

    monkeypatch.setattr(session, "make_session", make)
    capabilities.int2_unsupported_reason.cache_clear()
    capabilities.int8_products_saturate.cache_clear()
    yield box, models
    capabilities.int2_unsupported_reason.cache_clear()
    capabilities.int8_products_saturate.cache_clear()


def test_int2_probe_model(fake):
    box, models = fake
    box["session"] = s = FakeSession(np.array([-2.0, -1.0, 0.0, 1.0], np.float32))
    assert capabilities.int2_unsupported_reason() is None
    (m,) = models
    assert [(o.domain, o.version) for o in m.opset_import] == [("", 25)] and m.ir_version == 11
    np.testing.assert_array_equal(
        numpy_helper.to_array(m.graph.initializer[0]).astype(np.int8), [-2, -1, 0, 1]
    )
    assert [n.op_type for n in m.graph.node] == ["Cast", "Cast", "Add"]
    np.testing.assert_array_equal(s.feeds["x"], np.zeros(4, np.float32))


def test_int2_decoded_wrong_is_named(fake):
    box, _ = fake
    box["session"] = FakeSession(np.array([2.0, -1.0, 0.0, 1.0], np.float32))
    assert capabilities.int2_unsupported_reason() == (
        f"onnxruntime {onnxruntime.__version__} decodes int2 incorrectly"
    )


def test_int2_failure_keeps_the_first_line_cut_at_120_characters(fake):
    box, _ = fake
    first = "x" * 130
    box["session"] = FakeSession(exc=RuntimeError(first + "\nsecond line"))
    assert capabilities.int2_unsupported_reason() == (
        f"onnxruntime {onnxruntime.__version__} cannot run int2 at opset 25 ({'x' * 120})"
    )


def test_int2_answer_is_asked_once(fake):
    box, models = fake
    box["session"] = FakeSession(np.array([-2.0, -1.0, 0.0, 1.0], np.float32))
    capabilities.int2_unsupported_reason()
    capabilities.int2_unsupported_reason()
    assert len(models) == 1


@pytest.mark.parametrize("clip,saturates", [(False, False), (True, True)])
def test_u8s8_probe_reads_saturation(fake, clip, saturates):
    box, models = fake
    exact = 255.0 * 127.0 * 64
    box["session"] = s = FakeSession(np.full((4, 8), 32767.0 * 32 if clip else exact, np.float32))
    assert capabilities.int8_products_saturate() is saturates
    (m,) = models
    assert [(o.domain, o.version) for o in m.opset_import] == [("", 13)] and m.ir_version == 8
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    assert inits["w"].shape == (64, 8) and (inits["w"] == 127).all() and inits["w"].dtype == np.int8
    assert inits["s"] == 1.0 and inits["za"].dtype == np.uint8 and inits["za"] == 0
    assert inits["zw"].dtype == np.int8 and inits["zw"] == 0
    np.testing.assert_array_equal(s.feeds["x"], np.full((4, 64), 255.0, np.float32))


def test_the_real_probes_agree_with_this_build():
    capabilities.int8_products_saturate.cache_clear()
    capabilities.int2_unsupported_reason.cache_clear()
    assert capabilities.int8_products_saturate() in (True, False)
    reason = capabilities.int2_unsupported_reason()
    assert reason is None or reason.startswith(f"onnxruntime {onnxruntime.__version__} ")
