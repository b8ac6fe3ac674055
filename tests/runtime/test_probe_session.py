import numpy as np

from faaq_onnx.analysis.calibrate import tap_model
from faaq_onnx.analysis.probe import build_probe
from faaq_onnx.config import QuantConfig
from faaq_onnx.pipeline import Compilation
from faaq_onnx.runtime.probe_session import ProbeSession


def test_prefix_sessions_give_what_the_whole_probe_gives(tiny_cnn, cnn_calib):
    """prefix=True runs only the nodes an output depends on (ORT runs every node of a session
    otherwise); the values, under a quantized configuration, are those of the whole probe."""
    comp = Compilation(tiny_cnn, cnn_calib, QuantConfig(progress=False), target_opset=21)
    probe = build_probe(comp.float_proto, comp.qgraph)
    inputs = {"input": cnn_calib["input"][:16]}
    acts = list(comp.qgraph.activations)
    convs = [n.output[0] for n in comp.float_proto.graph.node if n.op_type == "Conv"]
    whole = ProbeSession(tap_model(probe, convs), inputs, acts)
    part = ProbeSession(probe, inputs, acts, prefix=True)
    weights, act_params = comp.feeds.feeds(comp.uniform("w4a8").choices)
    for t in convs:
        (a,) = whole.run(weights, act_params, outputs=[t])
        (b,) = part.run(weights, act_params, outputs=[t])
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    (m,) = part.channel_means(weights, act_params, [convs[0]])
    first = whole.run(weights, act_params, outputs=[convs[0]])[0]
    np.testing.assert_allclose(m, first.astype(np.float64).mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    assert part._full is None  # the whole probe was never built
