"""The sensitivity sweep on Ray workers gives the serial sweep's table."""

import pytest

from faaq_onnx.config import QuantConfig
from faaq_onnx.pipeline import Compilation

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def test_two_workers_reproduce_the_serial_table(tiny_cnn, cnn_calib):
    cands = "w4a8,w8a8"
    serial = Compilation(tiny_cnn, cnn_calib, QuantConfig(progress=False), target_opset=21)
    want = serial.sensitivity(cands, ("sqnr", "kl"), cache_dir=False).table
    par = Compilation(tiny_cnn, cnn_calib, QuantConfig(progress=False, workers=2), target_opset=21)
    got = par.sensitivity(cands, ("sqnr", "kl"), cache_dir=False).table
    assert got == want
    assert par._prober is None  # the coordinator built no probe session of its own
