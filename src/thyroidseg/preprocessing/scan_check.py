"""Is a frame a thyroid B-mode scan? Three cues measured on its scan region, before any network.

A model trained on thyroid B-mode frames outlines "nodules" on any ultrasound frame it is
given: an obstetric fan, a colour-Doppler lymph node, an echocardiogram. `check_scan` says,
per frame and with the reason, when a frame does not look like what the model was trained
on, so that its nodules can be flagged for review. It reads the frame as it was read and the
views that `thyroidseg.preprocessing.preprocess` found (`Preprocessed.views`): nothing of
the scan region is searched again. The cues and their limits, measured on DDTI and on
vendor files of other organs, are in docs/quality.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from thyroidseg.preprocessing.geometry import Box
from thyroidseg.preprocessing.inpainting import _color_marks
from thyroidseg.preprocessing.intensity import _to_gray
from thyroidseg.preprocessing.pipeline import Preprocessed
from thyroidseg.preprocessing.scan_region import _COARSE, _image_blocks

__all__ = [
    "BACKGROUND_QUANTILE",
    "COLOUR_LIMIT",
    "ECHO_LIMIT",
    "ECHO_MARGIN",
    "TOP_EDGE_LIMIT",
    "ScanCheck",
    "check_scan",
]

COLOUR_LIMIT = 0.02
"""Largest share of scan-region pixels with colour (channels differing by >= 40 grey levels)
in a thyroid B-mode frame. DDTI: at most 0.002 (caliper marks); colour Doppler and
palette-colour frames: 0.12 and more."""
TOP_EDGE_LIMIT = 0.1
"""Largest spread of the scan region's top edge, as a share of its width, for a linear probe.
DDTI: at most 0.016 (flat); convex and phased-array fans: 0.5 and more."""
ECHO_LIMIT = 0.5
"""Smallest share of the scan region that shows echo. DDTI: at least 0.73; a probe in air or
a fan inside a larger dark box: 0.31 and less."""
BACKGROUND_QUANTILE = 0.05
"""The frame's background grey level is this quantile of its grey levels."""
ECHO_MARGIN = 2
"""A pixel shows echo when it is more than this many grey levels over the background (JPEG
noise on the background stays within it)."""
_ABOVE = 4
"""The top edge is followed upward for at most a quarter (1/4) of the view's height."""


@dataclass(frozen=True)
class ScanCheck:
    """Whether a frame looks like a thyroid B-mode scan, why not, and the cues measured.

    Attributes
    ----------
    thyroid_bmode
        True when every cue is within its limit.
    reasons
        One sentence in plain words per cue out of its limit; empty when ``thyroid_bmode``.
    failed
        The names of those cues (``"colour"``, ``"top_edge"``, ``"echo"``), in the order of
        ``reasons``.
    colour_share
        Largest share, over the views, of pixels with colour (`COLOUR_LIMIT`).
    top_edge_spread
        Largest spread, over the views, of the top edge (`TOP_EDGE_LIMIT`).
    echo_share
        Smallest share, over the views, of 4x4-pixel blocks with echo (`ECHO_LIMIT`).
    """

    thyroid_bmode: bool
    reasons: tuple[str, ...]
    failed: tuple[str, ...]
    colour_share: float
    top_edge_spread: float
    echo_share: float

    def to_dict(self) -> dict[str, object]:
        """JSON-ready fields."""
        return {
            "thyroid_bmode": self.thyroid_bmode,
            "reasons": list(self.reasons),
            "failed": list(self.failed),
            "colour_share": self.colour_share,
            "top_edge_spread": self.top_edge_spread,
            "echo_share": self.echo_share,
        }


