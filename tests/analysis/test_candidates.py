"""analysis/candidates.py: candidate lists and presets, and each group's candidates in order."""

from __future__ import annotations

import pytest

from faaq_onnx.analysis.candidates import PRESETS, group_candidates, parse_candidates
from faaq_onnx.config import FLOAT, Candidate
from faaq_onnx.errors import FaaqError
from faaq_onnx.groups import QuantizerGroup


def names(cands):
    return [str(c) for c in cands]


def test_parse_sorts_dedups_and_reads_presets():
    assert names(parse_candidates("w8a8, w4a8,w8a16,w4a8,")) == ["w4a8", "w8a8", "w8a16"]
    assert names(parse_candidates(" Practical ")) == ["w4a8", "w8a8", "w8a16"]
    assert names(parse_candidates("ort-cpu")) == ["w4a8", "w8a8"]
    assert names(parse_candidates("weights-a8")) == [
        "w2a8",
        "w3a8",
        "w4a8",
        "w5a8",
        "w6a8",
        "w8a8",
    ]
    assert len(parse_candidates("wide")) == 8 and set(PRESETS) >= {"ort-cpu", "practical"}
    # a preset inside a list stands for its candidates
    assert set(names(parse_candidates("wide, w4a8"))) == set(names(parse_candidates("wide"))) | {
        "w4a8"
    }
    assert names(parse_candidates("ORT-CPU,w8a16")) == ["w4a8", "w8a8", "w8a16"]
    with pytest.raises(FaaqError) as e:
        parse_candidates(" , ")
    assert str(e.value).startswith("no candidates in ' , ': write e.g. w4a8,w8a8,w8a16 or a preset")


def group(kind, weights=("w",)):
    return QuantizerGroup("g", kind, ["op"], list(weights), ["act:a"], 1, 1)


def test_weighted_groups_take_every_candidate_most_precise_first():
    cands = parse_candidates("w4a8,w8a8,w8a16,w4a16")
    assert names(group_candidates(group("conv"), cands)) == ["w8a16", "w8a8", "w4a16", "w4a8"]


def test_weightless_groups_choose_activation_bits_at_the_top_weight_width():
    cands = parse_candidates("w4a8,w8a8,w4a16")
    assert names(group_candidates(group("pool", weights=()), cands)) == ["w8a16", "w8a8"]


def test_attention_groups_choose_8_or_16_bit_activations_or_float():
    cands = parse_candidates("w4a8,w8a8")
    assert group_candidates(group("attention", weights=()), cands) == [
        Candidate(8, 16),
        Candidate(8, 8),
    ]
    wo = [Candidate(4, FLOAT), Candidate(8, FLOAT)]
    assert group_candidates(group("attention", weights=()), wo) == [
        Candidate(8, FLOAT),
        Candidate(8, 16),
        Candidate(8, 8),
    ]
