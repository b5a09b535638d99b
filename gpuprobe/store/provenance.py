"""How a result was obtained: the one vocabulary every writer stamps and every reader trusts.

A result is evidence about a node only when it was obtained from that node for real. A fire
drill (a failpoint made the stage misbehave) or a simulation (an NVML fake, an emulated GPU,
``--free-memory-gb``) tests gpuprobe itself, never the node, so readers keep them apart:

* ``probed``    gpuprobe ran the stage on the node;
* ``observed``  a real job was watched (``gpuprobe attach`` / ``watch``);
* ``reported``  a field report, written down by a person (scripts/record_field_report.py);
* ``static``    the kernel check judged the stack's binaries (``gpuprobe kernels --save``);
* ``drill``     any failpoint was active (``GPUPROBE_FAILPOINTS``);
* ``simulated`` an NVML fake, an emulated GPU or a forced free-memory figure answered.

Only :data:`EVIDENCE` can condemn a node (preflight, the trainer's gate); ``gpuprobe matrix``
hides :data:`EXERCISES` unless asked (``--provenance all``) and labels them when shown.
This module imports nothing: the runner, the readers and the views all take the words from here.
"""

from __future__ import annotations

PROBED, OBSERVED, REPORTED, STATIC = "probed", "observed", "reported", "static"
DRILL, SIMULATED = "drill", "simulated"

PROVENANCES = (PROBED, OBSERVED, REPORTED, STATIC, DRILL, SIMULATED)
# real evidence about the node: what preflight and the trainer's gate judge by
EVIDENCE = (PROBED, OBSERVED, REPORTED, STATIC)
# exercises of gpuprobe itself: hidden by default, labelled wherever shown
EXERCISES = (DRILL, SIMULATED)
ALL = "all"   # ``matrix --provenance all``: every provenance, exercises labelled

FAILPOINTS_ENV = "GPUPROBE_FAILPOINTS"    # the child's failpoints (gpuprobe.child.failpoints.ENV)
FAKE_NVML_ENV = "GPUPROBE_FAKE_NVML"      # the NVML fakes (gpuprobe.node.nvml.FAKE_ENV)


def resolve(run_kind: object, stage_kind: object = None, *, failpoints: bool = False,
            simulated: bool = False) -> str:
    """One result's provenance, from what its file says and what it shows.

    An exercise always wins over what the file claims: older files (and writers that
    forget) stored fire drills as ``probed``, and a drill must never pass for evidence.
    A drill outranks a simulation: a failpoint decided the outcome, whatever NVML said.
    """
    if failpoints or run_kind == DRILL or stage_kind == DRILL:
        return DRILL
    if simulated or run_kind == SIMULATED or stage_kind == SIMULATED:
        return SIMULATED
    for kind in (stage_kind, run_kind):
        if kind in PROVENANCES:
            return kind  # type: ignore[return-value]
    return PROBED   # schema-1 files before provenance was recorded: gpuprobe probed them


def label(kind: str) -> str:
    """What a view prints beside an exercise ("drill", "simulated"); empty for evidence."""
    return kind if kind in EXERCISES else ""
