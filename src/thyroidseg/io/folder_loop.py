"""`map_folder`: the loop of every folder command, one bad file never stopping the others.

``thyroidseg preprocess`` and ``thyroidseg predict`` (`thyroidseg.preprocessing.pipeline`,
`thyroidseg.inference.folders`) list their inputs with `thyroidseg.io.files.list_inputs`,
check every output before writing any (`thyroidseg.io.outputs`) and write each one atomically
here; the files that failed are listed together at the end (`FilesFailedError`).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from thyroidseg._checks import PathLike
from thyroidseg._progress import Progress
from thyroidseg.io.dicom import is_dicom, is_frame_output
from thyroidseg.io.files import Inputs, atomic_write_bytes, list_inputs
from thyroidseg.io.outputs import LOCK_FILE, check_outputs, reserve_folder

__all__ = ["FilesFailedError", "map_folder"]


_Loaded = TypeVar("_Loaded")


class FilesFailedError(ValueError):
    """Some files of a folder could not be processed; the others were written (`map_folder`).

    ``failures`` maps each failed output stem to its message (naming the file); ``written``
    counts the images written.
    """

    def __init__(self, message: str, failures: Mapping[str, str], written: int) -> None:
        super().__init__(message)
        self.failures = dict(failures)
        self.written = written


def map_folder(
    in_dir: Inputs,
    out_dir: PathLike,
    load: Callable[[Any], _Loaded],
    save: Callable[[dict[Path, _Loaded]], None],
    *,
    verb: str,
    split: Callable[[str, Path], Mapping[str, Any]] | None = None,
    overwrite: bool = False,
    batch_size: int = 1,
    summary: tuple[PathLike, Callable[[dict[str, str]], bytes]] | None = None,
    companions: Sequence[Path] = (),
    also_writes: Sequence[Path] = (),
    progress: bool | None = None,
    select: Callable[[dict[str, Path]], Mapping[str, Path]] | None = None,
    lock: str = LOCK_FILE,
) -> dict[str, Path]:
    """Run ``load`` on every image ``in_dir`` names and ``save`` them as ``out_dir/<stem>.png``.

    The one folder loop of the library, in this order:

    1. list the inputs (`list_inputs`: a folder, image files, glob patterns); ``out_dir``
       must be another folder than an input folder; with ``split``, each input becomes
       the items it names (the frames of a cine loop), each written as its own
       ``<stem>.png``; with ``select``, only the inputs it keeps;
    2. `check_outputs`: unless ``overwrite``, refuse when any target ``out_dir/<stem>.png``,
       companion ``<folder>/<stem>.png``, ``also_writes`` file or the summary file exists
       already, and never write over an input: all are checked before anything is written;
    3. ``load(source)`` per image, in stem order; a ``ValueError`` or ``OSError`` is that
       file's failure (recorded with the file's name, and the loop goes on; with
       ``overwrite``, an earlier output for that file and its companions are removed, so
       none is left stale: for a DICOM file that failed as a whole, also the frames of a
       loop, ``<stem>_fNNNN.png``, that this run does not write);
    4. ``save({target: loaded, ...})`` for every ``batch_size`` images loaded (the last
       batch may be smaller); ``save`` writes each target, atomically;
    5. the summary file, if given as ``(path, make)``: ``make(failures)`` written
       atomically, ``failures`` mapping each failed stem to its message;
    6. one ``ValueError`` listing every failure, once everything else is written.

    Parameters
    ----------
    in_dir, out_dir
        Inputs (a folder, not recursive; image files; glob patterns; see `list_inputs`) and
        the output folder (created).
    load
        ``source path -> loaded`` (``item -> loaded`` with ``split``); raises
        ``ValueError``/``OSError`` for a bad file.
    save
        Writes a batch, ``{target path: loaded}``. Its errors are not caught.
    verb
        Past participle for the messages and the progress bar, e.g. ``"preprocessed"``.
    split
        ``(stem, source path) -> {output stem: item}``: what one input gives (default: the
        input itself under its stem); a ``ValueError`` or ``OSError`` is that input's
        failure, as in ``load``. Output stems must not repeat across inputs.
    overwrite
        Replace existing targets.
    batch_size
        Images loaded per ``save`` call (>= 1).
    summary
        ``(path, make)``: a file written after the loop from the failures.
    companions
        Folders where ``save`` also writes ``<stem>.png`` per image (pictures of it).
    also_writes
        Other files the caller writes into the run (checked like the targets).
    progress
        Progress bar (`thyroidseg._progress.Progress`): None on a terminal, False never.
    select
        ``{stem: path} -> {stem: path}``: the inputs this run takes of all those listed (a
        shard's, `thyroidseg.inference.shards.Shard.select`); default all.
    lock
        The lock file that holds ``out_dir`` (`thyroidseg.io.outputs.reserve_folder`).

    Returns
    -------
    dict
        ``stem -> target`` of every image written, in stem order.

    Raises
    ------
    FileNotFoundError, ValueError
        ``in_dir`` missing, empty or equal to ``out_dir``.
    FilesFailedError
        Failed images (after writing the others and the summary); a ``ValueError``.
    OutputExistsError
        Targets exist and ``overwrite`` is False (nothing was written).
    """
    inputs = list_inputs(in_dir)
    out_dir = Path(out_dir)
    folders = [in_dir] if isinstance(in_dir, str | os.PathLike) else list(in_dir)
    if any(out_dir.resolve() == Path(folder).resolve() for folder in folders):
        raise ValueError(f"{out_dir}: output folder is the input folder; pick another one")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: is a file, not a folder")
    failures: dict[str, str] = {}
    sources: dict[str, Path] = {}  # output stem -> its input
    items: dict[str, Any] = {}
    for stem, source in (inputs if select is None else select(inputs)).items():
        try:
            parts = {stem: source} if split is None else split(stem, source)
        except (OSError, ValueError) as error:  # this file is bad: record it, go on
            failures[stem] = _naming(error, source)
            continue
        for part, item in parts.items():
            if part in sources:
                raise ValueError(
                    f"{sources[part]} and {source} both give the output {part}.png: rename one"
                )
            sources[part], items[part] = source, item
    targets = {stem: out_dir / f"{stem}.png" for stem in [*sources, *failures]}
    outputs = [targets[stem] for stem in sources]
    outputs += [Path(summary[0])] if summary is not None else []
    outputs += [folder / f"{stem}.png" for folder in companions for stem in sources]
    outputs += list(also_writes)
    with reserve_folder(out_dir, name=lock):
        check_outputs(outputs, inputs=inputs.values(), overwrite=overwrite)
        written: dict[str, Path] = {}
        batch: dict[str, _Loaded] = {}
        stems = list(sources)
        for stem in failures if overwrite else ():  # an earlier run's outputs would pass
            loop = is_dicom(inputs[stem])  # for this run's
            _remove_outputs(out_dir, stem, companions, frames_of=sources if loop else None)
        for index, stem in enumerate(Progress(stems, desc=verb, enabled=progress)):
            try:
                batch[stem] = load(items[stem])
            except (OSError, ValueError) as error:  # this file is bad: record it, go on
                failures[stem] = _naming(error, sources[stem])
                if overwrite:
                    _remove_outputs(out_dir, stem, companions)
            if batch and (len(batch) == batch_size or index == len(stems) - 1):
                save({targets[s]: loaded for s, loaded in batch.items()})
                written.update((s, targets[s]) for s in batch)
                batch = {}
        also = ""
        if summary is not None:
            atomic_write_bytes(summary[0], summary[1](failures))
            also = f", and {summary[0]}"
    if failures:
        total = len(written) + len(failures)
        raise FilesFailedError(
            f"{len(failures)} of {total} images could not be {verb} (the other "
            f"{len(written)} were written to {out_dir}{also}):\n  "
            + "\n  ".join(failures.values()),
            failures,
            len(written),
        )
    return written


def _naming(error: Exception, source: Path) -> str:
    """The error's message, starting with the file's name unless it names it already."""
    message = str(error)
    return message if str(source) in message else f"{source}: {message}"


def _remove_outputs(
    out_dir: Path,
    stem: str,
    companions: Sequence[Path],
    frames_of: Mapping[str, Path] | None = None,
) -> None:
    """Remove ``<stem>.png`` and its pictures in ``companions`` (stale outputs of a failed file).

    With ``frames_of`` (the output stems this run writes), also the frames an earlier run
    wrote for the loop ``stem`` (`thyroidseg.io.dicom.is_frame_output`), except this run's.
    """
    for folder in (out_dir, *companions):
        stale = [folder / f"{stem}.png"]
        if frames_of is not None:
            stale += [
                path
                for path in folder.glob(f"{glob.escape(stem)}_f*.png")
                if is_frame_output(path.stem, stem) and path.stem not in frames_of
            ]
        for path in stale:
            path.unlink(missing_ok=True)
