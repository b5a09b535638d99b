"""Exit codes, and the base of the errors a command turns into one of them.

Each command lists in its ``--help`` the codes *it* can return (see
:mod:`gpuprobe.cli.common`), with its own words where a code means something specific
to it (``sweep``'s 75 is "the wait timed out", ``preflight``'s is "no evidence").
"""

from __future__ import annotations

OK = 0                # every stage passed (or was skipped with a reason)
FAILED = 1            # a stage failed (exception) or crashed (signal, exit without result)
USAGE = 2             # bad option, bad input file, results folder not writable
HANG = 3              # a stage hung, was too slow to finish, or could not be killed
INCOMPATIBLE = 4      # preflight: this node's stack is known to be incompatible
TEMPFAIL = 75         # retry later or elsewhere (EX_TEMPFAIL): preflight no evidence/transient, sweep wait timeout
INTERRUPTED = 130     # Ctrl-C


class UsageProblem(Exception):
    """A library error that is the user's input, not a bug: one line on stderr, exit 2.

    Library modules raise subclasses (a bad results folder, a corrupt result file, a bad
    preflight or matrix argument); ``gpuprobe.cli.main.main`` maps them to ``exit_code``
    without importing the modules that define them.
    """

    exit_code = USAGE
