"""The sensitivity sweep on Ray workers gives the serial sweep's table."""

import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from faaq_onnx.config import QuantConfig
from faaq_onnx.errors import FaaqError
from faaq_onnx.pipeline import Compilation

ray = pytest.importorskip("ray")

# a driver or head on this machine keeps 127.0.0.1 as it is: Ray otherwise dials a localhost
# address on the machine's own network address; these tests stay on the loopback interface.
# The test's head and driver share a token of their own (Ray's token authentication).
LOOPBACK_ENV = {
    **os.environ,
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_worker_niceness": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": secrets.token_hex(32),
}
LOOPBACK_ENV.pop("RAY_AUTH_TOKEN_PATH", None)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        ignore_reinit_error=True,
    )
    yield
    ray.shutdown()


def _ray_tasks(caplog) -> list[int]:
    return [
        int(r.getMessage().split(" in ")[1].split()[0])
        for r in caplog.records
        if r.getMessage().startswith("sensitivity sweep:")
    ]


def test_two_workers_reproduce_the_serial_table(tiny_cnn, cnn_calib, caplog):
    cands = "w4a8,w8a8"
    serial = Compilation(tiny_cnn, cnn_calib, QuantConfig(progress=False), target_opset=21)
    want = serial.sensitivity(cands, ("sqnr", "kl"), cache_dir=False).table
    par = Compilation(tiny_cnn, cnn_calib, QuantConfig(progress=False, workers=2), target_opset=21)
    with caplog.at_level(logging.INFO, logger="faaq"):
        got = par.sensitivity(cands, ("sqnr", "kl"), cache_dir=False).table
    # each task runs its own float pass, cut at its own groups: equal to float reassociation
    assert got.keys() == want.keys()
    for g, row in want.items():
        for c, m in row.items():
            assert got[g][c]["sqnr_db"] == pytest.approx(m["sqnr_db"], abs=1e-3), (g, c)
            assert got[g][c]["kl"] == pytest.approx(m["kl"], rel=1e-3), (g, c)
    assert _ray_tasks(caplog) == [2]  # the jobs really went out in two shares
    assert par._prober is None  # the coordinator built no probe session of its own


def test_with_an_address_the_sweep_takes_one_share_per_cpu_of_the_cluster():
    from faaq_onnx.runtime.workers import share_count

    assert ray.cluster_resources()["CPU"] == 2
    assert share_count(1, "127.0.0.1:6379") == 2  # --workers left at 1: the cluster's CPUs
    assert share_count(3, "127.0.0.1:6379") == 3  # --workers given: that many
    assert share_count(2, None) == 2


def test_a_worker_probes_with_as_many_ort_threads_as_cpus_it_was_given():
    from faaq_onnx.runtime.workers import worker_config

    assert worker_config(QuantConfig(), 1.0).ort_threads == 1
    assert worker_config(QuantConfig(), 3.0).ort_threads == 3
    assert (
        worker_config(QuantConfig(ort_threads=4), 1.0).ort_threads == 4
    )  # the user's choice stands


def test_faaqs_local_ray_workers_run_at_normal_priority():
    from faaq_onnx.runtime.workers import start_local_ray

    ray.shutdown()
    try:
        start_local_ray(1)
        assert ray.get(ray.remote(lambda: os.nice(0)).remote()) == os.nice(0)  # Ray's default: 15
    finally:
        ray.shutdown()
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            ignore_reinit_error=True,
        )


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _faaq(args, timeout, info_log=False):
    """The faaq CLI in a fresh process (no Ray of this test process to fall back on)."""
    setup = (
        "import logging; logging.basicConfig(level=logging.INFO, format='%(message)s'); "
        if info_log
        else ""
    )
    return subprocess.run(
        [sys.executable, "-c", setup + "from faaq_onnx.cli import main; main()", *args],
        env=LOOPBACK_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def calib_npz(tmp_path, cnn_calib):
    p = tmp_path / "calib.npz"
    np.savez(p, **cnn_calib)
    return str(p)


def test_a_dead_ray_address_fails_in_seconds_in_one_line(tiny_cnn, calib_npz, tmp_path):
    address = f"127.0.0.1:{_free_loopback_port()}"  # nobody listens there
    start = time.monotonic()
    r = _faaq(
        [
            "quantize",
            tiny_cnn,
            "-o",
            str(tmp_path / "q.onnx"),
            "--calib",
            calib_npz,
            "--budget",
            "avg-bits=5",
            "--candidates",
            "w4a8,w8a8",
            "--no-cache",
            "-q",
            "--ray-address",
            address,
        ],
        timeout=90,
    )
    elapsed = time.monotonic() - start
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "faaq: error: no Ray cluster at --ray-address " + address
    ), lines
    assert "Traceback" not in r.stderr and not (tmp_path / "q.onnx").exists()
    assert elapsed < 30, elapsed  # Ray's own retries: minutes


