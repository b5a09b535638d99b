"""Untrusted text made inert for each view: the terminal, rich, Markdown and HTML.

Every string in a result file is untrusted: marks, exceptions, stacks, hostnames, GPU
names and process command lines come from other processes, other nodes or hand-edited
files. A view must show such text as text, never act on it:

- terminal: escape sequences (``\\x1b]0;title\\x07`` retitles the window, ``\\x1b[2J``
  clears it) and other control characters are removed; newlines and tabs stay;
- rich: text goes in as :class:`rich.text.Text`, or through :func:`markup` where rich wants
  markup, so ``[/x]`` is shown, not parsed (rich raises ``MarkupError`` on it);
- Markdown: ``|``, backticks, brackets, backslashes and HTML (``<script>``) are escaped, a
  fenced block gets a fence longer than any backtick run inside it;
- HTML: jinja2's autoescape, with :func:`terminal` as the templates' ``finalize``.

JSON needs nothing here: ``json.dumps`` escapes control characters.
"""

from __future__ import annotations

import re
from typing import Any

# ESC-introduced sequences: OSC (ESC ] ... BEL or ESC \), DCS/SOS/PM/APC strings, CSI (ESC [ ...),
# and two-character escapes; then the 8-bit C1 forms (CSI as \x9b ...), then single controls.
_ESCAPE_SEQUENCES = re.compile(
    r"\x1b[\]PX^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b[ -/]*[0-~]?"
    r"|\x9b[0-?]*[ -/]*[@-~]?"
    r"|[\x90\x98\x9d\x9e\x9f][^\x07\x9c]*(?:\x07|\x9c)?"
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MD_SPECIAL = re.compile(r"([\\`|\[\]])")
_MD_HTML = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}


def terminal(value: object) -> str:
    """``value`` as text a terminal shows and never acts on (newlines and tabs kept)."""
    text = value if isinstance(value, str) else str(value)
    return _CONTROLS.sub("", _ESCAPE_SEQUENCES.sub("", text))


def one_line(value: object) -> str:
    """:func:`terminal`, on one line (a table cell, a list item)."""
    return " ".join(terminal(value).split())


def tree(value: Any) -> Any:
    """A copy of a result document (dicts, lists, strings) with :func:`terminal` applied to
    every string, keys included: what the terminal views render."""
    if isinstance(value, str):
        return terminal(value)
    if isinstance(value, dict):
        return {tree(k): tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [tree(v) for v in value]
    return value


def markup(value: object) -> str:
    """Text for a place that takes rich markup (a table cell or title given as ``str``)."""
    from rich.markup import escape

    return escape(terminal(value))   # escape() also doubles a trailing backslash


def rich_text(value: object, style: str = "") -> Any:
    """A :class:`rich.text.Text` of ``value``: rich never parses it as markup."""
    from rich.text import Text

    return Text(terminal(value), style=style)


def markdown(value: object) -> str:
    """Inline Markdown (a table cell, a list item) showing ``value`` literally: no table break,
    no code span, no link, no raw HTML."""
    text = one_line("-" if value is None else value)
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return "".join(_MD_HTML.get(c, c) for c in text)


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def code_span(value: object) -> str:
    """``value`` as an inline code span that its own backticks cannot close (CommonMark)."""
    text = one_line(value)
    ticks = "`" * (_longest_backtick_run(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def code_block(value: object) -> list[str]:
    """``value`` as the lines of a fenced block whose fence nothing inside can close."""
    text = terminal(value).rstrip()
    fence = "`" * max(3, _longest_backtick_run(text) + 1)
    return [fence, text, fence]


def html_finalize(value: Any) -> Any:
    """jinja2 ``finalize``: strings lose control characters before autoescape escapes them."""
    return terminal(value) if isinstance(value, str) else value
