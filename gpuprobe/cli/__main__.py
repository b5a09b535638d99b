"""``python -m gpuprobe.cli`` is the ``gpuprobe`` command too."""

from gpuprobe.cli.preflight import console_main

console_main()
