"""The HTML review report of ``thyroidseg predict --report``: one offline file to look through.

`ReportBuilder` collects, frame by frame as ``predict`` segments them, a small JPEG of each
frame with its predicted outline (the picture of `thyroidseg.inference.overlay.overlay`,
longest side `THUMBNAIL_SIDE` pixels) and its nodules' measurements; `ReportBuilder.write` renders
``OUT/report.html``: a summary (frames, nodules, nodules flagged for review, frames without
a nodule, the model's name, version and weights SHA-256, the settings and the command),
then one entry per image and per cine loop (its frames inside), flagged ones first.

The file is self-contained: every picture is embedded as a ``data:`` URI, the style sheet
and the small script (sorting, filtering) are inline, and nothing is loaded from another
host. `needs_review` is the flagging rule (docs/report.md gives its rationale).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from thyroidseg._checks import PathLike
from thyroidseg.io.files import atomic_write_bytes
from thyroidseg.io.provenance import ModelIdentity

if TYPE_CHECKING:  # io lies below inference, which writes the report through this module
    from thyroidseg.inference.measurements import ImageKey, Nodule

__all__ = [
    "REPORT_HTML",
    "REVIEW_BELOW",
    "THUMBNAIL_SIDE",
    "ReportBuilder",
    "ReportFrame",
    "counted",
    "needs_review",
    "review_score",
]

REPORT_HTML = "report.html"
"""File name of the report in ``predict``'s output folder."""

THUMBNAIL_SIDE = 320
"""Longest side, in pixels, of the pictures embedded in the report."""

REVIEW_BELOW: dict[str, float] = {"mean_probability": 0.9}
"""A nodule the model does not rate is flagged for review when its `review_score` is under
the threshold of its kind (a rated one: `Nodule.review`, the estimator's threshold)."""

_JPEG_QUALITY = 75


def review_score(nodule: Nodule) -> tuple[str, float | None]:
    """The score a nodule is ordered and flagged by, and its kind.

    ``("expected_iou", e)`` when the nodule carries an expected IoU (a quality estimate),
    else ``("mean_probability", p)``: the mean nodule probability over its pixels
    (``None`` when it was not computed).
    """
    if nodule.expected_iou is not None:
        return "expected_iou", float(nodule.expected_iou)
    return "mean_probability", nodule.mean_probability


def needs_review(nodule: Nodule) -> bool:
    """Whether a reader should check this nodule.

    A nodule the model rated (``nodule.review`` set: its expected IoU is under the
    estimator's threshold, `thyroidseg.inference.quality.ExpectedIoU`) follows that rating;
    any other follows ``score < REVIEW_BELOW[kind]`` with `review_score` ``(kind, score)``,
    and a nodule without any score is flagged too.

    >>> from thyroidseg.inference.measurements import measure
    >>> mask = np.ones((2, 2), np.uint8)
    >>> (nodule,) = measure(mask, probabilities=np.full((2, 2), 0.6, np.float32))
    >>> needs_review(nodule), review_score(nodule)
    (True, ('mean_probability', 0.6000000238418579))
    """
    if nodule.review is not None:
        return nodule.review
    kind, score = review_score(nodule)
    return score is None or score < REVIEW_BELOW[kind]


@dataclass(frozen=True)
class ReportFrame:
    """One frame of the report: its name, picture and nodules.

    Attributes
    ----------
    key
        Its measurements key: the image's file name, or ``(file name, frame number)``.
    picture
        JPEG bytes of the frame with its predicted outline, at most `THUMBNAIL_SIDE` wide
        and high.
    size
        The picture's ``(width, height)``.
    nodules
        Its nodules, as `thyroidseg.inference.measurements.measure` returns them.
    """

    key: ImageKey
    picture: bytes
    size: tuple[int, int]
    nodules: tuple[Nodule, ...]

    @property
    def name(self) -> str:
        """``file name`` or ``file name, frame N``."""
        return self.key if isinstance(self.key, str) else f"{self.key[0]}, frame {self.key[1]}"

    @property
    def flagged(self) -> list[Nodule]:
        """Its nodules that `needs_review` flags."""
        return [nodule for nodule in self.nodules if needs_review(nodule)]


