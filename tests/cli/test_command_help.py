"""Every command's own options state their defaults (and required options say so) in --help,
as documented; quantize's shared options are checked in test_quantize_cmd."""

import re

import pytest


def _default(text):
    m = re.search(r"\[default: ([^\]]*)\]\s*$", text)
    return m.group(1) if m else None


EXPECTED = {
    "analyze": {
        "--candidates": "practical",
        "--metrics": "sqnr,kl,fit",
        "--metric": "sqnr",
        "--points": "8",
        "--latency": "no-latency",
        "--ep": "cpu",
        "--latency-batch": "1",
    },
    "reliability": {"--trials": "10", "--noise-share": "0.0", "--dominant-share": "0.5"},
    "demo": {"--out": "out/demo", "--schemes": "w8a8,w6a6,w4a8,w4a4", "--seed": "0"},
    "export": {"--opset": "17", "--seed": "0"},
    "profile": {"--ep": "cpu", "--batch": "1,8", "--runs": "30", "--warmup": "5", "--top": "15"},
    "eval": {"--batch-size": "64", "--ep": "cpu", "--seed": "0"},
}
REQUIRED = {
    "analyze": ["--calib", "--report"],
    "reliability": ["--calib", "--data", "--report"],
    "eval": ["--data"],
}


@pytest.mark.parametrize("cmd", sorted(EXPECTED))
def test_defaults_are_shown(option_help, cmd):
    h = option_help(cmd)
    assert {k: _default(h[k]) for k in EXPECTED[cmd]} == EXPECTED[cmd]
    for opt in REQUIRED.get(cmd, []):
        assert "[required]" in h[opt], opt
    flags = {"analyze": ["--no-cache", "--no-simplify", "--quiet"], "eval": ["--per-class"]}
    for flag in flags.get(cmd, []):
        assert not h[flag].lstrip().startswith(("TEXT", "INTEGER")), flag
