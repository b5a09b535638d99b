"""Untrusted text is inert in every view.

A mark name, an exception, a hostname and a GPU name holding rich markup (``[/x]``), a
terminal escape (``\\x1b]0;t\\x07`` retitles the window), HTML (``<script>``), a table's
``|`` and a code fence are shown as text: no crash, nothing a terminal acts on, no broken
table or fence, no raw HTML. Static views read a result file built by result_factory; the
live view gets the same text through its own entry points, and a real run gets it through
the hostname (set in a UTS namespace of its own, where the machine allows one).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from markdown_it import MarkdownIt

from gpuprobe.cli.main import cli
from gpuprobe.store.results import Mark, StageResult
from result_factory import make_result

ROOT = Path(__file__).resolve().parent.parent
EVIL = "[/x] \x1b]0;t\x07 <script>alert(1)</script> a|b ``` [bold]"
HOST = "h[/x]\x1b]0;t\x07<script>|b"      # sethostname takes any bytes, up to 64
# what EVIL would make a terminal do: an OSC sequence (the window's title) and its BEL; rich's own
# colours and the live line's cursor moves are fine
TERMINAL_ACTS = re.compile(r"\x1b\]|\x07")


def hostile_result(folder: Path) -> Path:
    path = make_result(folder, "l40s", "node-1", {"cuda": "pass", "buffer": "hang"}, run_id="hostile-run")
    doc = json.loads(path.read_text())
    doc["fingerprint"]["hostname"] = "node" + EVIL
    doc["fingerprint"]["gpus"][0]["name"] = "NVIDIA " + EVIL
    stage = doc["stages"][1]
    stage["marks"][-1]["name"] = "mark" + EVIL
    stage["last_mark"] = "mark" + EVIL
    stage["reason"] = "no progress at mark" + EVIL
    stage["error"] = {"type": "RuntimeError", "message": "boom" + EVIL,
                      "traceback": "Traceback (most recent call last):\nRuntimeError: boom" + EVIL}
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile")
    hostile_result(out)
    return out


def invoke(args: list[str], tty: bool) -> str:
    env = {"COLUMNS": "220", "TTY_COMPATIBLE": "1" if tty else "0"}
    res = CliRunner(env=env).invoke(cli, args, catch_exceptions=True)
    assert res.exception is None or isinstance(res.exception, SystemExit), (
        f"gpuprobe {' '.join(args)} raised {res.exception!r}")
    assert res.exit_code == 0, res.output
    return res.output


def assert_terminal_safe(text: str) -> None:
    assert not TERMINAL_ACTS.search(text), f"a sequence the terminal acts on: {TERMINAL_ACTS.search(text)!r}"
    assert "[/x]" in text                     # shown as it is, not parsed as markup


TERMINAL_VIEWS = {
    "show": ["show", "latest"], "show --verbose": ["show", "latest", "--verbose"],
    "matrix": ["matrix"], "matrix --by node": ["matrix", "--by", "node"],
}


@pytest.mark.parametrize("tty", [True, False], ids=["terminal", "pipe"])
@pytest.mark.parametrize("view", list(TERMINAL_VIEWS))
def test_terminal_views(folder, view, tty):
    out = invoke([*TERMINAL_VIEWS[view], "--results", str(folder)], tty)
    assert_terminal_safe(out)
    if view.startswith("show"):
        assert "mark[/x]" in out and "boom[/x]" in out and "node[/x]" in out


def rendered(md: str) -> str:
    """The HTML a Markdown viewer makes of ``md``, raw HTML allowed (as GitHub's escaping would not save us)."""
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(md)


def assert_tables_intact(md: str) -> None:
    """Every row of each table has as many unescaped ``|`` as its header."""
    header = None
    for ln in md.splitlines():
        if not ln.startswith("|"):
            header = None
            continue
        pipes = len(re.findall(r"(?<!\\)\|", ln))
        header = header or pipes
        assert pipes == header, f"a cell broke its table: {ln!r}"


@pytest.mark.parametrize("args", [["matrix", "--format", "markdown"], ["matrix", "--by", "node", "--format", "markdown"],
                                  ["report", "latest", "--format", "markdown"]], ids=["matrix", "matrix-node", "report"])
def test_markdown_views(folder, args):
    md = invoke([*args, "--results", str(folder)], tty=False)
    assert not TERMINAL_ACTS.search(md)
    assert_tables_intact(md)
    html = rendered(md)
    assert "<script" not in html and "&lt;script&gt;" in html
    if args[0] == "report":
        # the error's fence holds, backticks and all: the whole message is in one code block
        blocks = re.findall(r"<pre><code>(.*?)</code></pre>", html, re.S)
        assert any("RuntimeError: boom[/x]" in b and "``` [bold]" in b for b in blocks), blocks
        assert "<td>mark[/x]" in html                  # the timeline's mark, in its own cell


@pytest.mark.parametrize("args", [["matrix", "--format", "html"], ["matrix", "--by", "node", "--format", "html"],
                                  ["report", "latest", "--format", "html"]], ids=["matrix", "matrix-node", "report"])
def test_html_views(folder, args):
    html = invoke([*args, "--results", str(folder)], tty=False)
    assert "<script" not in html and "&lt;script&gt;" in html
    assert "\x1b" not in html and "\x07" not in html


def test_json_and_prometheus_views(folder):
    text = invoke(["matrix", "--by", "node", "--format", "json", "--results", str(folder)], tty=False)
    assert "\x1b" not in text and "\x07" not in text           # escaped by json, kept as data
    assert any(r["key"].get("hostname") == "node" + EVIL for r in json.loads(text)["rows"])
    shown = invoke(["show", "latest", "--json", "--results", str(folder)], tty=False)
    assert json.loads(shown)["stages"][1]["last_mark"] == "mark" + EVIL
    prom = invoke(["matrix", "--by", "node", "--format", "prom", "--results", str(folder)], tty=False)
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", prom)
    sample = re.compile(r'^[a-z_]+(\{[a-z_]+="(?:[^"\\\n]|\\.)*"(?:,[a-z_]+="(?:[^"\\\n]|\\.)*")*\})? \S+$')
    for ln in prom.splitlines():
        assert ln.startswith("# ") or sample.match(ln), f"not one Prometheus sample: {ln!r}"
    assert 'host="node[/x]  <script>alert(1)</script> a|b ``` [bold]"' in prom


def test_live_view(tmp_path):
    """The run's live line, its per-stage lines and the final view, on a terminal."""
    from rich.console import Console

    from gpuprobe.cli.console import LiveProgress, print_run
    from gpuprobe.run import stages
    from gpuprobe.store.results import read_result

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, highlight=False)
    live = LiveProgress(console, stages.plan("buffer", only=True))
    live.event("buffer", None, {"ev": "mark", "name": "mark" + EVIL})
    console.print(live)                                    # one tick of the live line
    res = StageResult(stage="buffer", status="fail", device="cpu", reason="boom" + EVIL, duration_s=1.0,
                      marks=[Mark("mark" + EVIL, 0.5)])
    res.error = {"type": "RuntimeError", "message": "boom" + EVIL, "traceback": "RuntimeError: boom" + EVIL}
    live.stage_done(res)
    print_run(console, read_result(hostile_result(tmp_path)), verbose=True)
    text = out.getvalue()
    assert_terminal_safe(text)
    assert "mark[/x]" in text and "boom[/x]" in text


