"""The ``thyroidseg`` command line (also ``python -m thyroidseg``).

Each sub-command is a pair: ``_add_<name>(subparsers)`` declares its arguments and
``_run_<name>(args) -> int`` does the work through the public library API. Errors from
bad input (missing or unreadable files, size mismatches, ...) are printed as one
``thyroidseg <command>: error: ...`` line and give exit status 2; nothing is skipped silently.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from thyroidseg._version import __version__

Runner = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="thyroidseg",
        description="Thyroid nodule segmentation in ultrasound: preprocess, train, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"thyroidseg {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Runner = args.run
    try:
        return run(args)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"thyroidseg {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"thyroidseg {args.command}: interrupted", file=sys.stderr)
        return 130


# Sub-commands register here, in the order `thyroidseg --help` lists them.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []
