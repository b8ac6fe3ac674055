"""Models whose network sits inside If branches, quantized branch by branch.

Streaming exporters put the whole network inside an If (silero-vad: one copy of it per sample
rate, chosen by an `sr` input). ONNX Runtime cannot report a subgraph's tensors, so faaq's
calibration cannot see into a branch from outside. Instead each branch that calibration
samples take is quantized as a model of its own: its inputs are the values it reads from the
main graph, its calibration set the values those take on the samples whose condition selects
it. The quantized branch goes back into the If; a branch no calibration sample takes stays
float, and the report says so. The whole model is then verified as it will be written.
"""

from __future__ import annotations

import copy
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from faaq_onnx.analysis.discover import WEIGHT_OPS
from faaq_onnx.errors import FaaqError
from faaq_onnx.graph import (
    all_nodes,
    check_model,
    constant_tensors,
    model_input_shapes,
    subgraphs,
    to_proto,
)
from faaq_onnx.results import QuantizeResult
from faaq_onnx.runtime.kernels import record_left_float

BRANCHES = ("then_branch", "else_branch")


def weighted_ops_in(graph: onnx.GraphProto) -> Counter:
    """Weighted ops (Conv, Gemm, MatMul, ConvTranspose) of a graph, its subgraphs' included."""
    return Counter(n.op_type for n in all_nodes(graph) if n.op_type in WEIGHT_OPS)


def weighted_ops_inside(node: onnx.NodeProto) -> Counter:
    """Weighted ops in a node's subgraphs, nested ones too."""
    return sum((weighted_ops_in(g) for g in subgraphs(node)), Counter())


def branch_sites(proto: onnx.ModelProto) -> list[int]:
    """Positions of the main graph's If nodes to quantize inside: those whose branches hold
    weighted ops, when the main graph itself holds none (otherwise the main graph is what
    faaq quantizes, and branches stay float)."""
    if any(n.op_type in WEIGHT_OPS for n in proto.graph.node):
        return []
    return [
        i for i, n in enumerate(proto.graph.node) if n.op_type == "If" and weighted_ops_inside(n)
    ]


def outer_reads(graph: onnx.GraphProto) -> list[str]:
    """Names a subgraph reads from the scopes around it, in order of first use."""
    defined: set[str] = set()
    reads: list[str] = []

    def walk(g: onnx.GraphProto) -> None:
        defined.update(i.name for i in g.input)
        defined.update(t.name for t in g.initializer)
        for n in g.node:
            for name in n.input:
                if name and name not in defined and name not in reads:
                    reads.append(name)
            for sub in subgraphs(n):
                walk(sub)
            defined.update(n.output)
        for o in g.output:
            if o.name not in defined and o.name not in reads:
                reads.append(o.name)

    walk(graph)
    return reads


def rename_scope(graph: onnx.GraphProto, prefix: str, keep: set[str]) -> None:
    """Prefix every value and node name the graph defines (nested subgraphs too), in place,
    except `keep` (what it reads from outside): the two branches of an If, each quantized as
    its own model, would otherwise define the same names."""
    mapping: dict[str, str] = {}

    def collect(g: onnx.GraphProto) -> None:
        names = [i.name for i in g.input] + [t.name for t in g.initializer]
        names += [o for n in g.node for o in n.output if o]
        for name in names:
            if name not in keep:
                mapping[name] = prefix + name
        for n in g.node:
            for sub in subgraphs(n):
                collect(sub)

    def apply(g: onnx.GraphProto) -> None:
        for vi in [*g.input, *g.output, *g.value_info]:
            vi.name = mapping.get(vi.name, vi.name)
        for t in g.initializer:
            t.name = mapping.get(t.name, t.name)
        for n in g.node:
            n.name = prefix + (n.name or n.op_type)
            n.input[:] = [mapping.get(x, x) for x in n.input]
            n.output[:] = [mapping.get(x, x) for x in n.output]
            for sub in subgraphs(n):
                apply(sub)

    collect(graph)
    apply(graph)