def _can_set_hostname() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-u", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_set_hostname(), reason="no UTS namespace here (unshare -u needs CAP_SYS_ADMIN)")
def test_a_real_run_on_a_hostile_hostname(tmp_path):
    import os

    wrapper = ("import ctypes, os, sys\n"
               f"name = {HOST!r}.encode()\n"
               "assert ctypes.CDLL(None, use_errno=True).sethostname(name, len(name)) == 0\n"
               "os.execv(sys.executable, [sys.executable, '-m', 'gpuprobe', *sys.argv[1:]])\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_")}
    env.update({"PYTHONPATH": str(ROOT), "TTY_COMPATIBLE": "1", "COLUMNS": "200",
                "GPUPROBE_FAILPOINTS": "nvml.init=raise"})
    results = tmp_path / "r"
    run = subprocess.run(["unshare", "-u", sys.executable, "-c", wrapper, "run", "--only", "--stage", "nvml",
                          "--device", "cpu", "--no-fork-server", "--results", str(results)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert run.returncode == 1, run.stderr            # the drill's failure, not a crash of ours
    assert_terminal_safe(run.stdout + run.stderr)
    [path] = results.glob("*.result.json")            # the hostname's "/" made no folder of the run id
    assert json.loads(path.read_text())["fingerprint"]["hostname"] == HOST
    info = subprocess.run(["unshare", "-u", sys.executable, "-c", wrapper, "info"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)
    assert info.returncode == 0, info.stderr
    assert_terminal_safe(info.stdout)


def test_preflight_view(folder):
    """Judging the hostile node from its own result file: the answer names it, inertly."""
    from click.testing import CliRunner

    [path] = folder.glob("*.result.json")
    for fmt in ("text", "prom"):
        res = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["preflight", "--fingerprint", str(path), "--results",
                                                             str(folder), "--format", fmt])
        assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
        assert res.exit_code in (0, 4), res.output
        assert "\x1b" not in res.output and "\x07" not in res.output
        if fmt == "text":
            assert "node[/x]" in res.output


@pytest.mark.parametrize("raw, shown", [
    ("a\x1b]0;title\x07b", "ab"),                 # OSC ended by BEL
    ("a\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\b", "alinkb"),   # OSC 8 hyperlink, ended by ST
    ("a\x1b[2J\x1b[31mb\x1b[0m", "ab"),           # CSI: clear screen, colours
    ("a\x9b2Jb\x9d0;t\x9cc", "abc"),              # the 8-bit C1 forms
    ("a\rb\x08c\x00d", "abcd"),                   # carriage return, backspace, NUL
    ("line 1\n\tline 2", "line 1\n\tline 2"),     # newlines and tabs stay
])
def test_terminal_strips_what_a_terminal_acts_on(raw, shown):
    from gpuprobe import textsafe

    assert textsafe.terminal(raw) == shown


def test_markdown_code_spans_and_fences_hold():
    from gpuprobe import textsafe

    html = rendered(f"x {textsafe.code_span('a ``` b ` c')} y\n\n" + "\n".join(textsafe.code_block("```\n````\n<b>")))
    assert "<code>a ``` b ` c</code>" in html
    assert "<pre><code>```\n````\n&lt;b&gt;\n</code></pre>" in html
    assert rendered(textsafe.markdown("[a](javascript:x) <b>|</b>")).strip() == \
        "<p>[a](javascript:x) &lt;b&gt;|&lt;/b&gt;</p>"
