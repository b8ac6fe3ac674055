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


def test_a_worker_probes_with_as_many_ort_threads_as_cpus_it_was_given():
    from faaq_onnx.runtime.workers import worker_config

    assert worker_config(QuantConfig(), 1.0).ort_threads == 1
    assert worker_config(QuantConfig(), 3.0).ort_threads == 3
    assert worker_config(QuantConfig(ort_threads=4), 1.0).ort_threads == 4  # the user's choice stands


def test_faaqs_local_ray_workers_run_at_normal_priority():
    import os

    from faaq_onnx.runtime.workers import start_local_ray

    ray.shutdown()
    try:
        start_local_ray(1)
        assert ray.get(ray.remote(lambda: os.nice(0)).remote()) == os.nice(0)  # Ray's default: 15
    finally:
        ray.shutdown()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
