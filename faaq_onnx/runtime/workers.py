"""The sensitivity sweep on Ray: one ONNX Runtime probe session per worker.

Ray is an optional extra (`pip install 'faaq-onnx[ray]'`). Each worker receives what a
probe needs (the float model, the quantizer graph, calibration statistics, settings and
the probe inputs), builds its own session once, and measures a share of the
group x candidate jobs. ONNX Runtime's CPU kernels give the same numbers for the same
inputs, so the table is identical to a serial sweep's. Without Ray, or with one worker,
everything runs in this process.

Local: `--workers 4`. A cluster: `ray start --head` on one machine, `ray start
--address HEAD:6379` on the others, then `--ray-address HEAD:6379` (see the README).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from faaq_onnx.errors import FaaqError


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


def _measure_share(payload: dict, jobs: list[tuple[str, str]]) -> list[tuple[str, str, dict]]:
    """Worker side: rebuild the probe from plain data and measure the given jobs."""
    import onnx
    import onnx_ir as ir

    from faaq_onnx.analysis.sensitivity import Prober
    from faaq_onnx.config import Candidate
    from faaq_onnx.optimize.weights import WeightCache

    proto = onnx.load_from_string(payload["proto"])
    config = worker_config(payload["config"], _task_cpus())
    cache = WeightCache(ir.from_proto(proto), payload["qgraph"], config)
    for (name, bits), qw in payload["learned"].items():
        cache.put(name, bits, qw)
    prober = Prober(proto, payload["qgraph"], payload["calibration"], cache, config, payload["inputs"])
    return [(g, c, prober.measure({g: Candidate.parse(c)})) for g, c in jobs]


def start_local_ray(workers: int) -> None:
    """A local Ray instance whose workers run at normal priority.

    Ray starts worker processes at niceness 15 by default: on a machine with any other work
    they then get a fraction of the CPU the serial sweep would (measured: 5x slower on 2 busy
    cores). On a cluster of your own, start it with RAY_worker_niceness=0 for the same."""
    ray = _ray()
    ray.init(num_cpus=workers, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False,
             _system_config={"worker_niceness": 0})


def distributed_measure(comp, jobs, workers: int, address: str | None = None, progress: bool = False) -> dict:
    """{(group, str(candidate)): metrics} measured by `workers` Ray tasks."""
    from faaq_onnx.analysis.sensitivity import sweep_inputs

    ray = _ray()
    if not ray.is_initialized():
        if address:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        else:
            start_local_ray(workers)
    payload = {
        "proto": comp.float_proto.SerializeToString(),
        "qgraph": comp.qgraph,
        "calibration": comp.calibration,
        "config": comp.config,
        "inputs": {k: np.asarray(v) for k, v in sweep_inputs(comp.inputs, comp.config).items()},
        "learned": {k: v for k, v in comp.weights._cache.items() if v.method != "nearest"},
    }
    ref = ray.put(payload)
    task = ray.remote(num_cpus=1)(_measure_share)
    names = [(g.name, str(c)) for g, c in jobs]
    shares = [names[i::workers] for i in range(workers)]
    futures = [task.remote(ref, share) for share in shares if share]
    out = {}
    for result in ray.get(futures):
        for g, c, m in result:
            out[(g, c)] = m
    return out
