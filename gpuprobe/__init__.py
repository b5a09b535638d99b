"""gpuprobe: staged GPU compatibility probes with hang forensics.

The parent side (everything in this package except ``gpuprobe.child.stage`` when it runs
inside a stage process) never imports torch: a hung CUDA context must not take the
tool down with it.
"""

__version__ = "0.1.0"
