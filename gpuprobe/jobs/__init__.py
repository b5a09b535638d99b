"""The user's own jobs: find them (a PID, a SLURM job), observe them from outside, watch them.

Everything here runs on the parent side, outside the job, and never imports torch: it
reads /proc, cgroups, SLURM and py-spy, so it works on any job and cannot hang with it.
"""
