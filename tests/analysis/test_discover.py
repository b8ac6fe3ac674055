from faaq_onnx.analysis.discover import discover_groups
from faaq_onnx.model_io import load_model
from faaq_onnx.passes.canonicalize import canonicalize


def _qgraph(path):
    model, _ = canonicalize(load_model(path))
    return discover_groups(model)


def test_tiny_cnn_groups(tiny_cnn):
    qg = _qgraph(tiny_cnn)
    assert len(qg.weights) == 3  # conv1, conv2, fc
    # conv2 and the residual Add read the same pooled tensor: one group, one bit width
    g = next(g for g in qg.groups.values() if "conv2" in g.ops)
    assert "add2" in g.ops
    # Relu and MaxPool are pass-through: conv1's output, relu1 and pool1 share one scale
    shared = next(a for a in qg.activations.values() if "p1" in a.tensors)
    assert {"r1", "p1"} <= set(shared.tensors) and "relu1" in shared.droppable


def test_macs_from_shapes(tiny_cnn):
    qg = _qgraph(tiny_cnn)
    conv1 = next(g for g in qg.groups.values() if g.ops == ["conv1"])
    assert conv1.macs == 8 * 16 * 16 * 3 * 3 * 3
    fc = next(g for g in qg.groups.values() if "fc" in g.ops)
    assert fc.macs == 80 and fc.kind == "gemm"


def test_matmul_weights_axes(tiny_mlp):
    qg = _qgraph(tiny_mlp)
    w1 = qg.weights["w1"]
    assert (w1.channel_axis, w1.block_axis) == (1, 0)  # [K, N]: per output column, blocks along K
    # the bias Add has a constant input: it stays float, it is not a quantizer group
    assert all("bias1" not in g.ops for g in qg.groups.values())
