"""Scoring a folder of predicted masks against a folder of reference masks.

`evaluate_folders` (the ``thyroidseg evaluate`` command) pairs the two folders by file stem,
reads every mask with the library's one mask rule (`thyroidseg.io.files.read_binary_mask`), counts
one confusion matrix per image (`thyroidseg.metrics.ConfusionMatrix`) and measures the
boundary metrics with `thyroidseg.metrics.boundary.boundary_metrics`, which also owns their
empty-mask rules. Problems are collected over the whole folder and reported together:
unpaired stems, unreadable files and size mismatches are each listed in full, never skipped.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thyroidseg._checks import PathLike
from thyroidseg._progress import Progress
from thyroidseg.io.files import (
    NotBinaryMaskError,
    check_mask_threshold,
    csv_text,
    list_images,
    read_binary_mask,
)
from thyroidseg.metrics.boundary import Spacing, _check_tolerance, _spacing_pair, boundary_metrics
from thyroidseg.metrics.confusion import ConfusionMatrix
from thyroidseg.metrics.counting import confusion_matrices
from thyroidseg.metrics.ratios import _PER_CLASS_METRICS, iou
from thyroidseg.metrics.statistics import _json_number, summarize
from thyroidseg.preprocessing.geometry import resize_mask

__all__ = ["FolderEvaluation", "evaluate_folders"]


@dataclass(frozen=True)
class FolderEvaluation:
    """Result of `evaluate_folders`: counts per image plus boundary metrics.

    Attributes
    ----------
    stems
        File stems of the evaluated pairs, in the order they were counted.
    confusion
        The `ConfusionMatrix` (2 classes, one matrix per image, same order).
    hd95, nsd
        Per image `thyroidseg.metrics.boundary.hausdorff_distance_95` and
        `thyroidseg.metrics.boundary.normalized_surface_dice` of the nodule (NaN/inf for empty
        masks as documented there).
    tolerance
        NSD tolerance, in the unit of ``spacing``.
    spacing
        Pixel size used for the boundary metrics (``None``: pixels).
    unpaired_predictions, unpaired_labels
        Stems left out because only one folder has them (only with ``common_only=True``;
        otherwise such stems are an error and both are empty).
    """

    stems: tuple[str, ...]
    confusion: ConfusionMatrix
    hd95: np.ndarray
    nsd: np.ndarray
    tolerance: float
    spacing: Spacing = None
    unpaired_predictions: tuple[str, ...] = ()
    unpaired_labels: tuple[str, ...] = ()

    def per_image_rows(self) -> list[dict[str, Any]]:
        """One dict per image: stem, pixel counts and every per-image nodule metric."""
        matrices = self.confusion.per_image_matrices
        columns = {name: self.confusion.per_image(name, 1) for name in _PER_CLASS_METRICS}
        return [
            {
                "stem": stem,
                "true_pixels": int(matrices[k, 1].sum()),
                "predicted_pixels": int(matrices[k, :, 1].sum()),
                **{name: float(values[k]) for name, values in columns.items()},
                "hd95": float(self.hd95[k]),
                "nsd": float(self.nsd[k]),
            }
            for k, stem in enumerate(self.stems)
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: settings, the confusion-matrix summary, boundary summaries, per image.

        An undefined value (NaN: HD95 of two empty masks) is ``None``, an infinite one (HD95
        with one mask empty) the string ``"inf"``, so the two stay apart in JSON.
        """
        return {
            "n_pairs": len(self.stems),
            "unpaired_predictions": list(self.unpaired_predictions),
            "unpaired_labels": list(self.unpaired_labels),
            "tolerance": self.tolerance,
            "spacing": None if self.spacing is None else np.asarray(self.spacing, float).tolist(),
            "confusion": self.confusion.to_dict(),
            "hd95": summarize(self.hd95).to_dict(),
            "nsd": summarize(self.nsd).to_dict(),
            "images": [
                {key: _json_number(value) for key, value in row.items()}
                for row in self.per_image_rows()
            ],
        }

    def to_csv(self) -> str:
        """The per-image rows as CSV text (``nan``: undefined, ``inf``: one mask empty)."""
        return csv_text(self.per_image_rows())

    def report(self) -> str:
        """Readable text: the confusion-matrix report followed by the boundary metrics."""
        unit = "pixels" if self.spacing is None else "spacing units"
        empty = "one mask empty: HD95 inf, NSD 0; both empty: NaN; inf and NaN are excluded"
        pooled = {"IoU": self.confusion.iou()[1], "Dice": self.confusion.dice()[1]}
        left_out = []
        if self.unpaired_predictions or self.unpaired_labels:
            left_out.append(
                f"left out (only in one folder): {len(self.unpaired_predictions)} predictions "
                f"without a label, {len(self.unpaired_labels)} labels without a prediction"
            )
        return "\n".join(
            [
                f"{len(self.stems)} prediction/label pairs; class 1 = nodule",
                *left_out,
                *(
                    f"nodule {name:<5} pooled {value:.4f}   per image "
                    f"{self.confusion.summary(name.lower())}"
                    for name, value in pooled.items()
                ),
                "",
                self.confusion.report(),
                "",
                f"Boundary metrics of the nodule per image ({empty})",
                f"  {'HD95':<12}{summarize(self.hd95)}  ({unit})",
                f"  {'NSD':<12}{summarize(self.nsd)}  (tolerance {self.tolerance:g} {unit})",
            ]
        )