class BranchProbe:
    """Per sample: which branch each If takes and the values its branches read from the main
    graph (one ORT run per sample: a batch shares one condition)."""

    def __init__(self, proto: onnx.ModelProto, sites: list[int]) -> None:
        self.proto, self.sites = proto, sites
        given = {i.name for i in proto.graph.input} | set(constant_tensors(proto.graph))
        # the conditions, and the If's outputs: their ranks type a branch's untyped outputs
        names = [proto.graph.node[i].input[0] for i in sites]
        names += [o for i in sites for o in proto.graph.node[i].output]
        for i in sites:
            for g in subgraphs(proto.graph.node[i]):
                names += [r for r in outer_reads(g) if r not in given]
        self.names = list(dict.fromkeys(names))
        self.session = None

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
        from faaq_onnx.data import stacked_inputs
        from faaq_onnx.runtime.runner import run_batches

        stacked = bool(stacked_inputs(inputs, model_input_shapes(self.proto)))
        values: dict[str, list[np.ndarray]] = {n: [] for n in self.names}
        for _, outs in run_batches(self._session(), inputs, 1, self.names):
            for name, o in zip(self.names, outs):
                values[name].append(np.asarray(o)[0] if stacked else np.asarray(o))
        return values

    def _session(self):
        """The model with the probed values as outputs, in one session for every run."""
        if self.session is None:
            from faaq_onnx.runtime.session import make_session

            probe = copy.deepcopy(self.proto)
            outputs = {o.name for o in probe.graph.output}
            probe.graph.output.extend(
                helper.ValueInfoProto(name=n) for n in self.names if n not in outputs
            )
            self.session = make_session(probe)
        return self.session


def _batched(values: list[np.ndarray]) -> bool:
    """Whether a probed value carries the batch axis in front (a float activation, observed
    at batch 1): then samples concatenate on it, as a model's batched inputs do; otherwise
    (shapes, conditions, a state without a batch axis in front) each is one whole feed."""
    return all(v.ndim >= 1 and v.shape[0] == 1 and v.dtype.kind == "f" for v in values)


def _taken(conds: list[np.ndarray], then: bool) -> np.ndarray:
    return np.array([bool(np.asarray(c).reshape(-1)[0]) == then for c in conds], bool)


def branch_model(
    proto: onnx.ModelProto,
    graph: onnx.GraphProto,
    arrays: dict[str, np.ndarray],
    whole: set[str],
    results: list[np.ndarray],
) -> onnx.ModelProto:
    """A branch as a model of its own: the values it reads from the main graph become its
    inputs (declared as the main graph declares them, or by what was observed, `arrays`:
    batches, or one `whole` value per sample) or, where constant, its initializers. Outputs
    a branch declares without a shape (allowed in subgraphs, not in a model) get the rank
    and type of what the If returned on a sample taking it (`results`)."""
    mains = {i.name: i for i in proto.graph.input}
    consts = constant_tensors(proto.graph)
    inputs, inits = [], list(graph.initializer)
    for name in outer_reads(graph):
        if name in mains:
            inputs.append(copy.deepcopy(mains[name]))
        elif name in consts:
            value = consts[name]
            if value.name != name:  # a Constant node's value: named after its output here
                value = copy.deepcopy(value)
                value.name = name
            inits.append(value)
        else:
            arr = arrays[name]
            inputs.append(
                helper.make_tensor_value_info(
                    name,
                    helper.np_dtype_to_tensor_dtype(arr.dtype),
                    [f"{name}_dim{k}" for k in range(arr.ndim - (name in whole))],
                )
            )
    outputs = []
    for out, seen in zip(graph.output, results):
        if not out.type.tensor_type.HasField("shape"):
            out = helper.make_tensor_value_info(
                out.name,
                helper.np_dtype_to_tensor_dtype(seen.dtype),
                [f"{out.name}_dim{k}" for k in range(seen.ndim)],
            )
        outputs.append(out)
    g = helper.make_graph(
        list(graph.node),
        graph.name or "branch",
        inputs,
        outputs,
        initializer=inits,
        value_info=list(graph.value_info),
    )
    model = helper.make_model(g, opset_imports=list(proto.opset_import))
    model.ir_version = proto.ir_version
    return model


