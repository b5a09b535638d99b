"""``python -m gpuprobe.cli`` is the ``gpuprobe`` command too."""

from gpuprobe.cli.main import main

main()