def evaluate_folders(
    pred_dir: PathLike,
    label_dir: PathLike,
    *,
    threshold: float | None = None,
    resize_labels: bool = False,
    tolerance: float = 2.0,
    pixel_spacing: Spacing = None,
    common_only: bool = False,
    progress: bool | None = None,
) -> FolderEvaluation:
    """Score every predicted mask in ``pred_dir`` against the label of the same stem.

    Files are paired by stem, whatever their image extension (``a.png`` with ``a.jpg``).
    Both are read as one channel and binarised by the library's one mask rule
    (`thyroidseg.io.files.read_binary_mask`): a lossless mask must be binary and any
    non-zero value is nodule; a JPEG mask is nodule where ``> 127``; with ``threshold``
    given, nodule iff ``value > threshold`` for every file (e.g. probability maps).

    Parameters
    ----------
    pred_dir, label_dir
        Folders of predicted and reference masks. The same folder twice is allowed (every
        mask then scores perfectly) but warned about.
    threshold
        ``None`` (default): the mask rule above; else foreground iff ``value > threshold``.
    resize_labels
        ``False`` (default): a label whose size differs from its prediction is an error.
        ``True``: resize such labels to the prediction's size with nearest-neighbour
        interpolation (never bilinear, which would invent intermediate labels). Note that
        this changes the reference; resizing predictions back to the label size is better.
    tolerance
        Tolerance of `thyroidseg.metrics.boundary.normalized_surface_dice` (default 2, in the unit
        of ``pixel_spacing``).
    pixel_spacing
        Pixel size for the boundary metrics, one number or ``(row, col)``; ``None``
        (default) measures in pixels.
    common_only
        ``False`` (default): a stem found in only one folder is an error. ``True``: score
        only the stems both folders have (e.g. a second reader who outlined some of the
        frames); the stems left out are kept in `FolderEvaluation.unpaired_predictions`
        and `FolderEvaluation.unpaired_labels` and counted in the report.
    progress
        Progress bar on standard error: ``None`` (default) draws on a terminal only,
        ``False`` never.

    Raises
    ------
    FileNotFoundError, ValueError
        A folder is missing, holds no images, or holds entries named like images that are
        not files (`thyroidseg.io.files.list_images`); a stem has no counterpart (all are
        listed) without ``common_only``, or no stem is common; masks cannot be read or are
        not binary; sizes differ without ``resize_labels``. Every unreadable file and every
        size mismatch is listed in one error. Nothing is skipped silently.

    Warns
    -----
    UserWarning
        ``pred_dir`` and ``label_dir`` are the same folder.
    """
    _check_tolerance(tolerance)
    _spacing_pair(pixel_spacing)
    threshold = check_mask_threshold(threshold)
    preds, labels = _list_folders(pred_dir, label_dir)
    stems, only_pred, only_label = _pair_stems(preds, labels, pred_dir, label_dir, common_only)
    problems = _Problems()
    matrices, hd95, nsd = [], [], []
    running = np.zeros((2, 2), dtype=np.int64)
    bar = Progress(stems, desc="evaluate", enabled=progress)
    for stem in bar:
        pair = _read_pair(preds[stem], labels[stem], threshold, resize_labels, problems)
        if pair is None or problems:
            continue  # already failing: only look for the remaining problems
        matrices.append(confusion_matrices(*pair)[0])
        running += matrices[-1]
        bar.set_postfix(nodule_iou=float(iou(running)[1]))
        pair_hd95, pair_nsd = boundary_metrics(*pair, tolerance=tolerance, spacing=pixel_spacing)
        hd95.append(pair_hd95)
        nsd.append(pair_nsd)
    problems.raise_any(pred_dir, label_dir, len(stems))
    return FolderEvaluation(
        tuple(stems),
        ConfusionMatrix.from_matrices(np.stack(matrices)),
        np.array(hd95),
        np.array(nsd),
        float(tolerance),
        pixel_spacing,
        only_pred,
        only_label,
    )


