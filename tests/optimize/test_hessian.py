"""optimize/hessian.py against ONNX Runtime: for each weighted op form, patches x weight is the op's
output, the weight's (G, K, N) view round-trips, and the Hessian sum is the explicit one."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx.optimize import hessian as hessian_mod
from faaq_onnx.optimize.hessian import MIN_ROWS, HessianSum, LinearForm, linear_form


def ort_run(node, x, w, weight_first=False):
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def conv_from_patches(form, x, w):
    """Patches x weight, laid out as the conv's (B, C_out, *out)."""
    y = np.matmul(form.patches(x).astype(np.float64), form.to_gkn(w))  # (G, B * P, N)
    g, _, n = y.shape
    return y, g, n


# (op, x shape, w shape, attributes)
CONVS = [
    ("Conv", (2, 3, 7), (4, 3, 3), {}),  # 1-D, no pads/strides/dilations/kernel_shape given
    ("Conv", (2, 3, 6, 5), (4, 3, 2, 3), {}),  # 2-D, nothing given
    ("Conv", (1, 2, 5, 4, 4), (3, 2, 2, 2, 3), {"pads": [1, 0, 1, 0, 1, 2]}),  # 3-D
    ("Conv", (2, 4, 9, 8), (6, 2, 3, 3), {"group": 2, "dilations": [2, 1], "pads": [2, 0, 1, 1]}),
    ("Conv", (2, 4, 9, 9), (4, 1, 3, 3), {"group": 4, "strides": [2, 3], "pads": [1, 1, 1, 1]}),
    ("Conv", (2, 3, 8, 8), (5, 3, 3, 3), {"auto_pad": "VALID", "strides": [2, 2]}),
    ("Conv", (2, 3, 8, 7), (5, 3, 3, 2), {"auto_pad": "SAME_LOWER", "strides": [3, 1]}),
    ("Conv", (2, 3, 8, 8), (5, 3, 3, 3), {"kernel_shape": [3, 3], "pads": [0, 1, 2, 0]}),
    ("ConvTranspose", (2, 4, 5), (4, 3, 3), {}),  # 1-D, nothing given
    ("ConvTranspose", (2, 4, 3, 4), (4, 2, 2, 3), {"strides": [3, 2], "dilations": [1, 2]}),
    (
        "ConvTranspose",
        (1, 6, 3, 3),
        (6, 2, 3, 3),
        {"group": 3, "strides": [2, 2], "pads": [0, 1, 1, 0], "output_padding": [1, 0]},
    ),
    ("ConvTranspose", (2, 2, 4, 4), (2, 3, 3, 3), {"auto_pad": "VALID", "strides": [2, 1]}),
]


@pytest.mark.parametrize("op,xs,ws,attrs", CONVS, ids=[str(i) for i in range(len(CONVS))])
def test_conv_patches_times_weight_is_onnx_runtimes_output(op, xs, ws, attrs):
    rng = np.random.default_rng(len(xs) + len(attrs))
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    node = helper.make_node(op, ["x", "w"], ["y"], **attrs)
    ref = ort_run(node, x, w).astype(np.float64)
    form = linear_form(node, 1, w.shape)
    assert isinstance(form, LinearForm) and form.conv
    y, g, n = conv_from_patches(form, x, w)
    b, cout = ref.shape[:2]
    assert (g * n, y.shape[1]) == (cout, b * int(np.prod(ref.shape[2:])))
    got = y.reshape(g, b, -1, n).transpose(1, 0, 3, 2).reshape(ref.shape)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    # the (G, K, N) view holds every weight once and maps back
    np.testing.assert_array_equal(form.from_gkn(form.to_gkn(w)), w)
    assert form.to_gkn(w).size == w.size
    # Σ x xᵀ of the patches, batch by batch in small chunks, is the whole batch's
    p = form.patches(x).astype(np.float64)
    hs = HessianSum(form)
    for s in range(len(x)):
        hs.add(x[s : s + 1])
    np.testing.assert_allclose(hs.sum, np.matmul(p.transpose(0, 2, 1), p), rtol=1e-5, atol=1e-4)
    assert hs.rows == p.shape[1]
    np.testing.assert_allclose(hs.h, 2 * hs.sum / p.shape[1])


