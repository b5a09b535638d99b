"""``python -m gpuprobe`` is the ``gpuprobe`` command."""

from gpuprobe.cli import main

main()
