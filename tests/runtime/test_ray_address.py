"""runtime/workers.py without Ray running: reading --ray-address, and telling a Ray head (a gRPC
server) from a closed port or another server, on local sockets."""

from __future__ import annotations

import socket
import threading
from types import SimpleNamespace

import pytest

from faaq_onnx.errors import FaaqError
from faaq_onnx.runtime import workers


@pytest.mark.parametrize(
    "address,want",
    [
        ("ray://10.1.2.3:10001", ("10.1.2.3", 10001)),
        ("ray://[::1]:6379", ("::1", 6379)),
        ("grpc://head.example:6380", ("head.example", 6380)),
    ],
)
def test_gcs_endpoint(address, want):
    assert workers._gcs_endpoint(address) == want


@pytest.mark.parametrize("address", ["head", "head:", ":6379", "head:port", "ray://head"])
def test_an_address_without_host_and_port_is_refused(address):
    with pytest.raises(FaaqError) as e:
        workers._gcs_endpoint(address)
    assert str(e.value) == (
        f"--ray-address {address!r}: expected HOST:PORT, the head's GCS port (6379 unless "
        "ray start --head --port said otherwise)"
    )


def test_ray_discovers_auto_and_local_itself():
    workers.check_ray_address("auto")
    workers.check_ray_address("local")


class Server:
    """A local TCP server that answers every connection with `reply` (after reading a little)."""

    def __init__(self, reply: bytes):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(64)
                if self.reply:
                    conn.sendall(self.reply)

    def close(self):
        self.sock.close()


def test_a_grpc_server_passes():
    settings = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # an empty HTTP/2 SETTINGS frame
    s = Server(settings)
    try:
        workers.check_ray_address(f"ray://127.0.0.1:{s.port}", timeout=2)
    finally:
        s.close()


def test_another_server_is_not_a_ray_head():
    s = Server(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    try:
        with pytest.raises(FaaqError) as e:
            workers.check_ray_address(f"ray://127.0.0.1:{s.port}", timeout=2)
    finally:
        s.close()
    assert str(e.value) == (
        f"--ray-address ray://127.0.0.1:{s.port} is not a Ray head: what listens there does not "
        "speak gRPC (give the GCS port, 6379 unless ray start --head --port said otherwise)"
    )


def test_a_server_that_hangs_up_is_not_a_ray_head():
    s = Server(b"")
    try:
        with pytest.raises(FaaqError, match="is not a Ray head"):
            workers.check_ray_address(f"ray://127.0.0.1:{s.port}", timeout=2)
    finally:
        s.close()


def test_tls_heads_are_not_greeted(monkeypatch):
    s = Server(b"garbage!!")
    monkeypatch.setenv("RAY_USE_TLS", "1")
    try:
        workers.check_ray_address(f"ray://127.0.0.1:{s.port}", timeout=2)
    finally:
        s.close()


def test_a_closed_port_fails_in_one_line():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(FaaqError) as e:
        workers.check_ray_address(f"ray://127.0.0.1:{port}", timeout=2)
    text = str(e.value)
    assert text.startswith(f"no Ray cluster at --ray-address ray://127.0.0.1:{port}: ")
    assert text.endswith("; start one with ray start --head, or check the address and port")
    assert "refused" in text.lower()


def test_worker_config_gives_ort_one_thread_per_cpu():
    import dataclasses

    @dataclasses.dataclass
    class Cfg:
        ort_threads: int | None = None

    assert workers.worker_config(Cfg(), 3.0).ort_threads == 3
    assert workers.worker_config(Cfg(), 0.5).ort_threads == 1
    given = Cfg(ort_threads=7)
    assert workers.worker_config(given, 3.0) is given


def test_share_count(monkeypatch):
    monkeypatch.setattr(
        workers, "_ray", lambda: SimpleNamespace(cluster_resources=lambda: {"CPU": 6.0})
    )
    assert workers.share_count(3, None) == 3
    assert workers.share_count(1, "ray://h:1") == 6
    assert workers.share_count(0, "ray://h:1") == 6
    assert workers.share_count(2, "ray://h:1") == 2
    monkeypatch.setattr(workers, "_ray", lambda: SimpleNamespace(cluster_resources=lambda: {}))
    assert workers.share_count(1, "ray://h:1") == 1
