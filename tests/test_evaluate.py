"""Accuracy as the report states it: top-1, top-5, per class, worst class, drops."""

import numpy as np
import pytest

from faaq_onnx.errors import FaaqError
from faaq_onnx.evaluate import accuracy_report, compare, fidelity, predict


def test_top1_top5_and_per_class_from_known_logits():
    # 3 samples, 10 classes; labels ranked 1st, 5th and 6th by their sample's logits
    logits = np.tile(-np.arange(10, dtype=np.float32), (3, 1))  # class 0 highest, then 1, 2, ...
    y = np.array([0, 4, 5])
    rep = accuracy_report(logits, y, class_names=["plane", "car"])
    assert rep["top1"] == pytest.approx(1 / 3) and rep["top5"] == pytest.approx(2 / 3)
    assert rep["per_class"] == {
        "plane": {"samples": 1, "top1": 1.0},
        "4": {"samples": 1, "top1": 0.0},
        "5": {"samples": 1, "top1": 0.0},
    }
    assert rep["worst_class"] == {"class": "4", "top1": 0.0}
    with pytest.raises(FaaqError, match="3 predictions for 2 labels"):
        accuracy_report(logits, y[:2])


def test_label_equal_to_the_number_of_class_names_gets_its_number():
    rep = accuracy_report(np.eye(3, dtype=np.float32), np.array([0, 1, 2]), class_names=["a", "b"])
    assert set(rep["per_class"]) == {"a", "b", "2"}


def test_compare_names_the_worst_class_and_its_drop():
    ref = {"top1": 0.8, "top5": 0.95, "per_class": {"a": {"top1": 0.9}, "b": {"top1": 0.7}}}
    got = {"top1": 0.6, "top5": 0.9, "per_class": {"a": {"top1": 0.5}, "b": {"top1": 0.6}}}
    c = compare(ref, got)
    assert c["top1_drop"] == pytest.approx(0.2) and c["top5_drop"] == pytest.approx(0.05)
    assert c["worst_class_drop"]["class"] == "a" and c["worst_class_drop"]["drop"] == pytest.approx(
        0.4
    )
    assert c["per_class_drop"] == pytest.approx({"a": 0.4, "b": 0.1})


def test_fidelity_counts_agreement_churn_kl_and_sqnr_from_known_logits():
    ref = np.array(
        [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]
    )
    got = ref.copy()
    got[1] = [0.0, 0.0, 2.0]  # predicts class 2 where the reference predicts 1
    got[3] = [0.0, 2.0, 0.0]  # predicts class 1 where the reference predicts 0
    got[4] = [2.0, 0.0, 0.0]  # predicts class 0 where the reference predicts 1
    y = np.array([0, 2, 2, 0, 1])  # reference wrong on sample 1, right on samples 3 and 4
    f = fidelity(got, ref, y)
    assert f["agreement"] == pytest.approx(0.4)
    assert (f["fixed"], f["broken"]) == (1, 2)  # net top-1 change -1, churn 3
    # KL of softmax([2,0,0]) against softmax([0,2,0]) (or a permutation), on 3 of 5 samples
    p = np.exp([2.0, 0, 0]) / np.exp([2.0, 0, 0]).sum()
    q = np.exp([0, 2.0, 0]) / np.exp([0, 2.0, 0]).sum()
    assert f["kl"] == pytest.approx(np.sum(p * np.log(p / q)) * 3 / 5)
    assert f["logit_sqnr_db"] == pytest.approx(
        10 * np.log10(20 / 24)
    )  # |ref|^2 = 5 * 4, |error|^2 = 3 * 8
    same = fidelity(ref, ref)
    assert same == {"agreement": 1.0, "kl": pytest.approx(0.0, abs=1e-12), "logit_sqnr_db": None}
    with pytest.raises(FaaqError, match="cannot be compared"):
        fidelity(ref[:, :2], ref)


@pytest.mark.parametrize("shape", [(4, 3, 16), (4, 3, 8, 8), (4, 1, 16, 16)])
def test_data_that_does_not_fit_the_input_is_one_clear_error(tiny_cnn, shape):
    with pytest.raises(FaaqError, match="does not fit model input"):
        predict(tiny_cnn, np.zeros(shape, np.float32))
    assert predict(tiny_cnn, np.zeros((4, 3, 16, 16), np.float32)).shape[0] == 4


def test_top1_is_the_share_of_samples_whose_largest_logit_is_the_label():
    """An identity MatMul (logits = x) over 3 classes, batched in twos: top-1 is the share of
    rows whose argmax is the label, computed here from the inputs."""
    from faaq_onnx.evaluate import top1
    from tests.conftest import one_weight_model

    model = one_weight_model("MatMul", np.eye(3, dtype=np.float32), ["n", 3], ["n", 3])
    x = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32)
    y = x.argmax(1)
    y[[1, 4]] = (y[[1, 4]] + 1) % 3  # two samples now wrong
    assert top1(model, x, y, batch_size=2) == pytest.approx(5 / 7)
    assert top1(model, x, x.argmin(1)) == 0.0