def check_scan(frame: np.ndarray, preprocessed: Preprocessed, *, name: str = "image") -> ScanCheck:
    """Check that a frame looks like a thyroid B-mode scan from a linear probe.

    Three cues, each measured in every view $V$ of ``preprocessed.views`` (the worst view
    counts):

    1. *Colour*: the share of pixels of $V$ whose channels differ by at least 40 grey
       levels (40 x 257 on 16 bits), $c = |\\{p \\in V : \\max_k I_k(p) - \\min_k I_k(p)
       \\ge 40\\}| / |V|$ (the colour marks that preprocessing inpaints). Thyroid B-mode
       is grey with a few coloured caliper marks; colour Doppler and palette-colour images
       are not. Fails when $c >$ `COLOUR_LIMIT`. Colour outside the views (logos, scanner
       text) never counts.
    2. *Top edge*: echo blocks $E$ are the 4x4-pixel blocks (as `find_views` cuts them)
       with more than half of their pixels over the background level $b + 2$ ($b$ the 5%
       quantile of the frame's grey levels), opened by 5x5 blocks. For each block column
       $j$ of $V$, the top edge $t_j$ is the first echo row of $V$, followed upward through
       echo rows above $V$ (at most a quarter of $V$'s height). The spread
       $s = (P_{90}(t) - P_{10}(t)) / w$, with $w$ the width of $V$ in blocks, is 0 for
       the flat skin line of a linear probe and large for the arc of a convex probe or the
       apex of a phased-array sector. Fails when $s >$ `TOP_EDGE_LIMIT`.
    3. *Echo*: the share $e = |E \\cap V| / |V|$ of blocks of $V$ with echo. Fails when
       $e <$ `ECHO_LIMIT`: a probe in air, or a fan drawn in a larger dark box.

    Parameters
    ----------
    frame
        The frame as read (``uint8``/``uint16``, ``(H, W)`` grey or ``(H, W, 3)`` BGR), the
        one ``preprocessed`` was made from.
    preprocessed
        `preprocess`'s result for ``frame`` (its ``views``; with ``crop=False`` the whole
        frame is the one view).
    name
        Names the frame in error messages (a file name).

    Returns
    -------
    ScanCheck

    Raises
    ------
    TypeError
        ``preprocessed`` is not a `Preprocessed`.
    ValueError
        A frame of a wrong shape or dtype (a float frame, NaN included), empty or constant,
        one whose size is not ``preprocessed.original_shape``, or a `Preprocessed` without
        views.

    Examples
    --------
    >>> from thyroidseg.preprocessing import preprocess
    >>> frame = np.zeros((360, 560), np.uint8)
    >>> frame[20:320, 90:470] = np.random.default_rng(0).integers(20, 200, (300, 380))
    >>> check_scan(frame, preprocess(frame)).thyroid_bmode
    True
    """
    if not isinstance(preprocessed, Preprocessed):
        raise TypeError(
            f"{name}: preprocessed must be a Preprocessed, got {type(preprocessed).__name__}"
        )
    gray = _to_gray(frame, name)
    if gray.shape != tuple(preprocessed.original_shape):
        raise ValueError(
            f"{name}: frame of shape {gray.shape} is not the frame that was preprocessed "
            f"(original_shape {tuple(preprocessed.original_shape)})"
        )
    views = preprocessed.views
    if not views:
        raise ValueError(f"{name}: the Preprocessed holds no view to check")
    echo = _image_blocks(_echo_pixels(gray))
    colour = max(_colour_share(frame[view.slices]) for view in views)
    spread = max(_top_edge_spread(echo, _blocks_of(view)) for view in views)
    share = min(_echo_share(echo, _blocks_of(view)) for view in views)
    failed = tuple(
        cue
        for cue, out in (
            ("colour", colour > COLOUR_LIMIT),
            ("top_edge", spread > TOP_EDGE_LIMIT),
            ("echo", share < ECHO_LIMIT),
        )
        if out
    )
    reasons = tuple(
        _REASONS[cue].format(colour=colour, spread=spread, share=share) for cue in failed
    )
    return ScanCheck(not failed, reasons, failed, colour, spread, share)


_REASONS = {
    "colour": (
        "{colour:.0%} of the scan region is in colour (colour Doppler or a palette-colour "
        "image; thyroid B-mode is grey)"
    ),
    "top_edge": (
        "the top edge of the scan region is curved or pointed (spread {spread:.2f} of its "
        "width): a convex or phased-array fan, not the rectangle of a linear thyroid probe"
    ),
    "echo": (
        "only {share:.0%} of the scan region shows echo (a probe in air, a blank screen, or "
        "an image that fills a small part of its box)"
    ),
}


def _echo_pixels(gray: np.ndarray) -> np.ndarray:
    """0/1 ``uint8``: pixels more than `ECHO_MARGIN` over the background level."""
    counts = np.cumsum(cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel())
    background = int(np.searchsorted(counts, BACKGROUND_QUANTILE * gray.size))
    return (gray > background + ECHO_MARGIN).view(np.uint8)


def _colour_share(pixels: np.ndarray) -> float:
    marks = _color_marks(pixels)
    return 0.0 if marks is None else float(marks.mean())


def _blocks_of(view: Box) -> Box:
    """The block rows and columns of ``view`` (at least one of each)."""
    x0, y0 = view.x0 // _COARSE, view.y0 // _COARSE
    return Box(x0, y0, max(view.x1 // _COARSE, x0 + 1), max(view.y1 // _COARSE, y0 + 1))


def _echo_share(echo: np.ndarray, view: Box) -> float:
    inside = echo[view.slices]
    return float(inside.mean()) if inside.size else 0.0


def _top_edge_spread(echo: np.ndarray, view: Box) -> float:
    inside = echo[view.slices].astype(bool)
    shown = inside.any(axis=0)
    if shown.sum() < 2:
        return 0.0
    first = np.argmax(inside, axis=0)  # first echo row of each column, inside the view
    reach = min(view.y0, view.height // _ABOVE)
    above = echo[view.y0 - reach : view.y0, view.x0 : view.x0 + inside.shape[1]][::-1]
    # Echo rows right above the view, counted upward until the first gap.
    rise = _leading_true(above.astype(bool)) * inside[0]
    top = (first - rise)[shown]
    low, high = np.percentile(top, [10, 90])
    return float(high - low) / inside.shape[1]


def _leading_true(mask: np.ndarray) -> np.ndarray:
    """Per column, how many rows from the first one are True before the first False."""
    stop = np.zeros((1, mask.shape[1]), bool)
    return np.argmin(np.concatenate([mask, stop]), axis=0)
