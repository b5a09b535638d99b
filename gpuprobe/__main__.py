"""``python -m gpuprobe`` is the ``gpuprobe`` command (the same entry as the script)."""

from gpuprobe.cli.preflight import console_main

console_main()
