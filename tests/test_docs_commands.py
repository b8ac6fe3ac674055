"""The commands README.md and docs/ show are real: every `faaq` option they use exists on that
subcommand (aliases and --flag/--no-flag pairs included), and the quick-start commands of the
README run on tiny models built here. Rename an option and this fails, naming the file, the
command and the option."""

from __future__ import annotations

import copy
import re
import shlex
import time
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from faaq_onnx.cli import main
from tests.conftest import _save, build_tiny_cnn, build_tiny_mlp

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# pages whose inline `--option` spans are faaq options (results pages also quote benchmark
# scripts' options, so only their `faaq …` commands are checked)
OPTION_SPAN_FILES = [p for p in DOC_FILES if "results" not in p.parts]

FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}


def _spans(text: str) -> tuple[list[str], list[str]]:
    """(lines of shell code blocks, joined at backslash continuations; inline code spans)."""
    lines, rest, pos = [], [], 0
    for m in FENCE.finditer(text):
        rest.append(text[pos : m.start()])
        pos = m.end()
        if m.group(1).lower() not in SHELL_FENCES:
            continue
        body = re.sub(r"\\\n\s*", " ", m.group(2))
        lines += [ln.strip() for ln in body.splitlines()]
    rest.append(text[pos:])
    spans = [s.replace("\\|", "|").strip() for part in rest for s in INLINE.findall(part)]
    return lines, spans


def faaq_commands(text: str) -> list[str]:
    """Every `faaq …` command in the shell blocks and inline code of a Markdown text."""
    lines, spans = _spans(text)
    cmds = []
    for ln in lines + spans:
        ln = re.sub(r"^\$\s+", "", ln)
        if re.match(r"faaq(\s+(-|[a-z])|$)", ln):  # not prose such as `faaq AdaRound 2000 it`
            cmds.append(ln.split("  #")[0].split(" # ")[0].strip())
    return cmds


def option_spans(text: str) -> list[str]:
    """Inline code spans that start with an option (`--optimize-inputs mixed`)."""
    return [s for s in _spans(text)[1] if re.match(r"-{1,2}[a-zA-Z]", s)]


def _tokens(cmd: str) -> list[str]:
    try:
        return shlex.split(cmd)
    except ValueError:
        return cmd.split()


def _options_in(tokens: list[str]) -> list[str]:
    opts = []
    for t in tokens:
        t = t.strip("[]()|,.;")
        if re.fullmatch(r"-{1,2}[a-zA-Z][\w-]*(=.*)?", t):
            opts.append(t.split("=")[0])
    return opts


def _accepted(cmd: click.Command) -> set[str]:
    names = {"--help"}
    for p in cmd.params:
        names.update(p.opts)
        names.update(p.secondary_opts)
    return names


def check_command(cmd: str, group: click.Group = main) -> list[str]:
    """What is wrong with one documented `faaq …` command: an unknown subcommand, or options
    that subcommand does not accept."""
    tokens = _tokens(cmd)[1:]
    words = [t for t in tokens if not t.startswith("-")]
    if not words:
        bad = [o for o in _options_in(tokens) if o not in _accepted(group)]
        return [f"faaq: no option {o}" for o in bad]
    sub = words[0]
    if sub not in group.commands:
        return [f"no subcommand {sub!r}"]
    accepted = _accepted(group.commands[sub])
    return [f"faaq {sub}: no option {o}" for o in _options_in(tokens) if o not in accepted]


def check_text(text: str, group: click.Group = main, option_spans_too: bool = True) -> list[str]:
    """Problems with every faaq command (and, optionally, every inline option span) in a text."""
    problems = [f"`{c}`: {p}" for c in faaq_commands(text) for p in check_command(c, group)]
    if option_spans_too:
        every = set().union(*(_accepted(c) for c in group.commands.values()))
        for span in option_spans(text):
            opts = _options_in(_tokens(span))
            for o in opts[:1] + [o for o in opts[1:] if o.startswith("--")]:
                if o not in every:
                    problems.append(f"`{span}`: no faaq subcommand has {o}")
    return problems


# --- the checker itself fails on what it must catch ---------------------------------------


def test_checker_reports_a_bogus_option_in_every_place_docs_put_commands():
    doc = (
        "```bash\nfaaq quantize m.onnx -o q.onnx --calib c.npz \\\n    --optimize-iterations 5\n```\n"
        "Inline: `faaq profile a.onnx --per-operator`, a table cell "
        "| `faaq eval a.onnx --data d.npz --per-klass` |, and `--bogus-flag 3`.\n"
        "```bash\nfaaq frobnicate x\n```\n"
        "```python\nfaaq quantize not-shell --ignored-in-python\n```\n"
    )
    problems = "\n".join(check_text(doc))
    for bad in (
        "--optimize-iterations",
        "--per-operator",
        "--per-klass",
        "--bogus-flag",
        "frobnicate",
    ):
        assert bad in problems
    assert "--ignored-in-python" not in problems
    assert check_text("`faaq quantize m -o q --calib c --no-reround --weight-asymmetric -q`") == []


def test_checker_fails_when_an_option_the_docs_use_is_renamed():
    """Rename --optimize-iters on a copy of the CLI: the README and docs now fail the check."""
    renamed = copy.deepcopy(main)
    q = renamed.commands["quantize"]
    opt = next(p for p in q.params if "--optimize-iters" in p.opts)
    opt.opts = ["--rounding-iters"]
    text = "\n".join(p.read_text() for p in DOC_FILES)
    assert any("--optimize-iters" in p for p in check_text(text, renamed))
    assert not any("--optimize-iters" in p for p in check_text(text, main))


# --- the real docs --------------------------------------------------------------------------


