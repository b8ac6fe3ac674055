"""`faaq profile`'s terminal report: the table of a runtime.profile report, then per-op summaries.

Kept apart from the measuring (runtime/profile.py): this only reads the report's dict.
"""

from __future__ import annotations

from faaq_onnx.runtime.profile import QDQ_OPS


def format_profile(report: dict) -> str:
    """The terminal table: one row per model x EP x batch, then per-op summaries."""
    headers = [
        "model",
        "ep",
        "batch",
        "median ms",
        "p90 ms",
        "samples/s",
        "size",
        "peak RSS MB",
        "+session MB",
        "speed-up",
    ]
    rows = []
    for r in report["results"]:
        if r["status"] != "ok":
            rows.append(
                [
                    r["model_name"],
                    r["ep"],
                    str(r["batch"]),
                    "-",
                    "-",
                    "-",
                    _mb(r["model_bytes"]),
                    "-",
                    "-",
                    "skipped",
                ]
            )
            continue
        rows.append(
            [
                r["model_name"],
                r["ep"],
                str(r["batch"]),
                f"{r['median_ms']:.3f}",
                f"{r['p90_ms']:.3f}",
                f"{r['throughput']:.1f}",
                _mb(r["model_bytes"]),
                f"{r['peak_rss_mb']:.0f}",
                f"{r['peak_rss_mb'] - r['rss_baseline_mb']:.0f}",
                f"{r['speedup_vs_first']:.2f}x" if "speedup_vs_first" in r else "-",
            ]
        )
    lines = [_table(headers, rows)]
    skipped = [r for r in report["results"] if r["status"] != "ok"]
    for r in skipped:
        lines.append(f"skipped {r['model_name']} batch {r['batch']}: {r['reason']}")
    m = report["machine"]
    lines.append(
        f"onnxruntime {m['onnxruntime']}, {m['cpu']['model']} ({', '.join(m['cpu']['int8_features'])}), "
        f"{m['cpu_count']} CPUs, threads: {m['threads']}; "
        f"speed-up is against {report['settings']['baseline']}; peak RSS: "
        f"{report['results'][0]['peak_rss_scope'] if report['results'] else '-'}; +session: peak over the "
        f"process's RSS before the session was created"
    )
    for r in report["results"]:
        po = r.get("per_op")
        if not po:
            continue
        lines.append("")
        lines.append(
            f"{r['model_name']} on {r['ep']}, batch {r['batch']}: {po['kernel_ms_per_run']:.3f} ms in kernels "
            f"per run (median per node); integer kernels {100 * po['integer_share']:.1f} %, Q/DQ "
            f"{100 * po['qdq_share']:.1f} %, float {100 * po['float_share']:.1f} %"
        )
        lines.append(
            _table(
                ["op type", "kind", "ms/run", "share"],
                [
                    [o["op_type"], _kind(o), f"{o['ms_per_run']:.3f}", f"{100 * o['share']:.1f} %"]
                    for o in po["by_op_type"]
                ],
            )
        )
        lines.append(
            _table(
                ["node", "op type", "kind", "ms/run", "share"],
                [
                    [
                        n["node"][:60],
                        n["op_type"],
                        _kind(n),
                        f"{n['ms_per_run']:.3f}",
                        f"{100 * n['share']:.1f} %",
                    ]
                    for n in po["top_nodes"]
                ],
            )
        )
    return "\n".join(lines)


def _kind(rec: dict) -> str:
    if rec["integer"]:
        return "int"
    return "q/dq" if rec["op_type"] in QDQ_OPS else "float"


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    num = [i > 0 and all(_numeric(r[i]) for r in rows) for i in range(len(headers))]

    def fmt(cells):
        return "  ".join(
            c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, num)
        ).rstrip()

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def _numeric(s: str) -> bool:
    return (
        s == "-"
        or s.replace(".", "", 1)
        .replace(" %", "")
        .replace("x", "")
        .replace(" MB", "")
        .replace(" kB", "")
        .isdigit()
    )
