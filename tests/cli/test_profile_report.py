"""cli/profile_report.py: `faaq profile`'s table and per-op sections, from report dicts built here."""

from __future__ import annotations

from faaq_onnx.cli.profile_report import _table, format_profile


def _report(results, per_op=None):
    machine = {
        "onnxruntime": "9.9",
        "cpu": {"model": "CPU X", "int8_features": ["avx2", "avx512_vnni"]},
        "cpu_count": 2,
        "threads": 1,
    }
    return {"machine": machine, "settings": {"baseline": "a.onnx"}, "results": results}


def _ok(name, median, speedup=None, **extra):
    r = {
        "model_name": name,
        "ep": "cpu",
        "batch": 1,
        "status": "ok",
        "median_ms": median,
        "p90_ms": median * 2,
        "throughput": 1000 / median,
        "model_bytes": 150_000,
        "peak_rss_mb": 120.4,
        "rss_baseline_mb": 100.0,
        "peak_rss_scope": "child process (this model only)",
        **extra,
    }
    if speedup is not None:
        r["speedup_vs_first"] = speedup
    return r


def test_format_profile_table_columns_and_footer():
    """Numbers right-aligned under their headers, sizes in kB below 100 kB and MB above, the
    session's memory over the baseline, skipped rows and their reason, the machine footer."""
    skipped = {
        "model_name": "fixed.onnx",
        "ep": "cpu",
        "batch": 8,
        "status": "skipped",
        "reason": "fixed batch",
        "model_bytes": 99_999,
    }
    text = format_profile(_report([_ok("a.onnx", 2.0, 1.0), _ok("bb.onnx", 1.0), skipped]))
    lines = text.splitlines()
    head = lines[0].split("  ")
    assert [h.strip() for h in head if h.strip()][:3] == ["model", "ep", "batch"]
    assert lines[1].startswith("----------  ---  -----  ---------  ------")
    row_a, row_b, row_s = lines[2], lines[3], lines[4]
    assert row_a.split() == [
        "a.onnx", "cpu", "1", "2.000", "4.000", "500.0", "0.15", "MB", "120", "20", "1.00x"
    ]  # fmt: skip
    assert row_b.split()[-1] == "-" and row_b.split()[3] == "1.000"
    assert row_s.split() == [
        "fixed.onnx", "cpu", "8", "-", "-", "-", "100.0", "kB", "-", "-", "skipped"
    ]  # fmt: skip
    end = lines[0].index("median ms") + len("median ms")  # numbers right-aligned
    assert row_a.index("2.000") + 5 == end == row_b.index("1.000") + 5
    assert row_a.index("1.00x") == lines[0].index("speed-up")  # not all numbers: left-aligned
    assert lines[5] == "skipped fixed.onnx batch 8: fixed batch"
    assert lines[6].startswith("onnxruntime 9.9, CPU X (avx2, avx512_vnni), 2 CPUs, threads: 1;")
    assert "speed-up is against a.onnx; peak RSS: child process (this model only);" in lines[6]


def test_format_profile_per_op_sections():
    per_op = {
        "kernel_ms_per_run": 1.5,
        "integer_share": 0.6,
        "qdq_share": 0.25,
        "float_share": 0.15,
        "by_op_type": [
            {"op_type": "QLinearConv", "integer": True, "ms_per_run": 0.9, "share": 0.6},
            {"op_type": "QuantizeLinear", "integer": False, "ms_per_run": 0.375, "share": 0.25},
            {"op_type": "Relu", "integer": False, "ms_per_run": 0.225, "share": 0.15},
        ],
        "top_nodes": [
            {
                "node": "n" * 70,
                "op_type": "QLinearConv",
                "integer": True,
                "ms_per_run": 0.9,
                "share": 0.6,
            }
        ],
    }
    text = format_profile(_report([_ok("a.onnx", 2.0, 1.0, per_op=per_op)]))
    assert (
        "a.onnx on cpu, batch 1: 1.500 ms in kernels per run (median per node); "
        "integer kernels 60.0 %, Q/DQ 25.0 %, float 15.0 %"
    ) in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line}
    assert rows["QLinearConv"] == ["int", "0.900", "60.0", "%"]
    assert rows["QuantizeLinear"] == ["q/dq", "0.375", "25.0", "%"]
    assert rows["Relu"] == ["float", "0.225", "15.0", "%"]
    assert rows["n" * 60] == ["QLinearConv", "int", "0.900", "60.0", "%"]  # names cut at 60


def test_sizes_are_kilobytes_below_100_kB_and_megabytes_from_there():
    from faaq_onnx.cli.profile_report import _mb

    assert (_mb(0), _mb(1_500), _mb(99_949), _mb(99_999)) == (
        "0.0 kB",
        "1.5 kB",
        "99.9 kB",
        "100.0 kB",
    )
    assert (_mb(100_000), _mb(2_500_000), _mb(10**12)) == ("0.10 MB", "2.50 MB", "1000000.00 MB")


def test_table_right_aligns_numeric_columns_after_the_first():
    """The first column is a label even when it looks like a number; every later column whose
    cells are all numbers is right-aligned, the others left-aligned."""
    text = _table(["n", "ms", "name"], [["1", "2.5", "a"], ["10", "12.25", "bbb"]])
    rows = text.splitlines()
    assert rows[-2:] == ["1     2.5  a", "10  12.25  bbb"]  # columns joined by two spaces
