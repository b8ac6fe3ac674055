"""The sensitivity sweep on Ray: one ONNX Runtime probe session per worker.

Ray is an optional extra (`pip install 'faaq-onnx[ray]'`). Each worker receives what a
probe needs (the float model, the quantizer graph, calibration statistics, settings and
the probe inputs), builds its own session once, and measures a share of the
group x candidate jobs. ONNX Runtime's CPU kernels give the same numbers for the same
inputs, so the table is identical to a serial sweep's. Without Ray, or with one worker,
everything runs in this process.

Local: `--workers 4`. A cluster: `ray start --head` on one machine, `ray start
--address HEAD:6379` on the others, then `--ray-address HEAD:6379` (see the README): the
jobs go out in one share per CPU of the cluster, or in --workers shares when that is given.
An address where nothing answers fails in seconds, in one line, before Ray's own connection
retries (minutes) begin.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket

import numpy as np

from faaq_onnx.errors import FaaqError

log = logging.getLogger("faaq")

CONNECT_TIMEOUT_S = 5.0


def _ray():
    try:
        import ray
    except ImportError:
        raise FaaqError("--workers/--ray-address need Ray: pip install 'faaq-onnx[ray]'") from None
    return ray


def worker_config(config, cpus: float):
    """The config a worker probes with: as many ORT threads as CPUs the task was given.

    ORT's default is one thread per core in every session; N workers on one machine would
    then run N x cores spinning threads and slow each other down many times over."""
    if config.ort_threads is not None:
        return config
    return dataclasses.replace(config, ort_threads=max(1, int(cpus)))


def _task_cpus() -> float:
    import ray

    return ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)


def _measure_share(
    payload: dict, jobs: list[tuple[str, str]]
) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """Worker side: rebuild the probe from plain data and measure the given jobs (per-sample
    SQNR ratios and KL, which the driver merges over chunks of samples)."""
    import onnx
    import onnx_ir as ir

    from faaq_onnx.analysis.sensitivity import Prober
    from faaq_onnx.analysis.suffix_sweep import SuffixSweep
    from faaq_onnx.config import Candidate
    from faaq_onnx.weight_cache import WeightCache

    proto = onnx.load_from_string(payload["proto"])
    config = worker_config(payload["config"], _task_cpus())
    cache = WeightCache(ir.from_proto(proto), payload["qgraph"], config)
    for (name, bits), qw in payload["learned"].items():
        cache.put(name, bits, qw)
    qgraph = payload["qgraph"]
    prober = Prober(proto, qgraph, payload["calibration"], cache, config, payload["inputs"])
    sweep = SuffixSweep(prober, proto)
    sweep.measure([(qgraph.groups[g], Candidate.parse(c)) for g, c in jobs])
    return [(g, c, *sweep.per_sample[(g, c)]) for g, c in jobs]


def start_local_ray(workers: int) -> None:
    """A local Ray instance whose workers run at normal priority.

    Ray starts worker processes at niceness 15 by default: on a machine with any other work
    they then get a fraction of the CPU the serial sweep would (measured: 5x slower on 2 busy
    cores). On a cluster of your own, start it with RAY_worker_niceness=0 for the same."""
    ray = _ray()
    # address="local": a new instance even where `ray start` left a cluster to discover (ray.init
    # would join that one, and refuses num_cpus when it does)
    ray.init(
        address="local",
        num_cpus=workers,
        ignore_reinit_error=True,
        log_to_driver=False,
        include_dashboard=False,
        _system_config={"worker_niceness": 0},
    )


def _gcs_endpoint(address: str) -> tuple[str, int]:
    """The host and port Ray will dial for ADDRESS (HOST:PORT or ray://HOST:PORT)."""
    scheme, _, rest = address.rpartition("://")
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit():
        raise FaaqError(
            f"--ray-address {address!r}: expected HOST:PORT, the head's GCS port (6379 unless "
            "ray start --head --port said otherwise)"
        )
    if not scheme:  # Ray dials a localhost bootstrap address on the node's own IP, as ray.init does
        try:
            from ray._private.services import resolve_ip_for_localhost

            host = resolve_ip_for_localhost(host)
        except Exception:  # private API: keep the address as written
            pass
    return host, int(port)


# an HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, the Ray
# Client server) answers with a SETTINGS frame of its own
_H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _answers_grpc(sock: socket.socket) -> bool:
    sock.sendall(_H2_HELLO)
    head = b""
    while len(head) < 9:  # the first frame's header: length (3), type (1), flags, stream id
        chunk = sock.recv(9 - len(head))
        if not chunk:
            return False
        head += chunk
    return head[3] == 4


def check_ray_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """One line within about 2 x `timeout` seconds when no Ray head answers at ADDRESS.

    ray.init itself retries a dead address, or a port where something else listens, for
    minutes. A TCP connect to the head's GCS port answers at once (refused) or within the
    timeout (unreachable host), and a gRPC server answers the HTTP/2 greeting at once."""
    if address in ("auto", "local"):  # Ray's own discovery of a cluster on this machine
        return
    host, port = _gcs_endpoint(address)
    dialed = "" if address.endswith(f"{host}:{port}") else f" (dialed {host}:{port})"
    where = f"--ray-address {address}{dialed}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            tls = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")
            if not tls and not _answers_grpc(sock):
                raise FaaqError(
                    f"{where} is not a Ray head: what listens there does not speak gRPC "
                    "(give the GCS port, 6379 unless ray start --head --port said otherwise)"
                )
    except OSError as exc:
        why = (
            f"no answer within {timeout:g}s"
            if isinstance(exc, TimeoutError)
            else (exc.strerror or str(exc))
        )
        raise FaaqError(
            f"no Ray cluster at {where}: {why}; start one with ray start --head, "
            "or check the address and port"
        ) from None


