"""One prediction split over an array job: `Shard`, `predict_shard` and `merge_shards`.

``thyroidseg predict IN OUT --shard K/N`` segments the Kth of N parts of the inputs, so N
jobs (a SLURM array, N machines) can share one output folder; ``thyroidseg merge OUT``
joins their tables into those one run writes. The parts are nnU-Net's ``part_id`` /
``num_parts`` counted from 1. How it works, and a SLURM script: ``docs/cli.md``.

Each shard

- takes every Nth input of the inputs' stems in sorted order (`Shard.select`), whole
  files (a cine loop is never split);
- holds the folder with a lock of its own (``.thyroidseg-shard-K-of-N.lock``), so the
  shards run side by side while two runs of one shard cannot;
- writes its masks and pictures where one run writes them, its tables as
  ``measurements.shard-K-of-N.csv`` and ``loops.shard-K-of-N.csv``, and, when it is done,
  its record ``shard-K-of-N.json``: its nodules, its failed files, its settings.

`merge_shards` writes ``measurements.csv`` and ``loops.csv`` from the records with the
writers one run uses, in one run's order, then removes the shards' tables and records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from thyroidseg._checks import PathLike
from thyroidseg.inference.folders import (
    LOOPS_CSV,
    MEASUREMENTS_CSV,
    FolderPrediction,
    predict_folder,
)
from thyroidseg.inference.measurements import (
    ImageKey,
    Nodule,
    PixelSpacing,
    write_loops_csv,
    write_measurements_csv,
)
from thyroidseg.io.dicom import FrameRange
from thyroidseg.io.files import Inputs, atomic_write_bytes
from thyroidseg.io.folder_loop import FilesFailedError
from thyroidseg.io.outputs import FolderInUseError, check_outputs, reserve_folder

if TYPE_CHECKING:
    from thyroidseg.inference.base import SegmenterBase

__all__ = ["IncompleteShardsError", "MergedShards", "Shard", "merge_shards", "predict_shard"]

_SHARD_TEXT = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    """Part ``index`` of ``count`` of a prediction's inputs: ``--shard K/N``.

    Attributes
    ----------
    index
        ``K``, from 1 to ``count`` (nnU-Net's ``part_id + 1``).
    count
        ``N``, the number of parts (nnU-Net's ``num_parts``), at least 1.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        for name in ("index", "count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Shard {name} must be an int, got {value!r}")
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ValueError(
                f"shard {self.index}/{self.count}: K/N needs N >= 1 and 1 <= K <= N "
                "(K counts from 1)"
            )

    @classmethod
    def parse(cls, text: str | Shard) -> Shard:
        """``"K/N"`` (``"2/4"``: the second of four parts) as a `Shard`; a `Shard` as it is.

        Raises
        ------
        ValueError
            Not two whole numbers ``K/N``, or ``K`` outside ``1..N``.
        """
        if isinstance(text, Shard):
            return text
        match = _SHARD_TEXT.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(
                f"a shard is K/N, the Kth of N parts counted from 1 (for example 2/4), got {text!r}"
            )
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def tag(self) -> str:
        """``shard-K-of-N``, ``K`` padded to the width of ``N`` so the files sort in order."""
        return f"shard-{self.index:0{len(str(self.count))}d}-of-{self.count}"

    @property
    def lock(self) -> str:
        """The lock file that holds this shard's part of the output folder."""
        return f".thyroidseg-{self.tag}.lock"

    @property
    def record(self) -> str:
        """The file a shard writes when it is done: ``shard-K-of-N.json``."""
        return f"{self.tag}.json"

    def table(self, name: str) -> str:
        """This shard's name for one run's table: ``measurements.csv`` ->
        ``measurements.shard-K-of-N.csv``."""
        path = Path(name)
        return f"{path.stem}.{self.tag}{path.suffix}"

    def select(self, inputs: Mapping[str, Path]) -> dict[str, Path]:
        """This shard's inputs: those whose stem is at position ``K - 1 + i N`` (``i >= 0``)
        once all stems are sorted (by code point, the same on every machine), in their
        given order. The ``N`` shards take every input exactly once."""
        mine = set(sorted(inputs)[self.index - 1 :: self.count])
        return {stem: path for stem, path in inputs.items() if stem in mine}


class IncompleteShardsError(RuntimeError):
    """`merge_shards` found shards still running or missing (``running``, ``missing``)."""

    def __init__(self, message: str, running: list[Shard], missing: list[Shard]) -> None:
        super().__init__(message)
        self.running = running
        self.missing = missing


@dataclass(frozen=True)
class MergedShards:
    """What `merge_shards` wrote.

    Attributes
    ----------
    out_dir
        The output folder.
    shards
        The number of shards merged (``N``).
    frames
        Masks the shards wrote.
    nodules
        Nodules measured in them (0 without measurements).
    measurements, loops
        ``out_dir/measurements.csv`` and ``out_dir/loops.csv``, or ``None`` where one run
        writes none.
    """

    out_dir: Path
    shards: int
    frames: int
    nodules: int
    measurements: Path | None
    loops: Path | None

    def summary(self) -> str:
        """One line: shards, frames, nodules, and the tables written."""
        tables = [str(p) for p in (self.measurements, self.loops) if p is not None]
        return (
            f"merged {self.shards} shards: {self.frames} frames, {self.nodules} nodules in "
            f"{self.out_dir}" + (f"; wrote {', '.join(tables)}" if tables else "")
        )


@dataclass
class _ShardRun:
    """One shard as `thyroidseg.inference.folders` runs it: its lock, its tables, its
    inputs, and the nodules of each frame it measures (``found``)."""

    shard: Shard
    found: dict[ImageKey, list[Nodule]] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    inputs: int = 0
    digest: str = ""

    @property
    def lock(self) -> str:
        return self.shard.lock

    def table(self, name: str) -> str:
        return self.shard.table(name)

    def select(self, inputs: dict[str, Path]) -> dict[str, Path]:
        """`Shard.select`, noting every input's position (one run's order) and the list."""
        self.positions = {path.name: i for i, path in enumerate(inputs.values())}
        self.inputs = len(inputs)
        self.digest = hashlib.sha256("\n".join(sorted(inputs)).encode()).hexdigest()[:16]
        return self.shard.select(inputs)

    def record(self, settings: Mapping[str, Any], masks: int, failures: Mapping[str, str]) -> bytes:
        """The shard's record, JSON: what `merge_shards` needs to write one run's tables."""
        frames = [
            [
                self.positions[key[0] if isinstance(key, tuple) else key],
                key,
                [dataclasses.asdict(nodule) for nodule in nodules],
            ]
            for key, nodules in self.found.items()
        ]
        record = {
            "shard": str(self.shard),
            "inputs": self.inputs,
            "digest": self.digest,
            "settings": settings,
            "masks": masks,
            "failures": dict(failures),
            "frames": frames,
        }
        return (json.dumps(record, indent=1) + "\n").encode()


def predict_shard(
    segmenter: SegmenterBase,
    in_dir: Inputs,
    out_dir: PathLike,
    shard: str | Shard,
    *,
    tta: bool | None = None,
    overlays: bool = False,
    probabilities: bool = False,
    measurements: bool = False,
    pixel_spacing: PixelSpacing | Literal["auto"] | None = None,
    frames: str | FrameRange = "all",
    overwrite: bool = False,
    progress: bool | None = None,
    report: bool = False,
    dicom_seg: bool = False,
) -> FolderPrediction:
    """`thyroidseg.inference.Segmenter.predict_folder` on one shard of the inputs.

    Writes the shard's masks, pictures and DICOM Segmentations as one run does, its tables
    and report under the shard's names (`Shard.table`: ``report.shard-K-of-N.html``) and,
    once every file is done (failed files included), its record `Shard.record` for
    `merge_shards`. Options as for ``predict_folder``; the record keeps those that shape
    the tables, so the merge refuses shards run with different ones.

    Raises
    ------
    ValueError
        ``shard`` is not ``K/N`` with ``1 <= K <= N``; or as ``predict_folder``.
    OutputExistsError
        The shard's outputs, its record, or the merged tables exist (without ``overwrite``).
    FolderInUseError
        Another run of this shard holds the folder.
    """
    run = _ShardRun(Shard.parse(shard))
    out_dir = Path(out_dir)
    settings = json.loads(
        json.dumps(
            {
                "model": segmenter.describe(),
                "tta": segmenter._tta(tta),
                "overlays": overlays,
                "probabilities": probabilities,
                "measurements": measurements,
                "pixel_spacing": pixel_spacing,
                "frames": dataclasses.astuple(FrameRange.parse(frames)),
            }
        )
    )
    merged = [out_dir / MEASUREMENTS_CSV, out_dir / LOOPS_CSV] if measurements else []
    with reserve_folder(out_dir, name=run.lock):
        check_outputs([out_dir / run.shard.record, *merged], overwrite=overwrite)
        try:
            result = predict_folder(
                segmenter,
                in_dir,
                out_dir,
                tta=tta,
                overlays=overlays,
                probabilities=probabilities,
                measurements=measurements,
                pixel_spacing=pixel_spacing,
                frames=frames,
                overwrite=overwrite,
                progress=progress,
                report=report,
                dicom_seg=dicom_seg,
                shard=run,
            )
        except FilesFailedError as error:
            done = run.record(settings, error.written, error.failures)
            atomic_write_bytes(out_dir / run.shard.record, done)
            raise
        atomic_write_bytes(out_dir / run.shard.record, run.record(settings, result.frames, {}))
    return result


def merge_shards(out_dir: PathLike, *, overwrite: bool = False) -> MergedShards:
    """Join the shards' tables in ``out_dir`` into the tables one run writes.

    Holds the folder (`thyroidseg.io.outputs.reserve_folder`), then each shard's lock in
    turn: a shard still running, or without its record (not run, or stopped before its
    end), is refused, all named at once. The records must agree (same inputs, model and
    options). ``measurements.csv`` and ``loops.csv`` are written from the records' nodules
    by `write_measurements_csv` and `write_loops_csv`, in the order of one run (the inputs'
    order, then frame order), so they are byte for byte one run's; then the shards' tables
    and records are removed.

    Raises
    ------
    FileNotFoundError
        ``out_dir`` holds no shard.
    IncompleteShardsError
        Shards are still running or missing (nothing is written).
    ValueError
        Shards of several ``N``, or records that disagree, or damaged.
    OutputExistsError
        ``measurements.csv``/``loops.csv`` exist (without ``overwrite``).
    FilesFailedError
        The shards failed some files: raised once the tables are written, listing them.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"{out_dir}: no such folder (the shards' output folder)")
    with reserve_folder(out_dir), contextlib.ExitStack() as held:
        count = _shard_count(out_dir)
        shards = [Shard(k, count) for k in range(1, count + 1)]
        running: dict[Shard, str] = {}
        for shard in shards:
            try:
                held.enter_context(reserve_folder(out_dir, name=shard.lock))
            except FolderInUseError as error:
                running[shard] = str(error)
        missing = [s for s in shards if s not in running and not (out_dir / s.record).is_file()]
        if running or missing:
            raise IncompleteShardsError(
                _incomplete(out_dir, running, missing), list(running), missing
            )
        records = [_read_record(out_dir / s.record, s) for s in shards]
        return _write_merged(out_dir, shards, records, overwrite)


_RECORD = re.compile(r"shard-(\d+)-of-(\d+)\.json")
_LOCK = re.compile(r"\.thyroidseg-shard-(\d+)-of-(\d+)\.lock")


def _shard_count(out_dir: Path) -> int:
    """``N`` of the shards in ``out_dir``, from their records and locks (one ``N`` only)."""
    counts: dict[int, list[str]] = {}
    for path in sorted(out_dir.iterdir()):
        match = _RECORD.fullmatch(path.name) or _LOCK.fullmatch(path.name)
        if match is not None:
            counts.setdefault(int(match[2]), []).append(path.name)
    if not counts:
        raise FileNotFoundError(
            f"{out_dir}: no shard to merge (no shard-K-of-N.json and no running shard); run "
            f"`thyroidseg predict INPUT... {out_dir} --shard K/N` for K = 1..N first"
        )
    if len(counts) > 1:
        found = "; ".join(f"{n} parts: {', '.join(names)}" for n, names in counts.items())
        raise ValueError(
            f"{out_dir} holds shards of {len(counts)} different counts N ({found}): remove "
            "the files of the split you do not want to merge"
        )
    return next(iter(counts))


def _incomplete(out_dir: Path, running: Mapping[Shard, str], missing: list[Shard]) -> str:
    """Why the shards cannot be merged yet, each shard named."""
    reasons = [f"shard {shard} is still running ({why})" for shard, why in running.items()]
    reasons += [
        f"shard {shard} is missing (no {out_dir / shard.record}: not run yet, or stopped "
        "before its end; run it)"
        for shard in missing
    ]
    return f"cannot merge {out_dir} yet: " + "; ".join(reasons)


def _read_record(path: Path, shard: Shard) -> dict[str, Any]:
    """A shard's record, checked to be one (a damaged file is named)."""
    try:
        record = json.loads(path.read_text())
        ok = isinstance(record, dict) and record.get("shard") == str(shard)
        ok = ok and {"inputs", "digest", "settings", "masks", "failures", "frames"} <= set(record)
    except (OSError, ValueError) as error:
        message = f"{path}: not a readable shard record ({error}); run the shard again"
        raise ValueError(message) from error
    if not ok:
        raise ValueError(f"{path}: not the record of shard {shard}; run the shard again")
    return record


def _write_merged(
    out_dir: Path, shards: list[Shard], records: list[dict[str, Any]], overwrite: bool
) -> MergedShards:
    """One run's tables from the shards' records (checked to agree); the shards' files go."""
    first = records[0]
    for shard, record in zip(shards[1:], records[1:], strict=True):
        if (record["inputs"], record["digest"]) != (first["inputs"], first["digest"]):
            raise ValueError(
                f"{out_dir}: shards {shards[0]} and {shard} were run on different inputs "
                f"({first['inputs']} and {record['inputs']} files): run every shard on the same"
            )
        differ = [k for k in first["settings"] if record["settings"].get(k) != first["settings"][k]]
        if differ:
            raise ValueError(
                f"{out_dir}: shards {shards[0]} and {shard} were run with different "
                f"{', '.join(differ)}: run every shard with the same model and options"
            )
    rows = sorted((row for record in records for row in record["frames"]), key=lambda r: r[0])
    found: dict[ImageKey, list[Nodule]] = {
        (key if isinstance(key, str) else (key[0], key[1])): [Nodule(**n) for n in nodules]
        for _, key, nodules in rows
    }
    csv_path = loops_path = loops = None
    if first["settings"]["measurements"]:
        csv_path, loops_path = out_dir / MEASUREMENTS_CSV, out_dir / LOOPS_CSV
        check_outputs([csv_path, loops_path], overwrite=overwrite)
        write_measurements_csv(csv_path, found)  # a header alone when no frame was read
        loops = write_loops_csv(loops_path, found)
        if loops is None:
            loops_path.unlink(missing_ok=True)  # replaced by none, as one run does
    for shard in shards:
        for name in (shard.table(MEASUREMENTS_CSV), shard.table(LOOPS_CSV), shard.record):
            (out_dir / name).unlink(missing_ok=True)
    frames = sum(record["masks"] for record in records)
    failures = {stem: why for record in records for stem, why in record["failures"].items()}
    if failures:
        raise FilesFailedError(
            f"merged {out_dir}, but the shards could not segment {len(failures)} of "
            f"{frames + len(failures)} images:\n  " + "\n  ".join(failures.values()),
            failures,
            frames,
        )
    return MergedShards(
        out_dir=out_dir,
        shards=len(shards),
        frames=frames,
        nodules=sum(len(nodules) for nodules in found.values()),
        measurements=csv_path,
        loops=loops,
    )