def test_linear_form_defaults_and_attributes():
    node = helper.make_node("Conv", ["x", "w"], ["y"])
    f = linear_form(node, 1, (4, 3, 2, 5))
    assert (f.groups, f.kernel, f.strides, f.dilations, f.pads, f.auto_pad) == (
        1,
        (2, 5),
        (1, 1),
        (1, 1),
        (0, 0, 0, 0),
        "NOTSET",
    )
    assert f.output_padding == (0, 0) and f.gkn == (1, 30, 4)
    f = linear_form(
        helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", group=2), 1, (4, 3, 3)
    )
    assert f.pads is None and f.auto_pad == "SAME_UPPER" and f.gkn == (2, 9, 2)
    t = linear_form(helper.make_node("ConvTranspose", ["x", "w"], ["y"], group=2), 1, (6, 5, 3))
    assert t.gkn == (2, 9, 5)  # (C_in / g) * kernel inputs, C_out / g per group


def test_gemm_and_matmul_forms():
    gemm = linear_form(helper.make_node("Gemm", ["a", "w"], ["y"]), 1, (5, 3))
    assert (gemm.trans_w, gemm.trans_x, gemm.gkn, gemm.conv) == (False, False, (1, 5, 3), False)
    gemm = linear_form(helper.make_node("Gemm", ["a", "w"], ["y"], transB=1), 1, (5, 3))
    assert (gemm.trans_w, gemm.trans_x, gemm.gkn) == (True, False, (1, 3, 5))
    gemm = linear_form(helper.make_node("Gemm", ["a", "w"], ["y"], transA=1), 1, (5, 3))
    assert (gemm.trans_w, gemm.trans_x) == (False, True)
    right = linear_form(helper.make_node("MatMul", ["x", "w"], ["y"]), 1, (5, 3))
    assert (right.trans_w, right.trans_x, right.gkn) == (False, False, (1, 5, 3))
    left = linear_form(helper.make_node("MatMul", ["w", "x"], ["y"]), 0, (5, 3))
    assert (left.trans_w, left.trans_x, left.gkn) == (True, True, (1, 3, 5))


def test_forms_gptq_does_not_handle_say_why():
    mm = helper.make_node("MatMul", ["x", "w"], ["y"])
    assert linear_form(mm, 1, (2, 5, 3)) == (
        "MatMul weight of rank 3: GPTQ handles 2-D MatMul/Gemm weights; rounded to nearest"
    )
    gemm = helper.make_node("Gemm", ["w", "x"], ["y"])
    assert linear_form(gemm, 0, (5, 3)) == "Gemm whose weight is input A: rounded to nearest"
    assert (
        linear_form(helper.make_node("Mul", ["x", "w"], ["y"]), 1, (5, 3))
        == "Mul has no GPTQ form; rounded to nearest"
    )
    for kw in ({"auto_pad": "SAME_LOWER"}, {"output_shape": [8, 8]}):
        why = linear_form(
            helper.make_node("ConvTranspose", ["x", "w"], ["y"], **kw), 1, (2, 2, 3, 3)
        )
        assert isinstance(why, str) and why.startswith("ConvTranspose with auto_pad SAME")


@pytest.mark.parametrize(
    "node,ws,xs",
    [
        (helper.make_node("MatMul", ["x", "w"], ["y"]), (6, 4), (2, 3, 6)),
        (helper.make_node("Gemm", ["x", "w"], ["y"], transB=1), (4, 6), (5, 6)),
        (helper.make_node("Gemm", ["x", "w"], ["y"], transA=1), (6, 4), (6, 5)),
        (helper.make_node("Gemm", ["x", "w"], ["y"], transA=1, transB=1), (4, 6), (6, 5)),
    ],
)
def test_matmul_and_gemm_patches_times_weight_is_the_output(node, ws, xs):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    ref = ort_run(node, x, w).astype(np.float64)
    form = linear_form(node, 1, w.shape)
    y = np.matmul(form.patches(x).astype(np.float64), form.to_gkn(w))[0]
    np.testing.assert_allclose(y.reshape(ref.shape), ref, atol=1e-5)
    np.testing.assert_array_equal(form.from_gkn(form.to_gkn(w)), w)


