"""Pieces shared by the commands of `thyroidseg.cli`: options, CLI wording, threads.

Every command's defaults are read from the library function it calls (`default`; the
training side's from light copies, `thyroidseg.cli.train`), and every
library message that names an option in both spellings, ``name=value (--flag)``, is said in
the command line's words (`cli_words`).
"""

from __future__ import annotations

import argparse
import inspect
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import cv2
import torch

from thyroidseg.inference.onnx import ONNX_DEVICES, OnnxSegmenter
from thyroidseg.inference.segmenter import Segmenter
from thyroidseg.io.threads import resolve_threads
from thyroidseg.runtime import AMP_MODES

__all__ = [
    "API_SPELLING",
    "add_model_options",
    "add_quiet_option",
    "add_size_option",
    "add_speed_options",
    "add_threads_option",
    "check_file_folders",
    "cli_words",
    "default",
    "exported_model",
    "load_onnx_segmenter",
    "load_segmenter",
    "one_line_warning",
    "pixel_spacing_option",
    "progress",
    "set_threads",
]

API_SPELLING = re.compile(r"\b[A-Za-z_][\w.]*(?:=[^\s(),;]+)? \((--[\w-]+)\)")
"""``name=value (--flag)``: how library messages name an option in both spellings."""


def cli_words(message: str) -> str:
    """A library message with each ``api_name=... (--flag)`` pair said as ``--flag`` alone.

    >>> cli_words("pass overwrite=True (--overwrite) to replace them")
    'pass --overwrite to replace them'
    >>> cli_words("pixel_spacing (--pixel-spacing) needs measurements (--measure)")
    '--pixel-spacing needs --measure'
    """
    return API_SPELLING.sub(r"\1", message)


def one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """Warnings as one ``warning:`` line in CLI words, without the source line."""
    return f"thyroidseg: warning: {cli_words(str(message))}\n"


def pixel_spacing_option(
    words: list[str] | None, measure: bool
) -> float | tuple[float, float] | Literal["auto"] | None:
    """``predict --pixel-spacing`` as the library's ``pixel_spacing``: ``"auto"``, a number,
    a ``(row, col)`` pair, or None; ``"auto"`` when absent and ``--measure`` is given.

    >>> pixel_spacing_option(["0.1", "0.2"], True), pixel_spacing_option(None, True)
    ((0.1, 0.2), 'auto')
    """
    if words is None:
        return "auto" if measure else None
    if words == ["auto"]:
        return "auto"
    try:
        numbers = [float(word) for word in words]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2):
        raise ValueError(
            f"--pixel-spacing takes auto, one number or two (row and column), got {' '.join(words)}"
        )
    return numbers[0] if len(numbers) == 1 else (numbers[0], numbers[1])


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N|auto``: CPU threads for PyTorch and OpenCV (applied in `main`)."""
    parser.add_argument(
        "--threads",
        default="auto",
        metavar="N",
        help="CPU threads for PyTorch and OpenCV, or auto (default): the cores that other "
        "jobs leave free by the 1-minute load average, at least 1 (see Troubleshooting)",
    )


def set_threads(threads: str | None) -> None:
    count = resolve_threads(threads, "--threads")
    if count is None:
        return
    torch.set_num_threads(count)
    cv2.setNumThreads(count)


def default(function: Callable[..., Any], parameter: str) -> Any:
    """The library's default for ``parameter`` of ``function`` (the CLI repeats none)."""
    return inspect.signature(function).parameters[parameter].default


def add_size_option(parser: argparse.ArgumentParser, size: tuple[int, int]) -> None:
    """``--size H W``, defaulting to ``size``: the ``size`` of the library call it feeds."""
    height, width = size
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(height, width),
        metavar=("H", "W"),
        help=f"network height and width (default: {height} {width})",
    )


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bars (read back with `_progress`)."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def progress(args: argparse.Namespace) -> bool | None:
    """The library's ``progress=``: off with ``--quiet``, else its default (on at a terminal)."""
    return False if args.quiet else None