class ReportBuilder:
    """Collects the frames of a ``predict`` run and writes the report.

    Parameters
    ----------
    path
        The report file (``OUT/report.html``).
    identity
        The model (`thyroidseg.inference.identity.model_identity`).
    settings
        Name -> value of the settings to show (JSON-ready values).
    command
        The command line that made the report.
    """

    def __init__(
        self, path: PathLike, identity: ModelIdentity, settings: Mapping[str, Any], command: str
    ) -> None:
        self.path = Path(path)
        self.identity, self.settings, self.command = identity, dict(settings), command
        self.frames: list[ReportFrame] = []
        self.failures: str | None = None

    def add(self, key: ImageKey, picture: np.ndarray, nodules: Sequence[Nodule]) -> None:
        """Add one segmented frame: ``picture`` (BGR, the frame with its outline) is shrunk
        and compressed now."""
        height, width = picture.shape[:2]
        scale = min(1.0, THUMBNAIL_SIDE / max(height, width))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if scale < 1.0:
            picture = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
        if not ok:
            raise ValueError(f"{key}: the report picture could not be encoded")
        self.frames.append(ReportFrame(key, data.tobytes(), size, tuple(nodules)))

    def write(self) -> Path:
        """Write the report atomically; returns its path."""
        atomic_write_bytes(self.path, self.render().encode("utf-8"))
        return self.path

    def render(self) -> str:
        """The report's HTML."""
        nodules = [nodule for frame in self.frames for nodule in frame.nodules]
        flagged = sum(1 for nodule in nodules if needs_review(nodule))
        empty = sum(1 for frame in self.frames if not frame.nodules)
        facts = [
            ("frames", counted(len(self.frames), "frame")),
            ("nodules", counted(len(nodules), "nodule")),
            ("flagged for review", counted(flagged, "nodule")),
            ("frames without a nodule", counted(empty, "frame")),
            ("review rule", _rule_text()),
            ("model", self.identity.name),
            ("thyroidseg version", self.identity.version),
            ("weights SHA-256", self.identity.sha256),
        ]
        if self.identity.refine_sha256 is not None:
            facts.append(("refine weights SHA-256", self.identity.refine_sha256))
        facts.append(("command", self.command))
        settings = [(name, json.dumps(value)) for name, value in self.settings.items()]
        failed = f'<p class="failed">{_e(self.failures)}</p>' if self.failures else ""
        return _PAGE.format(
            version=_e(self.identity.version),
            summary=_definitions(facts),
            settings=_definitions(settings),
            failed=failed,
            entries="\n".join(_entries(self.frames)),
        )


def _definitions(pairs: Sequence[tuple[str, str]]) -> str:
    return "".join(f"<dt>{_e(term)}</dt><dd>{_e(value)}</dd>" for term, value in pairs)


def _entries(frames: Sequence[ReportFrame]) -> list[str]:
    """One HTML entry per image and per loop, flagged ones first (lowest score first)."""
    groups: dict[str, list[ReportFrame]] = {}
    for frame in frames:
        groups.setdefault(frame.key if isinstance(frame.key, str) else frame.key[0], []).append(
            frame
        )
    ranked = sorted(groups.items(), key=lambda item: (_rank(item[1]), item[0]))
    return [
        _frame_entry(group[0], order)
        if isinstance(group[0].key, str)
        else _loop_entry(name, group, order)
        for order, (name, group) in enumerate(ranked)
    ]


def _rank(frames: Sequence[ReportFrame]) -> tuple[int, float]:
    """Sort key: frames with flagged nodules first, the lowest score first."""
    scores = [review_score(n)[1] for frame in frames for n in frame.flagged]
    lowest = min((s for s in scores if s is not None), default=-1.0 if scores else 2.0)
    return (0 if scores else 1, lowest)


def _frame_entry(frame: ReportFrame, order: int) -> str:
    flagged = bool(frame.flagged)
    mark = ' <span class="flag">review</span>' if flagged else ""
    warnings = sorted({n.scan_warning for n in frame.nodules if n.scan_warning})
    warned = "".join(f'<p class="warning">not a thyroid B-mode scan? {_e(w)}</p>' for w in warnings)
    return (
        f'<article class="entry{" flagged" * flagged}" data-name="{_e(frame.name)}" '
        f'data-order="{order}" data-flagged="{int(flagged)}"><h3>{_e(frame.name)}{mark}</h3>'
        f'{warned}<div class="body">{_picture(frame)}{_table(frame.nodules)}</div></article>'
    )


def _picture(frame: ReportFrame) -> str:
    data = base64.b64encode(frame.picture).decode("ascii")
    width, height = frame.size
    return (
        f'<img src="data:image/jpeg;base64,{data}" width="{width}" height="{height}" '
        f'loading="lazy" alt="{_e(frame.name)} with its predicted outline">'
    )


def _loop_entry(name: str, frames: Sequence[ReportFrame], order: int) -> str:
    flagged = [frame for frame in frames if frame.flagged]
    with_nodules = sum(1 for frame in frames if frame.nodules)
    mark = ' <span class="flag">review</span>' if flagged else ""
    inner = [_frame_entry(frame, k) for k, frame in enumerate(sorted(frames, key=_loop_order))]
    largest = max(frames, key=lambda frame: max((n.area_px for n in frame.nodules), default=-1))
    facts = (
        f"cine loop: {counted(len(frames), 'frame')} segmented, {with_nodules} with a nodule, "
        f"{len(flagged)} with a nodule flagged for review; shown: {largest.name}, the largest "
        "nodule's frame"
    )
    return (
        f'<section class="entry loop{" flagged" * bool(flagged)}" data-name="{_e(name)}" '
        f'data-order="{order}" data-flagged="{int(bool(flagged))}"><h2>{_e(name)}{mark}</h2>'
        f"<p>{_e(facts)}</p>{_picture(largest)}"
        f"<details{' open' * bool(flagged)}><summary>frames</summary>"
        f'<div class="frames">{"".join(inner)}</div></details></section>'
    )


