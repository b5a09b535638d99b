"""``python -m gpuprobe`` is the ``gpuprobe`` command (the same entry as the script)."""

from gpuprobe.cli.main import main

main()
