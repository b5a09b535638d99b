"""Probe stages, run inside gpuprobe child processes (they may import torch, dflex, pwm)."""