def connect(address: str) -> None:
    """Join the Ray cluster at ADDRESS, or fail in one line naming it."""
    ray = _ray()
    check_ray_address(address)
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise FaaqError(
            f"could not join the Ray cluster at --ray-address {address}: {first}"
        ) from None


def share_count(workers: int, address: str | None) -> int:
    """How many tasks the sweep is split into: --workers, or with --ray-address and no
    --workers above 1, one per CPU of the cluster (so the sweep is spread over all of it)."""
    if address and workers <= 1:
        return max(1, int(_ray().cluster_resources().get("CPU", 1)))
    return workers


def distributed_measure(
    comp, jobs, workers: int, address: str | None = None, inputs: dict | None = None
) -> dict:
    """{(group, str(candidate)): (per-sample SQNR ratios, per-sample KL)} measured on `inputs`
    (default: the sweep's samples) by share_count(workers, address) Ray tasks."""
    from faaq_onnx.analysis.sensitivity import sweep_inputs

    if inputs is None:
        inputs = sweep_inputs(comp.inputs, comp.config)
    ray = _ray()
    if not ray.is_initialized():
        if address:
            connect(address)
        else:
            start_local_ray(workers)
    n = share_count(workers, address)
    payload = {
        "proto": comp.float_proto.SerializeToString(),
        "qgraph": comp.qgraph,
        "calibration": comp.calibration,
        "config": comp.config,
        "inputs": {k: np.asarray(v) for k, v in inputs.items()},
        "learned": {k: v for k, v in comp.weights._cache.items() if v.method != "nearest"},
    }
    ref = ray.put(payload)
    task = ray.remote(num_cpus=1)(_measure_share)
    names = [(g.name, str(c)) for g, c in jobs]
    groups = sorted({g for g, _ in names})
    # a group's candidates go to one task: they share its cut of the float pass (SuffixSweep)
    shares = [[j for j in names if j[0] in groups[i::n]] for i in range(n)]
    futures = [task.remote(ref, share) for share in shares if share]
    log.info(
        "sensitivity sweep: %d jobs in %d Ray tasks%s",
        len(names),
        len(futures),
        f" on {address}" if address else "",
    )
    out = {}
    for result in ray.get(futures):
        for g, c, ratios, kls in result:
            out[(g, c)] = (ratios, kls)
    return out
