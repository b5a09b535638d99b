"""python -m gpuprobe_pwm plots|tidy ...  (training itself: python -m gpuprobe_pwm.train ...)"""
from __future__ import annotations

import argparse
import logging
import sys

from gpuprobe_pwm import plots, tidy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpuprobe_pwm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plots", help="write PNG plots of a run", description=plots.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    plots.add_arguments(p)
    p.set_defaults(func=plots.command)
    t = sub.add_parser("tidy", help="move old upstream PWM_iter checkpoints aside", description=tidy.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    tidy.add_arguments(t)
    t.set_defaults(func=tidy.command)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