def add_speed_options(parser: argparse.ArgumentParser) -> None:
    """--device and --amp, shared by train, predict and demo."""
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1..."
    )
    parser.add_argument(
        "--amp",
        choices=AMP_MODES,
        default="auto",
        help="mixed precision (default auto: bf16 on CPUs with native bf16, fp16 on CUDA)",
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--refine`` and ``--no-refine``: which network(s) a command runs."""
    parser.add_argument(
        "--model",
        action="append",
        metavar="CHECKPOINT",
        help="best.pt or last.pt of a whole-frame run instead of the shipped model; give it "
        "several times for an ensemble (same preprocessing required); predict also takes a "
        "FILE.onnx that `thyroidseg export --onnx` wrote (run in ONNX Runtime)",
    )
    parser.add_argument(
        "--refine",
        action="append",
        metavar="CHECKPOINT",
        help="a refine (stage 2) run's checkpoint to segment each found nodule again from a "
        "full-resolution crop; several: their ensemble (default: the shipped refine model "
        "with the shipped model, none with --model)",
    )
    parser.add_argument(
        "--no-refine", action="store_true", help="the whole-frame model alone, no second stage"
    )


def load_segmenter(args: argparse.Namespace, **options: Any) -> Segmenter:
    """The `Segmenter` that `add_model_options`' choices name (``options``: its settings)."""
    if args.refine and args.no_refine:
        raise ValueError("--refine CHECKPOINT and --no-refine contradict each other")
    refine = args.refine or (False if args.no_refine else None)
    if args.model:
        return Segmenter.from_checkpoint(args.model, refine=args.refine or None, **options)
    return Segmenter.pretrained(refine=refine, **options)


def check_file_folders(paths: Iterable[str | None]) -> None:
    """Refuse an output file whose folder does not exist (``None`` and ``-``: no file).

    A command creates the output folders it is given (``OUT_DIR``), never the folder of a
    file it is asked to write: a mistyped ``--onnx /no/such/dir/unet.onnx`` is an error, not
    a new folder.
    """
    for path in paths:
        if path is not None and path != "-" and not Path(path).parent.is_dir():
            raise FileNotFoundError(
                f"{path}: its folder {Path(path).parent} does not exist; create it first or "
                "choose another path"
            )


def exported_model(args: argparse.Namespace) -> str | None:
    """The ``--model`` that names an exported ``.onnx`` network, else ``None``.

    Raises
    ------
    ValueError
        An ``.onnx`` file beside other ``--model`` files, or with ``--refine`` (its second
        stage is the one exported beside it).
    """
    onnx = [path for path in args.model or () if str(path).lower().endswith(".onnx")]
    if not onnx:
        return None
    if len(args.model) > 1:
        raise ValueError("--model FILE.onnx runs one exported segmenter: give it alone")
    if args.refine:
        raise ValueError(
            "--refine CHECKPOINT cannot go with --model FILE.onnx, which runs the refine "
            "network exported beside it (FILE-refine.onnx); --no-refine leaves it out"
        )
    return onnx[0]


def load_onnx_segmenter(args: argparse.Namespace, path: str, **options: Any) -> OnnxSegmenter:
    """`OnnxSegmenter.from_export` for ``--model FILE.onnx`` (``options``: its settings).

    ``--amp`` must be ``auto`` or ``off`` (the exported graph runs in float32) and
    ``--device`` one of `ONNX_DEVICES`.
    """
    amp, device = options.pop("amp"), options.pop("device")
    if amp not in ("auto", "off"):
        raise ValueError(f"--amp {amp}: an exported ONNX model runs in float32 (--amp off)")
    if device not in ONNX_DEVICES:
        raise ValueError(f"--device {device}: with an ONNX model, one of {', '.join(ONNX_DEVICES)}")
    return OnnxSegmenter.from_export(path, refine=not args.no_refine, device=device, **options)
