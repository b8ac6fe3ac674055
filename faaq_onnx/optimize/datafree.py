"""Data-free calibration: inputs distilled from the model's own BatchNorm statistics.

ZeroQ (Cai et al. 2020): start from Gaussian noise and optimize the inputs until the
batch mean and standard deviation each BatchNormalization sees match its running
statistics. Every later stage (ranges, sensitivity, bias correction, rounding) then
runs on these inputs as it would on real ones, and the report says the calibration was
data-free. Needs the model before BatchNorm folding, run in the torch interpreter.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from tqdm.auto import tqdm

from faaq_onnx.errors import FaaqError

DISTILL_ITERS = 300
DISTILL_LR = 0.2


_distilled: dict[tuple, dict[str, np.ndarray]] = {}


def distill_inputs(
    proto: onnx.ModelProto,
    n: int,
    seed: int = 0,
    iters: int = DISTILL_ITERS,
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """n inputs whose BatchNorm batch statistics match the running ones (cached per process)."""
    import hashlib

    key = (
        hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest(),
        n,
        seed,
        iters,
        batch_size,
    )
    if key not in _distilled:
        _distilled[key] = _distill(proto, n, seed, iters, batch_size, progress)
    return {k: v.copy() for k, v in _distilled[key].items()}


def _distill(
    proto: onnx.ModelProto, n: int, seed: int, iters: int, batch_size: int, progress: bool
) -> dict[str, np.ndarray]:
    import torch

    from faaq_onnx.graph import model_input_dtypes, model_input_shapes
    from faaq_onnx.interpreter import TorchGraph, UnsupportedOp

    bns = [node for node in proto.graph.node if node.op_type == "BatchNormalization"]
    if not bns:
        raise FaaqError(
            "data-free calibration distills inputs from BatchNorm statistics, and this model has no "
            "BatchNormalization (folded at export?); give --calib with real data, or export the model "
            "with its BatchNorm nodes (faaq export --keep-batchnorm)"
        )
    shapes = model_input_shapes(proto)
    floats = [k for k, dt in model_input_dtypes(proto).items() if np.issubdtype(dt, np.floating)]
    if len(shapes) != 1 or len(floats) != 1:
        raise FaaqError("data-free calibration needs a model with a single float input")
    name = floats[0]
    dims = shapes[name]
    if any(not isinstance(d, int) or d <= 0 for d in dims[1:]):
        raise FaaqError(
            f"data-free calibration needs the input's non-batch dimensions fixed; {name!r} is {dims}"
        )
    try:
        graph = TorchGraph(proto)
    except UnsupportedOp as exc:
        raise FaaqError(
            f"data-free calibration runs the model in torch, which cannot run it: {exc}"
        ) from None
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    stats = []
    for bn in bns:
        mean, var = inits.get(bn.input[3]), inits.get(bn.input[4])
        if mean is None or var is None:
            raise FaaqError(f"BatchNormalization {bn.name!r} has no constant running statistics")
        stats.append(
            (
                bn.input[0],
                torch.from_numpy(mean.astype(np.float32)),
                torch.from_numpy(np.sqrt(var.astype(np.float32) + 1e-5)),
            )
        )
    taps = {s[0] for s in stats}
    gen = torch.Generator().manual_seed(seed)
    batches = []
    prev = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # small batches: one thread avoids oversubscription (see optimize.reconstruct)
    bar = tqdm(
        total=-(-n // batch_size) * iters,
        desc="distilling inputs (bn-stats)",
        disable=not progress,
        leave=False,
    )
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x = torch.randn((b, *dims[1:]), generator=gen).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=DISTILL_LR)
        for _ in range(iters):
            try:
                _, tapped = graph.run({name: x}, taps=taps)
            except UnsupportedOp as exc:
                raise FaaqError(
                    f"data-free calibration runs the model in torch, which cannot run it: {exc}"
                ) from None
            loss = _mismatch(tapped, stats)
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.update()
        batches.append(x.detach().numpy().astype(np.float32))
    bar.close()
    torch.set_num_threads(prev)
    return {name: np.concatenate(batches)[:n]}


def _mismatch(tapped, stats):
    """Σ over BatchNorms of the squared gaps between batch and running mean / std, per channel."""
    loss = 0.0
    for t, mu, sd in stats:
        v = tapped[t]
        dims_c = [d for d in range(v.dim()) if d != 1]
        loss = loss + ((v.mean(dims_c) - mu) ** 2).mean() + ((v.std(dims_c) - sd) ** 2).mean()
    return loss


def bn_mismatch(proto: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> float:
    """The distillation objective for given inputs (lower: closer to the BatchNorm statistics)."""
    import torch

    from faaq_onnx.interpreter import TorchGraph

    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    stats = [
        (
            bn.input[0],
            torch.from_numpy(inits[bn.input[3]].astype(np.float32)),
            torch.from_numpy(np.sqrt(inits[bn.input[4]].astype(np.float32) + 1e-5)),
        )
        for bn in proto.graph.node
        if bn.op_type == "BatchNormalization"
    ]
    feeds = {k: torch.from_numpy(v).requires_grad_(True) for k, v in inputs.items()}
    _, tapped = TorchGraph(proto).run(feeds, taps={s[0] for s in stats})
    return float(_mismatch(tapped, stats).detach())
