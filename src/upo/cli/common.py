"""What every `upo` command group shares: the one-line error contract and the parser that keeps
it, the command line recorded in what a command writes, and checks used by several groups.

Only the standard library and upo.errors here: `upo --help` and a mistyped flag should not wait
for numpy or torch to import.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from ..errors import UpoError

INTERRUPTED = "upo: interrupted; resume with --resume where the command supports it"


def command_line() -> str:
    """The command as the user typed it, quoted so that it can be pasted back into a shell;
    trainers record it in their checkpoints' metadata."""
    return "upo " + " ".join(shlex.quote(a) for a in sys.argv[1:])


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line, like every other upo error."""

    def error(self, message: str):
        self.exit(2, f"upo: error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def run_guarded(func, args) -> int:
    """func(args), with every failure turned into one line on stderr and an exit status."""
    try:
        return func(args)
    except UpoError as err:
        print(f"upo: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, permission denied, ... on a path the user gave
        where = f"{err.filename}: " if err.filename else ""
        print(f"upo: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except Exception as err:
        # A bug, not a user error: still one line, with the traceback on request.
        if os.environ.get("UPO_DEBUG"):
            raise
        what = str(err).splitlines()[0] if str(err) else ""
        print(
            f"upo: internal error: {type(err).__name__}: {what} (UPO_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
