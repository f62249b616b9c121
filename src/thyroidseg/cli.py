"""The ``thyroidseg`` command line (also ``python -m thyroidseg``).

Each sub-command is a pair: ``_add_<name>(subparsers)`` declares its arguments and
``_run_<name>(args) -> int`` does the work through the public library API. Errors from
bad input (missing or unreadable files, size mismatches, ...) are printed as one
``thyroidseg <command>: error: ...`` line and give exit status 2; nothing is skipped silently.
"""

from __future__ import annotations

import argparse
import json
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


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score predicted masks against reference masks",
        description="Pair PRED_DIR and LABEL_DIR masks by file stem (any image extension) and "
        "print nodule IoU/Dice (pooled and per image with a bootstrap 95% CI), per-class "
        "metrics, pixel accuracy, HD95 and normalised surface Dice. Unpaired files and size "
        "mismatches are errors (exit status 2).",
    )
    parser.add_argument("pred_dir", metavar="PRED_DIR", help="folder of predicted masks")
    parser.add_argument("label_dir", metavar="LABEL_DIR", help="folder of reference masks")
    parser.add_argument("--json", metavar="FILE", help="also write every result as JSON")
    parser.add_argument("--csv", metavar="FILE", help="also write one CSV row per image")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="foreground iff pixel value > THRESHOLD (default: any non-zero value; "
        "use e.g. 127 for JPEG masks)",
    )
    parser.add_argument(
        "--resize-labels",
        action="store_true",
        help="resize labels whose size differs from the prediction (nearest neighbour) "
        "instead of failing",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=2.0,
        help="normalised surface Dice tolerance, in pixels or spacing units (default: 2)",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        metavar="SIZE",
        default=None,
        help="pixel size for HD95/NSD: one number, or row and column size (default: pixels)",
    )
    parser.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from thyroidseg._io import atomic_write_bytes
    from thyroidseg.metrics import evaluate_folders

    if args.spacing is not None and len(args.spacing) > 2:
        raise ValueError(f"--spacing takes one or two numbers, got {len(args.spacing)}")
    spacing = args.spacing
    if spacing is not None:
        spacing = spacing[0] if len(spacing) == 1 else tuple(spacing)
    result = evaluate_folders(
        args.pred_dir,
        args.label_dir,
        threshold=args.threshold,
        resize_labels=args.resize_labels,
        tolerance=args.tolerance,
        spacing=spacing,
    )
    print(result.report())
    if args.json:
        text = json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"
        atomic_write_bytes(args.json, text.encode())
    if args.csv:
        atomic_write_bytes(args.csv, result.to_csv().encode())
    return 0


# Sub-commands register here, in the order `thyroidseg --help` lists them.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_evaluate]
