"""The `upo` command. Every user-facing failure is one line on stderr and exit code 2."""

# One module per command group (mdm, demo, data, eval, policy, plot), each adding its sub-commands with
# `register(sub)`; what they share is in cli/common.py. This module stays light (the docstring
# above is `upo --help`'s description): the groups import numpy and torch, so they are imported
# only once a command line is being parsed, inside main's Ctrl-C guard.

from __future__ import annotations

import argparse
import sys

from .common import INTERRUPTED, Parser, run_guarded

__all__ = ["build_parser", "main", "run_guarded"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from . import data, demo, eval, mdm, plot, policy

    parser = Parser(prog="upo", description=__doc__)
    parser.add_argument("--version", action="version", version=f"upo {__version__}")
    sub = parser.add_subparsers(dest="group", required=True)
    for group in (mdm, demo, data, eval, policy, plot):  # the order `upo --help` lists them in
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C can come before run_guarded is reached: building the parser imports the command
    # modules (numpy, torch), which takes the first moments of every run.
    try:
        args = build_parser().parse_args(argv)
        return run_guarded(args.func, args)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