def test_matmul_weight_on_the_left_reads_columns():
    """y = W @ X with X (B, K, M): the patches are X's columns, the weight W (N, K) transposed."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 5))
    x = rng.standard_normal((2, 5, 4))
    form = linear_form(helper.make_node("MatMul", ["w", "x"], ["y"]), 0, w.shape)
    y = np.matmul(form.patches(x).astype(np.float64), form.to_gkn(w))[0]  # (B * M, N)
    ref = np.matmul(w, x)  # (B, N, M)
    np.testing.assert_allclose(y.reshape(2, 4, 3).transpose(0, 2, 1), ref, atol=1e-5)
    np.testing.assert_array_equal(form.from_gkn(form.to_gkn(w)), w)


def test_max_rows_draws_distinct_rows_of_a_matmul_input():
    x = np.arange(50 * 3, dtype=np.float32).reshape(50, 3)
    form = linear_form(helper.make_node("MatMul", ["x", "w"], ["y"]), 1, (3, 2))
    p = form.patches(x, max_rows=7, rng=np.random.default_rng(0))[0]
    assert p.shape == (7, 3) and p.dtype == np.float32
    idx = p[:, 0] / 3
    assert list(idx) == sorted(set(idx))  # distinct, in input order
    np.testing.assert_array_equal(p, x[idx.astype(int)])
    np.testing.assert_array_equal(form.patches(x, max_rows=50)[0], x)  # not more than there are


def test_samples_per_chunk(monkeypatch):
    monkeypatch.setattr(hessian_mod, "CHUNK_ELEMENTS", 1000)
    mm = LinearForm("MatMul", (8, 4))
    assert mm.samples_per_chunk(np.zeros((30, 10, 8))) == 1000 // 80
    assert mm.samples_per_chunk(np.zeros((30, 2000))) == 1  # at least one sample
    assert mm.samples_per_chunk(np.zeros(7)) == 7  # 1-D: all of it
    assert mm.samples_per_chunk(np.zeros(0)) == 1
    gemm_t = LinearForm("Gemm", (8, 4), trans_x=True)
    assert gemm_t.samples_per_chunk(np.zeros((8, 40))) == 8  # axis 0 is K, not a batch
    assert gemm_t.samples_per_chunk(np.zeros((3, 8, 4))) == 1000 // 32
    conv = LinearForm("Conv", (4, 2, 3, 3), kernel=(3, 3), strides=(2, 2))
    assert conv.samples_per_chunk(np.zeros((9, 2, 4, 4))) == 1000 // (32 * 9)
    tconv = LinearForm("ConvTranspose", (2, 4, 3, 3), kernel=(3, 3), strides=(2, 1))
    assert tconv.samples_per_chunk(np.zeros((9, 2, 2, 2))) == 1000 // (8 * 9 * 2)


def test_capped_sum_keeps_min_rows_per_batch():
    form = LinearForm("MatMul", (2, 3))
    x = np.random.default_rng(0).standard_normal((MIN_ROWS + 500, 2)).astype(np.float32)
    hs = HessianSum(form, rows_per_k=1)
    assert hs.max_rows == MIN_ROWS
    hs.add(x)
    assert hs.rows == MIN_ROWS
    big = HessianSum(form, rows_per_k=MIN_ROWS)
    assert big.max_rows == 2 * MIN_ROWS
    big.add(x)
    assert big.rows == len(x)
    exact = HessianSum(form)
    assert exact.max_rows is None
    exact.add(x)
    np.testing.assert_allclose(exact.sum[0], x.astype(np.float64).T @ x, rtol=1e-5)


def test_a_single_vector_is_one_row():
    hs = HessianSum(LinearForm("MatMul", (3, 2)))
    hs.add(np.array([1.0, 2.0, 3.0], np.float32))
    assert hs.rows == 1
    np.testing.assert_allclose(hs.sum[0], np.outer([1, 2, 3], [1, 2, 3]))
    np.testing.assert_allclose(hs.h[0], 2 * np.outer([1, 2, 3], [1, 2, 3]))
    assert HessianSum(LinearForm("MatMul", (3, 2))).h.sum() == 0  # no rows: zeros, no division


def test_output_error_is_the_mean_squared_output_difference():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 3, 3, 3))
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=1, pads=[1, 1, 1, 1])
    form = linear_form(node, 1, w.shape)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    hs = HessianSum(form)
    hs.add(x)
    delta = rng.standard_normal(w.shape) * 0.1
    out = np.matmul(form.patches(x).astype(np.float64), form.to_gkn(delta))  # (1, 50, 4)
    assert hs.output_error(delta) == pytest.approx(np.mean(out**2), rel=1e-6)
    grouped = linear_form(helper.make_node("Conv", ["x", "w"], ["y"], group=3), 1, (6, 1, 3, 3))
    hs = HessianSum(grouped)
    hs.add(x)
    delta = rng.standard_normal((6, 1, 3, 3))
    out = np.matmul(grouped.patches(x).astype(np.float64), grouped.to_gkn(delta))  # (3, M, 2)
    assert hs.output_error(delta) == pytest.approx(np.mean(out**2), rel=1e-6)


def test_a_capped_sum_keeps_at_least_4096_patches_a_batch():
    """The documented floor: a small K (here 2, one row per K asked) still keeps 4,096 of a
    batch's 5,000 patches, a uniform draw of the batch."""
    form = LinearForm("MatMul", (2, 3))
    x = np.random.default_rng(1).standard_normal((5000, 2)).astype(np.float32)
    hs = HessianSum(form, rows_per_k=1)
    hs.add(x)
    assert hs.rows == 4096
    full = x.astype(np.float64).T @ x
    np.testing.assert_allclose(hs.sum[0] / 4096, full / 5000, atol=0.1)