def _list_folders(pred_dir: PathLike, label_dir: PathLike) -> tuple[dict[str, Path], ...]:
    """The images of both folders by stem; a warning when they are the same folder."""
    preds, labels = list_images(pred_dir), list_images(label_dir)
    if Path(pred_dir).samefile(label_dir):
        warnings.warn(
            f"{pred_dir} and {label_dir} are the same folder: every mask is scored against itself",
            UserWarning,
            stacklevel=3,
        )
    return preds, labels


@dataclass
class _Problems:
    """What `evaluate_folders` found wrong, collected over the whole folder."""

    unreadable: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    grey_predictions: int = 0
    grey_labels: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.unreadable or self.mismatches)

    def raise_any(self, pred_dir: PathLike, label_dir: PathLike, pairs: int) -> None:
        """One error listing every problem, if there is any (swapped folders said first)."""
        if len(self.grey_labels) == pairs and not self.grey_predictions:
            raise ValueError(
                f"the labels in {label_dir} look like scans, not masks: none of its {pairs} "
                f"files is binary ({self.grey_labels[0]}), while the predictions in "
                f"{pred_dir} are; are the folders swapped? evaluate takes the predictions "
                "first, then the labels (PRED_DIR LABEL_DIR)"
            )
        parts = []
        if self.unreadable:
            lines = "".join(f"\n  {problem}" for problem in self.unreadable)
            parts.append(f"{len(self.unreadable)} mask files cannot be used:{lines}")
        if self.mismatches:
            parts.append(
                f"{len(self.mismatches)} prediction/label pairs differ in size (width x "
                f"height): {_some(self.mismatches)}; pass resize_labels=True (--resize-labels) "
                "to resize the labels with nearest-neighbour interpolation"
            )
        if parts:
            raise ValueError("\n".join(parts))


def _read_pair(
    pred_path: Path,
    label_path: Path,
    threshold: float | None,
    resize_labels: bool,
    problems: _Problems,
) -> tuple[np.ndarray, np.ndarray] | None:
    """A prediction and its label, the label resized if asked; ``None`` after a problem."""
    pred = _read_mask(pred_path, threshold, problems, label=False)
    label = _read_mask(label_path, threshold, problems, label=True)
    if pred is None or label is None:
        return None
    if pred.shape != label.shape:
        if not resize_labels:
            problems.mismatches.append(
                f"{pred_path.name} {pred.shape[1]}x{pred.shape[0]} vs "
                f"{label_path.name} {label.shape[1]}x{label.shape[0]}"
            )
            return None
        label = resize_mask(label, pred.shape)
    return pred, label


def _pair_stems(
    preds: Mapping[str, Path],
    labels: Mapping[str, Path],
    pred_dir: PathLike,
    label_dir: PathLike,
    common_only: bool,
) -> tuple[list[str], tuple[str, ...], tuple[str, ...]]:
    """Common stems (sorted) and the stems only in the predictions / only in the labels."""
    only_pred = tuple(sorted(preds.keys() - labels.keys()))
    only_label = tuple(sorted(labels.keys() - preds.keys()))
    if (only_pred or only_label) and not common_only:
        parts = []
        if only_pred:
            parts.append(f"predictions without a label in {label_dir}: {_some(only_pred)}")
        if only_label:
            parts.append(f"labels without a prediction in {pred_dir}: {_some(only_label)}")
        raise ValueError(
            "; ".join(parts) + "; pass common_only=True (--common-only) to score only the "
            "stems both folders have"
        )
    stems = sorted(preds.keys() & labels.keys())
    if not stems:
        raise ValueError(f"{pred_dir} and {label_dir} have no file stem in common")
    return stems, only_pred, only_label


def _read_mask(
    path: Path, threshold: float | None, problems: _Problems, *, label: bool
) -> np.ndarray | None:
    """The mask at ``path``, or ``None`` after adding why it cannot be read to ``problems``."""
    try:
        return read_binary_mask(path, threshold=threshold)
    except NotBinaryMaskError as error:  # a grey image: a scan, or a probability map
        if label:
            problems.grey_labels.append(str(error).partition("; ")[0])
        else:
            problems.grey_predictions += 1
        problems.unreadable.append(str(error))
    except ValueError as error:  # its message starts with the path
        problems.unreadable.append(str(error))
    except OSError as error:
        problems.unreadable.append(f"{path}: {error.strerror}" if error.strerror else str(error))
    return None


def _some(items: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
