"""The shipped known-issue rules (see DESIGN.md, "Known-issue signatures")."""

from __future__ import annotations

from gpuprobe.signatures import Signature

RULES: list[Signature] = []
