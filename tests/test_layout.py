"""The package layout's rules, read from the imports themselves (ast, nothing imported).

- faaq_onnx/quant/ is the one quantization core (formats, affine maths, range setters,
  weight rounding): it depends on nothing else of the package but faaq_onnx.errors;
- faaq_onnx/analysis/ (sensitivity, allocation, verification) never imports faaq_onnx/optimize/
  (rounding optimization), which builds on analysis, not the other way round;
- only faaq_onnx/runtime/ talks to onnxruntime.
Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "faaq_onnx"


def imported_modules(path: Path, root: Path = PACKAGE.parent) -> set[str]:
    """Every module `path` imports, absolute names (relative imports resolved from `root`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    parts = list(path.relative_to(root).parts[:-1])  # the package the module is in
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{alias.name}" for alias in node.names)
    return out


def modules_under(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py")) if folder else sorted(PACKAGE.rglob("*.py"))


def offenders(paths: list[Path], bad) -> dict[str, list[str]]:
    found = {}
    for p in paths:
        hits = sorted(m for m in imported_modules(p) if bad(m))
        if hits:
            found[str(p.relative_to(PACKAGE.parent))] = hits
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_walk_sees_imports_of_every_kind(tmp_path):
    pkg = tmp_path / "faaq_onnx" / "analysis"
    pkg.mkdir(parents=True)
    mod = pkg / "m.py"
    mod.write_text(
        "import onnxruntime as ort\n"
        "from faaq_onnx.optimize import rounding\n"
        "def f():\n"
        "    from ..optimize.weights import WeightCache\n"
        "    from . import sensitivity\n"
    )
    seen = imported_modules(mod, root=tmp_path)
    assert {
        "onnxruntime",
        "faaq_onnx.optimize",
        "faaq_onnx.optimize.weights",
        "faaq_onnx.analysis",
        "faaq_onnx.analysis.sensitivity",
    } <= seen


def test_analysis_does_not_import_optimize():
    paths = modules_under("analysis")
    assert paths
    assert offenders(paths, lambda m: _within(m, "faaq_onnx.optimize")) == {}


def test_only_runtime_imports_onnxruntime():
    paths = [p for p in modules_under("") if "runtime" not in p.relative_to(PACKAGE).parts[:1]]
    assert offenders(paths, lambda m: _within(m, "onnxruntime")) == {}


def test_quant_is_the_core_and_depends_on_nothing_else_of_the_package():
    allowed = ("faaq_onnx.quant", "faaq_onnx.errors")
    paths = modules_under("quant")
    assert paths
    found = offenders(
        paths,
        lambda m: _within(m, "faaq_onnx") and not any(_within(m, a) for a in allowed),
    )
    assert found == {}