def _branch_feeds(
    graph: onnx.GraphProto,
    proto: onnx.ModelProto,
    parts: list[tuple[dict, dict, np.ndarray]],
) -> tuple[dict[str, np.ndarray], int, set[str]]:
    """The branch model's feeds: calibration samples first, then held-out ones (for
    `calib_size` to split), of the samples whose condition takes the branch; and which
    probed values go one whole feed per sample."""
    mains = {i.name for i in proto.graph.input}
    consts = constant_tensors(proto.graph)
    reads = [r for r in outer_reads(graph) if r not in consts]
    probed_calib = parts[0][1]  # decides, for every part alike, how a probed value is fed
    whole = {r for r in reads if r not in mains and not _batched(probed_calib[r])}
    feeds: dict[str, list[np.ndarray]] = {}
    for inputs, probed, mask in parts:
        if not mask.any():  # e.g. no held-out sample takes this branch
            continue
        for name in reads:
            if name in mains:
                arr = inputs[name][mask]
            else:
                taken = [v for v, m in zip(probed[name], mask) if m]
                arr = np.stack(taken) if name in whole else np.concatenate(taken)
            feeds.setdefault(name, []).append(arr)
    return {k: np.concatenate(v) for k, v in feeds.items()}, int(parts[0][2].sum()), whole


def quantize_in_branches(
    model_path, calib, output, config, opset: int, quantize_model
) -> QuantizeResult:
    """Quantize every If branch the calibration samples reach, each as its own model
    (`quantize_model`: pipeline.quantize), and put them back into the user's graph."""
    from faaq_onnx.analysis.verify import verify
    from faaq_onnx.inputs import prepare_calibration, reuses_calibration
    from faaq_onnx.model_io import load_float_model
    from faaq_onnx.outputs import save_model_atomic
    from faaq_onnx.passes.upgrade_opset import UpgradeOpsetPass

    model = load_float_model(model_path)
    UpgradeOpsetPass(opset)(model)  # both branches run at the opset the quantized one needs
    proto = to_proto(model)
    sites = branch_sites(proto)
    inputs, held, notes = prepare_calibration(calib, proto, config)
    probe = BranchProbe(proto, sites)
    probed, probed_held = probe.run(inputs), probe.run(held)
    spliced = copy.deepcopy(proto)
    entries, results = [], []
    for i in sites:
        node = spliced.graph.node[i]
        cond = node.input[0]
        attrs = {a.name: a for a in node.attribute}
        for attr in (attrs[b] for b in BRANCHES):
            then = attr.name == "then_branch"
            mask, held_mask = _taken(probed[cond], then), _taken(probed_held[cond], then)
            entry = {
                "node": node.name or f"If_{i}",
                "branch": attr.name,
                "weighted_ops": dict(weighted_ops_in(attr.g)),
                "calibration_samples": int(mask.sum()),
                "verification_samples": int(held_mask.sum()),
            }
            entries.append(entry)
            if not entry["weighted_ops"]:
                entry["quantized"] = False
                entry["why"] = "holds no weighted op: left in float"
                continue
            if not mask.any():
                entry["quantized"] = False
                entry["why"] = (
                    f"no calibration sample takes it ({cond!r} was {str(not then).lower()} "
                    f"on all {len(mask)}): left in float"
                )
                continue
            feeds, n_calib, whole = _branch_feeds(
                attr.g, proto, [(inputs, probed, mask), (held, probed_held, held_mask)]
            )
            first = int(np.flatnonzero(mask)[0])
            seen = [probed[o][first] for o in node.output]
            sub_config = copy.deepcopy(config)
            sub_config.calib_size = n_calib
            with tempfile.TemporaryDirectory(prefix="faaq-branch-") as tmp:
                path = save_model_atomic(
                    branch_model(proto, attr.g, feeds, whole, seen), Path(tmp) / "b.onnx"
                )
                result = quantize_model(path, feeds, None, sub_config)
            sub = result.model.graph
            rename_scope(sub, f"{entry['node']}/{attr.name}/", {i.name for i in sub.input})
            del sub.input[:]
            attr.g.CopyFrom(sub)
            entry["quantized"] = True
            entry["groups"] = result.report["groups"]
            entry["sqnr_db"] = _first_sqnr(result.report)
            results.append((entry, result))
            _merge_opsets(spliced, result.model)
    if not results:
        raise FaaqError(
            "found nothing to quantize: the model's weighted ops sit in If branches that no "
            "calibration sample takes"
        )
    try:
        check_model(spliced)
    except onnx.checker.ValidationError as exc:
        raise FaaqError(
            f"internal error: the model with its quantized branches fails onnx.checker: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    merged = {
        f"{e['node']}/{e['branch']}/{k}": v
        for e, r in results
        for k, v in r.report["verify"]["size"]["per_weight"].items()
    }
    record_left_float(spliced, {k: v for _, r in results for k, v in r.qgraph.left_float.items()})
    verification = verify(
        proto,
        spliced,
        held,
        {"weights": merged},
        config.batch_size,
        reference=str(model_path),
    )
    report = _report(model_path, results, entries, verification, notes)
    report["calibration"]["verification_held_out"] = not reuses_calibration(inputs, held)
    report["config"] = config.to_dict()
    report["calibration"]["source"] = "arrays (API)" if isinstance(calib, dict) else str(calib)
    # plan and groups: the first quantized branch's (a plan names groups of one branch)
    first = results[0][1]
    return QuantizeResult(spliced, report, first.plan, first.qgraph, dict(report["timings_s"]))