def _loop_order(frame: ReportFrame) -> tuple[tuple[int, float], int]:
    return _rank([frame]), frame.key[1] if isinstance(frame.key, tuple) else 0


def _table(nodules: Sequence[Nodule]) -> str:
    """One row per nodule; the score column is named by its kind (mixed kinds: "score")."""
    if not nodules:
        return '<p class="none">no nodule</p>'
    kinds = {review_score(n)[0] for n in nodules}
    score_name = kinds.pop().replace("_", " ") if len(kinds) == 1 else "score"
    head = "".join(
        f"<th>{_e(h)}</th>"
        for h in ("#", "view", "area", "max diameter", "depth", "transverse", "taller than wide",
                  score_name, "spacing", "review")
    )  # fmt: skip
    rows = []
    for n in nodules:
        kind, score = review_score(n)
        scaled = n.area_mm2 is not None
        cells = (
            n.nodule,
            n.view,
            f"{n.area_mm2:.1f} mm²" if scaled else f"{n.area_px} px",
            _length(n.max_diameter_mm, n.max_diameter_px),
            _length(n.depth_mm, n.depth_px),
            _length(n.transverse_mm, n.transverse_px),
            "yes" if n.taller_than_wide else "no",
            "" if score is None else f"{score:.3f}" + ("" if score_name != "score" else f" {kind}"),
            n.spacing_source if scaled else "none (px)",
            "flagged" if needs_review(n) else "",
        )
        rows.append("<tr>" + "".join(f"<td>{_e(str(c))}</td>" for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _length(mm: float | None, px: float) -> str:
    return f"{mm:.1f} mm" if mm is not None else f"{px:.0f} px"


def _rule_text() -> str:
    return (
        "flagged when its expected IoU is under the model's review threshold (when the model "
        f"rates its outlines), else when its mean probability < {REVIEW_BELOW['mean_probability']}"
    )


def counted(number: int, noun: str) -> str:
    """A count and its noun, singular for one: ``counted(1, "frame") == "1 frame"``."""
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="thyroidseg {version}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>thyroidseg report</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:1em;color:#222}}
dl{{display:grid;grid-template-columns:max-content auto;gap:2px 1em}}dt{{font-weight:600}}
dd{{margin:0;font-family:monospace;word-break:break-all}}
.entry{{border:1px solid #ccc;border-radius:4px;padding:.5em;margin:.5em 0;
content-visibility:auto;contain-intrinsic-size:auto 260px}}
.flagged{{border-color:#c00;border-width:2px}}.flag{{color:#fff;background:#c00;padding:0 .4em;
border-radius:3px;font-size:80%}}img{{display:block}}
.body{{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}}
.warning{{color:#a00;margin:.2em 0}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ddd;padding:1px 6px;text-align:right;
white-space:nowrap}}h2,h3{{margin:.2em 0}}
.frames{{display:flex;flex-wrap:wrap;gap:.5em}}.failed{{color:#c00}}.hidden{{display:none}}
</style></head><body>
<h1>thyroidseg report</h1>
<dl id="summary">{summary}</dl>
<details><summary>settings</summary><dl id="settings">{settings}</dl></details>
{failed}
<p id="controls"><label><input type="checkbox" id="flagged-only"> flagged only</label>
<label>order <select id="order"><option value="order">flagged first</option>
<option value="name">name</option></select></label> <span id="shown"></span></p>
<main id="entries">
{entries}
</main>
<script>
(function(){{
  var only=document.getElementById("flagged-only"),order=document.getElementById("order");
  function apply(){{
    document.querySelectorAll(".entry").forEach(function(e){{
      e.classList.toggle("hidden",only.checked&&e.dataset.flagged!=="1");}});
    document.querySelectorAll("#entries,.frames").forEach(function(box){{
      var items=Array.prototype.filter.call(box.children,function(e){{
        return e.classList.contains("entry");}});
      items.sort(function(a,b){{return order.value==="name"?
        a.dataset.name.localeCompare(b.dataset.name):a.dataset.order-b.dataset.order;}});
      items.forEach(function(e){{box.appendChild(e);}});}});
    var all=document.querySelectorAll("#entries>.entry");
    var hidden=document.querySelectorAll("#entries>.entry.hidden");
    document.getElementById("shown").textContent=
      "showing "+(all.length-hidden.length)+" of "+all.length+" entries";
  }}
  only.addEventListener("change",apply);order.addEventListener("change",apply);apply();
}})();
</script>
</body></html>
"""