def test_a_port_where_no_ray_head_answers_fails_within_the_timeout():
    """Something listens but says nothing (a wrong port): ray.init would wait minutes."""
    from faaq_onnx.runtime.workers import check_ray_address

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held = []
    threading.Thread(target=lambda: held.append(srv.accept()), daemon=True).start()
    try:
        start = time.monotonic()
        # ray:// (a Ray Client address) is dialed as written: 127.0.0.1, whatever this machine's address
        with pytest.raises(
            FaaqError, match=r"no Ray cluster at --ray-address ray://127\.0\.0\.1:\d+: no answer"
        ):
            check_ray_address(f"ray://127.0.0.1:{srv.getsockname()[1]}", timeout=1.0)
        assert time.monotonic() - start < 10
    finally:
        srv.close()
        for conn, _ in held:
            conn.close()


HEAD = """
import sys, ray
ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False,
         log_to_driver=False, object_store_memory=200 * 2**20, _system_config={"worker_niceness": 0})
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.readline()
ray.shutdown()
"""


@pytest.fixture
def ray_head():
    """A Ray head on 127.0.0.1 with 2 CPUs, in a process of its own; gone afterwards."""
    head = subprocess.Popen(
        [sys.executable, "-c", HEAD],
        env=LOOPBACK_ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    stuck = threading.Timer(
        120, head.kill
    )  # a head that never comes up fails the test, not hangs it
    stuck.start()
    try:
        address = head.stdout.readline().strip()
        stuck.cancel()
        assert address.startswith("127.0.0.1:"), f"the head did not start ({address!r})"
        yield address
    finally:
        try:
            head.stdin.close()  # ray.shutdown() stops the GCS, raylet and workers it started
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()


def test_the_sweep_runs_on_the_cluster_at_ray_address(tiny_cnn, calib_npz, tmp_path, ray_head):
    """--ray-address alone: the jobs go out in one share per CPU of the cluster (2 here), and the
    table is the serial sweep's."""
    from click.testing import CliRunner

    from faaq_onnx.cli import main

    common = [
        tiny_cnn,
        "--calib",
        calib_npz,
        "--budget",
        "avg-bits=5",
        "--candidates",
        "w4a8,w8a8",
        "-q",
    ]
    serial_dir, ray_dir = tmp_path / "serial", tmp_path / "ray"
    r = CliRunner().invoke(
        main, ["quantize", "-o", str(tmp_path / "s.onnx"), "--cache-dir", str(serial_dir), *common]
    )
    assert r.exit_code == 0, r.output
    r = _faaq(
        [
            "quantize",
            "-o",
            str(tmp_path / "r.onnx"),
            "--cache-dir",
            str(ray_dir),
            *common,
            "--ray-address",
            ray_head,
        ],
        timeout=180,
        info_log=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (
        f"in 2 Ray tasks on {ray_head}" in r.stderr
    )  # --workers left at 1: one share per cluster CPU

    def table(d):
        (path,) = d.glob("sensitivity-*.json")
        return json.loads(path.read_text())["table"]

    assert table(ray_dir) == table(serial_dir)