def _first_sqnr(report: dict) -> float:
    return float(next(iter(report["verify"]["outputs"].values()))["sqnr_db"])


def _merge_opsets(model: onnx.ModelProto, other: onnx.ModelProto) -> None:
    """The model imports every domain the quantized branch uses, at the higher version."""
    have = {o.domain or "": o for o in model.opset_import}
    for o in other.opset_import:
        mine = have.get(o.domain or "")
        if mine is None:
            model.opset_import.append(copy.deepcopy(o))
        elif o.version > mine.version:
            mine.version = o.version
    model.ir_version = max(model.ir_version, other.ir_version)


def _timings(results) -> dict[str, float]:
    out: dict[str, float] = {}
    for _, r in results:
        for k, v in r.timings.items():
            out[k] = round(out.get(k, 0.0) + v, 3)
    return out


def _report(model_path, results, entries: list[dict], verification: dict, notes) -> dict:
    """The first quantized branch's report, with what holds for the whole model put over it:
    the verification of the spliced model, the branches, the groups and time of all of them."""
    report = copy.deepcopy(results[0][1].report)
    report["model"] = str(model_path)
    report["verify"] = verification
    report["branches"] = entries
    report["groups"] = sum(r.report["groups"] for _, r in results)
    report["weight_quantizers"] = sum(r.report["weight_quantizers"] for _, r in results)
    report["activation_quantizers"] = sum(r.report["activation_quantizers"] for _, r in results)
    report["timings_s"] = _timings(results)
    warnings = list(notes)
    for _, r in results:
        warnings += [w for w in r.report["warnings"] if w not in warnings]
    warnings += [
        f"{e['node']} {e['branch']}: {e['why']}"
        for e in entries
        if not e["quantized"] and e["weighted_ops"]
    ]
    report["warnings"] = warnings
    report["calibration"]["samples"] = sum(r.report["calibration"]["samples"] for _, r in results)
    report["calibration"]["verification_samples"] = verification["samples"]
    return report