def test_a_form_built_without_options_is_ungrouped_and_untransposed():
    """LinearForm's defaults: one group, the weight as stored (K rows for MatMul, [N, K] only
    when asked), data vectors as rows."""
    conv = LinearForm("Conv", (4, 2, 3, 3), kernel=(3, 3))
    assert conv.gkn == (1, 2 * 3 * 3, 4)
    mm = LinearForm("MatMul", (3, 2))
    assert mm.gkn == (1, 3, 2)
    x = np.arange(12, dtype=np.float32).reshape(4, 3)  # 4 vectors of K = 3
    np.testing.assert_array_equal(mm.patches(x)[0], x)
    w = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(mm.to_gkn(w)[0], w)


def test_patches_of_small_chunks_and_batches_are_summed_in_few_products(monkeypatch):
    """A 7 x 7 map chunked a few samples at a time gives far fewer rows than K: each chunk's own
    K x K product cost ResNet-50's K = 4608 layers most of their GPTQ time. Patches are held and
    summed together once they reach K rows (or when the sum is read), and the sum, rows and cross
    product are those of every patch."""
    monkeypatch.setattr(hessian_mod, "CHUNK_ELEMENTS", 2 * 3 * 9 * 49)  # two samples a chunk
    calls = []
    real_gram = hessian_mod.gram
    monkeypatch.setattr(
        hessian_mod, "gram", lambda *a, **k: calls.append(a[0].shape) or real_gram(*a, **k)
    )
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    form = linear_form(node, 1, (4, 3, 3, 3))  # K = 27
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((8, 3, 7, 7)).astype(np.float32) for _ in range(3)]
    xf = [x + 0.1 for x in xs]
    hs = HessianSum(form)
    for x, f in zip(xs, xf):
        hs.add(x, f)
    assert hs.rows == 3 * 8 * 49
    total = np.concatenate([form.patches(x)[0] for x in xs]).astype(np.float64)
    total_f = np.concatenate([form.patches(x)[0] for x in xf]).astype(np.float64)
    np.testing.assert_allclose(hs.sum[0], total.T @ total, rtol=1e-5)
    np.testing.assert_allclose(hs.cross[0], total.T @ total_f, rtol=1e-5, atol=1e-3)
    # 12 chunks of 98 rows, K = 27: each chunk reaches K rows alone, one product each (and one
    # for its cross product)
    assert len(calls) == 2 * 12
    calls.clear()
    big = linear_form(node, 1, (4, 300, 3, 3))  # K = 2700: every chunk is held
    hs = HessianSum(big)
    x = rng.standard_normal((8, 300, 7, 7)).astype(np.float32)
    monkeypatch.setattr(hessian_mod, "CHUNK_ELEMENTS", 2 * 300 * 9 * 49)
    hs.add(x)
    hs.add(x)
    assert calls == []  # 784 rows < K: nothing summed yet
    assert hs.rows == 2 * 8 * 49
    p = big.patches(x)[0].astype(np.float64)
    np.testing.assert_allclose(hs.sum[0], 2 * p.T @ p, rtol=1e-4, atol=1e-3)
    assert len(calls) == 1  # the eight chunks of both batches in one product