def test_docs_show_faaq_commands():
    readme = faaq_commands((ROOT / "README.md").read_text())
    assert (
        "pip install -c constraints.txt -e '.[dev]' && faaq demo --out out/demo"
        in (ROOT / "README.md").read_text()
    )
    assert "python -m pytest -q\n" in (ROOT / "README.md").read_text()
    assert len(readme) >= 12
    assert sum(len(faaq_commands(p.read_text())) for p in DOC_FILES) >= 40


@pytest.mark.parametrize("page", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_option_exists(page):
    problems = check_text(page.read_text(), option_spans_too=page in OPTION_SPAN_FILES)
    assert not problems, f"{page.relative_to(ROOT)}:\n" + "\n".join(problems)


# --- the README's quick start runs ----------------------------------------------------------

# README commands not run here, and why
NOT_RUN = {
    "demo": "trains a CNN (the set-up command; .ci/run and test_cli cover it)",
    "export resnet20-cifar10": "needs the checkpoint file",
    "--budget latency": "times every kernel class; covered by tests/analysis",
}
# cheaper settings for the tiny models (appended; click takes the last value)
CHEAPER = {
    "quantize": ["-q", "--optimize-iters", "20", "--calib-size", "32"],
    "analyze": ["-q", "--calib-size", "32", "--metrics", "sqnr", "--no-latency"],
    "reliability": ["-q", "--trials", "2", "--calib-size", "32"],
    "profile": ["--in-process", "--runs", "3", "--warmup", "1"],
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("quickstart")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 3, 16, 16)).astype(np.float32)
    np.savez(d / "calib.npz", input=x)
    np.savez(d / "tokens.npz", x=rng.standard_normal((64, 64)).astype(np.float32))
    pool = rng.standard_normal((128, 3, 16, 16)).astype(np.float32)  # 32 per draw + 64 held out
    np.savez(d / "labeled.npz", x=pool, y=rng.integers(0, 10, len(pool)))
    return {
        "model.onnx": _save(build_tiny_cnn(), d / "model.onnx"),
        "llm.onnx": _save(build_tiny_mlp(), d / "llm.onnx"),
        "calib.npz": str(d / "calib.npz"),
        "tokens.npz": str(d / "tokens.npz"),
        "test.npz": str(d / "labeled.npz"),
        "pool.npz": str(d / "labeled.npz"),
        "dir": d,
    }


def _quickstart() -> list[str]:
    """The README's faaq commands: every one in its shell blocks, and the inline ones that
    carry an option (`faaq export --list`), less NOT_RUN."""
    lines, spans = _spans((ROOT / "README.md").read_text())
    cmds = [ln for ln in lines if ln.startswith("faaq ")]
    cmds += [s for s in spans if s.startswith("faaq ") and " -" in s]
    return [c for c in cmds if not any(k in c for k in NOT_RUN)]


def _argv(cmd: str, files: dict, n: int) -> list[str]:
    d, tokens, out = files["dir"], _tokens(cmd)[1:], []
    for i, t in enumerate(tokens):
        if i and tokens[i - 1] == "-o":
            t = str(d / f"q{n}.onnx")  # every output goes to a fresh file
        elif t == "model.q.onnx":
            t = files["quantized"]  # a model an earlier quick-start command wrote
        elif t in files:
            t = files[t]
        elif t == "out/":
            t = str(d / f"report{n}")
        elif t == "bn-stats":
            t = "bn-stats:8"
        out.append(t)
    return out + CHEAPER.get(out[0], [])


def test_readme_quick_start_commands_run(files, monkeypatch):
    """Run every README quick-start command (on tiny models) in order; each must exit 0."""
    monkeypatch.setenv("FAAQ_CACHE_DIR", str(files["dir"] / "cache"))
    cmds = _quickstart()
    assert len(cmds) >= 10, cmds
    runner = CliRunner()
    ran = set()
    # the commands that read a quantized model run after the first quantize wrote one
    for n, cmd in enumerate(sorted(cmds, key=lambda c: "model.q.onnx" in c.split(" -o ")[0])):
        argv = _argv(cmd, files, n)
        t0 = time.perf_counter()
        r = runner.invoke(main, argv, catch_exceptions=False)
        print(f"{time.perf_counter() - t0:6.1f} s  faaq {' '.join(argv[:2])} …")
        if argv[0] == "quantize" and "model.q.onnx" in cmd:
            files.setdefault("quantized", argv[argv.index("-o") + 1])
        assert r.exit_code == 0, f"{cmd}\n-> faaq {' '.join(argv)}\n{r.output[-2000:]}"
        ran.add(argv[0])
    assert {"quantize", "analyze", "inspect", "profile", "eval", "reliability", "export"} <= ran


# --- the generated results pages ------------------------------------------------------------


def test_results_pages_render_from_benchmarks_out():
    """Every generated block of docs/results names a block benchmarks/write_docs.py knows, and
    renders from what benchmarks/out holds (whether the pages are current is
    `python benchmarks/write_docs.py --check`, not a test: benchmarks rewrite benchmarks/out)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "write_docs", ROOT / "benchmarks" / "write_docs.py"
    )
    wd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wd)
    used = set()
    for page in sorted((ROOT / "docs" / "results").glob("*.md")):
        text = page.read_text()
        names = wd.BEGIN.findall(text)
        used.update(names)
        assert all(n in wd.BLOCKS for n in names), (page, names)
        rendered = wd.render(text)
        assert "<!-- END generated" in rendered or not names
        if not names:  # a page with no generated block says it is hand-written
            assert "hand-written" in text, page
    assert used == set(wd.BLOCKS)


@pytest.mark.parametrize("page", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    """Every relative Markdown link of README.md and docs/ points at a file that exists."""
    text = FENCE.sub("", page.read_text())
    missing = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(ROOT)}: {missing}"
