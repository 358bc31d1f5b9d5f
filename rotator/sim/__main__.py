"""``python -m rotator.sim ...``: the same as ``rotator sim ...``."""

from __future__ import annotations

import argparse
import sys

from rotator.sim.cli import add_arguments, run


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m rotator.sim", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
