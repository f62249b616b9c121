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


def _add_preprocess(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preprocess",
        help="crop, clean, equalise and resize scanner frames for the network",
        description="Preprocess every image of IN_DIR (see thyroidseg.preprocess.preprocess) "
        "into OUT_DIR/<stem>.png and write the boxes, views, scales and padding of every "
        "image to OUT_DIR/preprocess.json. An unreadable image is an error (exit status 2).",
    )
    parser.add_argument("in_dir", metavar="IN_DIR", help="folder of scanner frames")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created)")
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(256, 256),
        metavar=("H", "W"),
        help="network height and width (default: 256 256)",
    )
    parser.add_argument("--no-crop", action="store_true", help="keep the whole frame")
    parser.add_argument(
        "--margin",
        type=int,
        default=None,
        help="pixels kept around the scan region (default: the library's, 6)",
    )
    parser.add_argument(
        "--no-inpaint", action="store_true", help="keep text and caliper marks in the image"
    )
    parser.add_argument(
        "--equalization",
        choices=["clahe", "global", "none"],
        default="clahe",
        help="histogram equalisation (default: clahe)",
    )
    parser.add_argument(
        "--smoothing",
        choices=["median", "gaussian", "bilateral", "none"],
        default="median",
        help="speckle smoothing (default: median)",
    )
    parser.add_argument(
        "--resize-mode",
        choices=["letterbox", "stretch"],
        default="letterbox",
        help="keep the aspect ratio and pad (letterbox, default) or stretch",
    )
    parser.add_argument(
        "--json", metavar="FILE", help="JSON path (default: OUT_DIR/preprocess.json)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run_preprocess)


def _run_preprocess(args: argparse.Namespace) -> int:
    from thyroidseg.preprocess import preprocess_folder

    options: dict[str, object] = {
        "size": tuple(args.size),
        "crop": not args.no_crop,
        "inpaint_annotations": not args.no_inpaint,
        "equalization": None if args.equalization == "none" else args.equalization,
        "smoothing": None if args.smoothing == "none" else args.smoothing,
        "resize_mode": args.resize_mode,
    }
    if args.margin is not None:
        options["margin"] = args.margin
    summary = preprocess_folder(
        args.in_dir,
        args.out_dir,
        json_path=args.json,
        progress=False if args.quiet else None,
        **options,
    )
    print(f"preprocessed {len(summary['images'])} images into {args.out_dir}")
    return 0


# Sub-commands register here, in the order `thyroidseg --help` lists them.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_evaluate, _add_preprocess]
