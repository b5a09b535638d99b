"""Exit codes, shared by every command (documented in README and ``gpuprobe --help``)."""

from __future__ import annotations

OK = 0                # every stage passed (or was skipped with a reason)
FAILED = 1            # a stage failed (exception) or crashed (signal, exit without result)
USAGE = 2             # bad option, bad input file, results folder not writable
HANG = 3              # a stage hung, was too slow to finish, or could not be killed
INCOMPATIBLE = 4      # preflight: this node's stack is known to be incompatible
TEMPFAIL = 75         # preflight: no evidence (with --strict) or a transient condition (EX_TEMPFAIL)
INTERRUPTED = 130     # Ctrl-C

HELP_ROWS = (
    ("0", "all stages passed (skips included); preflight: ok"),
    ("1", "a stage failed or crashed"),
    ("2", "usage or input error (bad option, corrupt file, results folder not writable)"),
    ("3", "a stage hung, was too slow to finish, or could not be killed"),
    ("4", "preflight: this node's stack is known to be incompatible"),
    ("75", "preflight: no evidence (with --strict) or transient; retry elsewhere"),
)
HELP_TEXT = "; ".join(f"{code} {text}" for code, text in HELP_ROWS)
