"""The ``thyroidseg`` command line (also ``python -m thyroidseg``).

Each sub-command is a pair: ``_add_<name>(subparsers)`` declares its arguments and
``_run_<name>(args) -> int`` does the work through the public library API. ``train`` and
``demo`` are split: their parsers are `thyroidseg.cli.train`'s and their runners
`thyroidseg.cli.run_training`'s, imported only when one of them runs (``_RUN_LATER``), so
that the command line loads the training code for them alone. Errors from
bad input (missing or unreadable files, size mismatches, ...) are printed as one
``thyroidseg <command>: error: ...`` line and give exit status 2; nothing is skipped silently.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import sys
import warnings
from collections.abc import Callable, Sequence

import cv2
import torch

from thyroidseg._version import __version__
from thyroidseg.cli.info import format_system_info, system_info
from thyroidseg.cli.options import (
    add_model_options,
    add_quiet_option,
    add_size_option,
    add_speed_options,
    add_threads_option,
    check_file_folders,
    cli_words,
    default,
    exported_model,
    load_onnx_segmenter,
    load_segmenter,
    one_line_warning,
    pixel_spacing_option,
    progress,
    set_threads,
)
from thyroidseg.cli.train import add_demo, add_train
from thyroidseg.inference.folders import predict_folder
from thyroidseg.inference.refine import Refiner
from thyroidseg.inference.shards import merge_shards
from thyroidseg.io.files import atomic_write_bytes, list_images, write_csv
from thyroidseg.io.outputs import check_outputs
from thyroidseg.metrics.evaluation import evaluate_folders
from thyroidseg.models.export import cascade_paths, export_cascade, export_onnx, export_torchscript
from thyroidseg.preprocessing.geometry import RESIZE_MODES
from thyroidseg.preprocessing.intensity import EQUALIZE_METHODS, SMOOTH_METHODS
from thyroidseg.preprocessing.pipeline import preprocess, preprocess_folder

__all__ = ["build_parser", "main"]

_Runner = Callable[[argparse.Namespace], int]

_RUN_LATER: dict[str, str] = {
    "demo": "thyroidseg.cli.run_training",
    "train": "thyroidseg.cli.run_training",
}
"""Commands whose runner ``run_<command>`` imports the training code: their module is
imported only when one of them runs, so the other commands never load it."""


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
    for command in (parser, *subparsers.choices.values()):
        if sys.version_info >= (3, 14):  # "did you mean" for a mistyped command or choice
            command.suggest_on_error = True
        command.set_defaults(command_parser=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # the command's own usage, not the top level's
        args.command_parser.error(_unrecognized(args.command_parser, unknown))
    run = _runner(args)
    previous, warnings.formatwarning = warnings.formatwarning, one_line_warning
    threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        set_threads(getattr(args, "threads", None))
        return run(args)
    except (OSError, ValueError, RuntimeError, ImportError) as error:
        print(f"thyroidseg {args.command}: error: {cli_words(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"thyroidseg {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:  # as they were: main() may run inside another program (or a test)
        warnings.formatwarning = previous
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])


def _runner(args: argparse.Namespace) -> _Runner:
    """The function that runs ``args.command``: set by its parser, or imported now."""
    if args.command in _RUN_LATER:
        module = importlib.import_module(_RUN_LATER[args.command])
        run: _Runner = getattr(module, f"run_{args.command}")
        return run
    return args.run


_REMOVED_OPTIONS: dict[str, dict[str, str]] = {
    "thyroidseg train": {"--out": "give the run folder as RUN_DIR (train DATA_DIR RUN_DIR)"},
    "thyroidseg evaluate": {"--spacing": "use --pixel-spacing"},
}
"""The 0.1 options removed in 0.3, per command (its parser's ``prog``) -> what replaces them
(`_unrecognized` says it instead of guessing the closest option)."""


def _unrecognized(parser: argparse.ArgumentParser, unknown: Sequence[str]) -> str:
    """argparse's message for ``unknown`` arguments, with the closest options of ``parser``
    (for an option removed in 0.3, what replaces it instead)."""
    options = [name for action in parser._actions for name in action.option_strings]
    removed = _REMOVED_OPTIONS.get(parser.prog, {})
    guesses, gone = {}, {}
    for word in unknown:
        name = word.partition("=")[0]
        if name in removed:
            gone[name] = f"{name} was removed in 0.3: {removed[name]}"
            continue
        close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
        if word.startswith("-") and close:
            guesses[word] = close[0]
    hints = [
        f"{guess} for {word}" if len(guesses) > 1 else guess for word, guess in guesses.items()
    ]
    return (
        f"unrecognized arguments: {' '.join(unknown)}"
        + "".join(f"; {why}" for why in gone.values())
        + (f"; did you mean {', '.join(hints)}?" if hints else "")
    )


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score predicted masks against reference masks",
        description="Pair PRED_DIR and LABEL_DIR masks by file stem (any image extension) and "
        "print nodule IoU/Dice (pooled and per image with a bootstrap 95% CI), per-class "
        "metrics, pixel accuracy, HD95 and normalised surface Dice. Unpaired files (unless "
        "--common-only), unreadable files and size mismatches are errors, each listed in full "
        "(exit status 2). The same folder given twice is a warning.",
    )
    parser.add_argument("pred_dir", metavar="PRED_DIR", help="folder of predicted masks")
    parser.add_argument("label_dir", metavar="LABEL_DIR", help="folder of reference masks")
    parser.add_argument("--json", metavar="FILE", help="also write every result as JSON")
    parser.add_argument("--csv", metavar="FILE", help="also write one CSV row per image")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --json/--csv file (never one of the masks)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="foreground iff pixel value > THRESHOLD (default: lossless masks must be "
        "binary, non-zero is nodule; JPEG masks > 127)",
    )
    parser.add_argument(
        "--resize-labels",
        action="store_true",
        help="resize labels whose size differs from the prediction (nearest neighbour) "
        "instead of failing",
    )
    parser.add_argument(
        "--common-only",
        action="store_true",
        help="score only the stems both folders have (e.g. a second reader who outlined "
        "some frames) and report how many each side left out, instead of failing",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=2.0,
        help="normalised surface Dice tolerance, in pixels or spacing units (default: 2)",
    )
    parser.add_argument(
        "--pixel-spacing",
        type=float,
        nargs="+",
        metavar="SIZE",
        default=None,
        help="pixel size for HD95/NSD: one number, or row and column size (default: pixels)",
    )
    add_threads_option(parser)
    parser.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    spacing = args.pixel_spacing
    if spacing is not None and len(spacing) > 2:
        raise ValueError(f"--pixel-spacing takes one or two numbers, got {len(spacing)}")
    if spacing is not None:
        spacing = spacing[0] if len(spacing) == 1 else tuple(spacing)
    masks = [*list_images(args.pred_dir).values(), *list_images(args.label_dir).values()]
    check_file_folders([args.json, args.csv])
    check_outputs([args.json, args.csv], inputs=masks, overwrite=args.overwrite)
    result = evaluate_folders(
        args.pred_dir,
        args.label_dir,
        threshold=args.threshold,
        resize_labels=args.resize_labels,
        tolerance=args.tolerance,
        pixel_spacing=spacing,
        common_only=args.common_only,
    )
    print(result.report())
    if args.json:
        text = json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"
        atomic_write_bytes(args.json, text.encode())
    if args.csv:
        write_csv(args.csv, result.per_image_rows())
    return 0


def _add_preprocess(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preprocess",
        help="crop, clean, equalise and resize scanner frames for the network",
        description="Preprocess every image of IN_DIR (see thyroidseg.preprocessing.preprocess) "
        "into OUT_DIR/<stem>.png and write the boxes, views, scales and padding of every "
        "image to OUT_DIR/preprocess.json. An unreadable image is an error (exit status 2), "
        "and so are existing outputs unless --overwrite.",
    )
    parser.add_argument("in_dir", metavar="IN_DIR", help="folder of scanner frames")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created)")
    add_size_option(parser, default(preprocess, "size"))
    parser.add_argument("--no-crop", action="store_true", help="keep the whole frame")
    parser.add_argument(
        "--margin",
        type=int,
        default=default(preprocess, "margin"),
        help=f"pixels kept around the scan region (default: {default(preprocess, 'margin')})",
    )
    parser.add_argument(
        "--no-inpaint", action="store_true", help="keep text and caliper marks in the image"
    )
    parser.add_argument(
        "--equalization",
        choices=[*EQUALIZE_METHODS, "none"],
        default=default(preprocess, "equalization"),
        help=f"histogram equalisation (default: {default(preprocess, 'equalization')})",
    )
    parser.add_argument(
        "--smoothing",
        choices=[*SMOOTH_METHODS, "none"],
        default=default(preprocess, "smoothing"),
        help=f"speckle smoothing (default: {default(preprocess, 'smoothing')})",
    )
    parser.add_argument(
        "--resize-mode",
        choices=RESIZE_MODES,
        default=default(preprocess, "resize_mode"),
        help="letterbox: keep the aspect ratio and pad; stretch: fill the frame (default: "
        f"{default(preprocess, 'resize_mode')})",
    )
    parser.add_argument(
        "--json", metavar="FILE", help="JSON path (default: OUT_DIR/preprocess.json)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing images and JSON in OUT_DIR"
    )
    add_quiet_option(parser)
    add_threads_option(parser)
    parser.set_defaults(run=_run_preprocess)


def _run_preprocess(args: argparse.Namespace) -> int:
    options: dict[str, object] = {
        "size": tuple(args.size),
        "crop": not args.no_crop,
        "inpaint_annotations": not args.no_inpaint,
        "equalization": None if args.equalization == "none" else args.equalization,
        "smoothing": None if args.smoothing == "none" else args.smoothing,
        "resize_mode": args.resize_mode,
        "margin": args.margin,
    }
    summary = preprocess_folder(
        args.in_dir,
        args.out_dir,
        json_path=args.json,
        overwrite=args.overwrite,
        progress=progress(args),
        **options,
    )
    print(f"preprocessed {len(summary['images'])} images into {args.out_dir}")
    return 0


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment scanner frames: a folder, files or a glob (the shipped model, or --model)",
        description="Preprocess every image that the INPUTs name (folders, image files, "
        "quoted glob patterns such as 'scans/*.png') as in training, segment it with the "
        "model shipped in the package, or with --model CHECKPOINT (several --model: an "
        "ensemble averaging their probabilities; checkpoints are loaded with "
        "weights_only=True), and write OUT_DIR/<stem>.png: a {0, 255} mask of the frame's "
        "original size. On request also OUT_DIR/overlays/<stem>.png, "
        "OUT_DIR/probabilities/<stem>.png and OUT_DIR/measurements.csv (one row per nodule). "
        "Outputs are named by the inputs' file stems (two inputs with one stem are an error). "
        "Existing outputs are an error unless --overwrite; a bad frame does not stop the "
        "others, and every one is listed at the end (exit status 2).",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="INPUT... OUT_DIR",
        help="frames (folders, files, glob patterns), then the output folder (created)",
    )
    add_model_options(parser)
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="flip test-time augmentation, twice the network time (default: the model's "
        "recommendation, off for a checkpoint without one)",
    )
    parser.add_argument(
        "--overlay", action="store_true", help="write OUT_DIR/overlays/<stem>.png pictures"
    )
    parser.add_argument(
        "--probabilities",
        action="store_true",
        help="write OUT_DIR/probabilities/<stem>.png, the nodule probability as 0-255",
    )
    parser.add_argument(
        "--measure",
        action="store_true",
        help="write OUT_DIR/measurements.csv, one row per nodule (size, box, diameter, "
        "taller-than-wide, mean probability)",
    )
    parser.add_argument(
        "--pixel-spacing",
        nargs="+",
        metavar="MM",
        help="millimetres per pixel for the _mm columns of measurements.csv and the report "
        "(needs --measure or --report): auto (default with either: what each DICOM file "
        "states, none for other images), one number, or row and column size",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="write OUT_DIR/report.html: one offline page with every frame's outline and "
        "measurements, nodules flagged for review first (sizes in mm as --pixel-spacing "
        "gives them, default auto)",
    )
    parser.add_argument(
        "--dicom-seg",
        action="store_true",
        help="write OUT_DIR/<stem>.seg.dcm for each DICOM input: a binary DICOM Segmentation "
        "that references it (all inputs must be DICOM; needs thyroidseg[dicom])",
    )
    parser.add_argument(
        "--frames",
        default=default(predict_folder, "frames"),
        help="frames of each DICOM cine loop: all, first, or N-M (from 1; default: all), "
        "written as OUT_DIR/<stem>_f0001.png...",
    )
    parser.add_argument(
        "--keep-largest",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep only the largest nodule in each view (split-screen frames have two views; "
        "default: the model's recommendation, else off)",
    )
    parser.add_argument(
        "--fill-holes",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fill holes in predicted nodules (default: the model's recommendation, else off)",
    )
    parser.add_argument(
        "--min-area",
        type=int,
        default=None,
        metavar="PX",
        help="remove predicted components smaller than this many pixels (default: the "
        "model's recommendation, else 0)",
    )
    parser.add_argument(
        "--min-probability",
        type=float,
        default=None,
        metavar="P",
        help="remove predicted components whose mean nodule probability is under P (default: "
        "the model's recommendation, else 0)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="frames per batch (default: 8)")
    parser.add_argument(
        "--shard",
        metavar="K/N",
        help="segment only the Kth of N parts of the inputs (K from 1; whole files, every Nth "
        "by sorted stem), for an array job whose N shards share OUT_DIR; then `thyroidseg "
        "merge OUT_DIR` writes the tables of one run",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_speed_options(parser)
    add_quiet_option(parser)
    add_threads_option(parser)
    parser.set_defaults(run=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    if len(args.paths) < 2:
        raise ValueError("predict takes INPUT... OUT_DIR: the frames, then the output folder")
    *inputs, out_dir = args.paths
    if len(inputs) == 2 and inputs[0].endswith(".pt"):
        raise ValueError(
            "the 0.1.0 form `predict CHECKPOINT IN_DIR OUT_DIR` is gone: use "
            f"`thyroidseg predict {inputs[1]} {out_dir} --model {inputs[0]}`"
        )
    options = {
        "device": args.device,
        "amp": args.amp,
        "keep_largest": args.keep_largest,
        "min_area": args.min_area,
        "min_probability": args.min_probability,
        "fill_holes": args.fill_holes,
        "tta": args.tta,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),  # what --threads set in main()
    }
    onnx = exported_model(args)
    segmenter = (
        load_onnx_segmenter(args, onnx, **options)
        if onnx is not None
        else load_segmenter(args, **options)
    )
    result = segmenter.predict_folder(
        inputs,
        out_dir,
        overlays=args.overlay,
        probabilities=args.probabilities,
        measurements=args.measure,
        pixel_spacing=pixel_spacing_option(args.pixel_spacing, args.measure or args.report),
        frames=args.frames,
        overwrite=args.overwrite,
        progress=progress(args),
        report=args.report,
        dicom_seg=args.dicom_seg,
        shard=args.shard,
    )
    print(cli_words(result.summary()))
    return 0


def _add_merge(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge",
        help="join the shards of `predict --shard K/N` into the tables of one run",
        description="Join the tables that the N shards of `thyroidseg predict ... --shard K/N` "
        "wrote into OUT_DIR (measurements.shard-K-of-N.csv, loops.shard-K-of-N.csv, "
        "shard-K-of-N.json) into OUT_DIR/measurements.csv and OUT_DIR/loops.csv, byte for "
        "byte those of one run, then remove the shards' files. Refused while a shard is "
        "still running or missing, each named (exit status 2).",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the folder the shards wrote into")
    parser.add_argument("--overwrite", action="store_true", help="replace existing tables")
    parser.set_defaults(run=_run_merge)


def _run_merge(args: argparse.Namespace) -> int:
    print(merge_shards(args.out_dir, overwrite=args.overwrite).summary())
    return 0


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export the shipped network (or --model) to ONNX and/or TorchScript",
        description="Export the network of the model shipped in the package, or of --model "
        "CHECKPOINT (several --model: their ensemble, one graph averaging their "
        "probabilities), to an ONNX file (input 'image', output 'logits') and/or a "
        "TorchScript archive: a preprocessed frame batch (N, C, H, W) float32 in [0, 1] in, "
        "per-pixel class scores (N, 2, H, W) out, batch, height and width dynamic. "
        "Preprocessing and the mapping back to the frame's size are not part of the graph. "
        "Existing files are an error unless --overwrite; files are written atomically. "
        "ONNX needs the onnx package: pip install 'thyroidseg[export]'.",
    )
    add_model_options(parser)
    parser.add_argument("--onnx", metavar="FILE", help="write the ONNX graph here")
    parser.add_argument("--torchscript", metavar="FILE", help="write the TorchScript archive here")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    if args.onnx is None and args.torchscript is None:
        raise ValueError("nothing to export: give --onnx FILE and/or --torchscript FILE")
    check_file_folders([args.onnx, args.torchscript])
    segmenter = load_segmenter(args, device="cpu", amp="off")
    refiner = segmenter.refiner
    jobs = [
        (p, e) for p, e in ((args.onnx, export_onnx), (args.torchscript, export_torchscript)) if p
    ]
    outputs = [path for path, _ in jobs]
    if refiner is not None:
        outputs += [cascade_paths(path)[0] for path, _ in jobs]
    # the onnx and torchscript files of one stem share STEM.json
    outputs += sorted({str(cascade_paths(path)[1]) for path, _ in jobs})
    inputs = [*(args.model or ()), *(args.refine or ())]
    check_outputs(outputs, inputs=inputs, overwrite=args.overwrite)
    refine_model = refiner.model if isinstance(refiner, Refiner) else None
    for path, export in jobs:
        written = export_cascade(
            segmenter.model, refine_model, segmenter.describe(), path, exporter=export
        )
        print("\n".join(f"wrote {file}" for file in written))
    return 0


def _add_info(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="print versions, CPU capability, threads and GPUs (for bug reports)",
        description="Print the thyroidseg, Python, PyTorch, NumPy and OpenCV versions, the CPU "
        "model and its capability (AVX2, AVX512F, AVX512-BF16, AMX), whether bfloat16 is "
        "native (without it --amp auto trains in float32), the PyTorch thread count and the "
        "CUDA devices. Paste it into bug reports.",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="write JSON to FILE instead of text (no FILE, or -: print it)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing FILE")
    parser.set_defaults(run=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    info = system_info()
    if args.json is None:
        print(format_system_info(info))
    elif args.json == "-":
        print(json.dumps(info, indent=2))
    else:
        check_file_folders([args.json])
        check_outputs([args.json], overwrite=args.overwrite)
        atomic_write_bytes(args.json, (json.dumps(info, indent=2) + "\n").encode())
        print(f"wrote {args.json}")
    return 0


# Sub-commands register here, in the order `thyroidseg --help` lists them.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_demo,
    add_train,
    _add_predict,
    _add_merge,
    _add_evaluate,
    _add_preprocess,
    _add_export,
    _add_info,
]
