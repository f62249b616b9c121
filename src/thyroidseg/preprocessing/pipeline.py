"""From a raw ultrasound scanner frame to network input, and masks both ways.

A scanner frame holds much more than the ultrasound image: black borders, columns of
scanner settings, side labels (DER/IZQ), a grey-scale bar, a body-marker icon, depth ticks,
and, inside the image, caliper crosses and typed notes. `preprocess` turns such a
frame into a fixed-size network input in five switchable steps, each public in the module
of `thyroidseg.preprocessing` that owns it:

1. `thyroidseg.preprocessing.scan_region`: `find_views` / `find_scan_region`, the
   ultrasound field of view, one box per view on split-screen frames
   (`thyroidseg.preprocessing.geometry.Box`, original pixel coordinates), and a crop to it.
2. `thyroidseg.preprocessing.inpainting`: `find_annotations` + `inpaint_annotations`,
   burned-in marks inside the field of view (thin, bright, high-contrast strokes; coloured
   pixels) are filled from their unmarked neighbours.
3. `thyroidseg.preprocessing.geometry`: `fit_box` / `resize` to the network size,
   ``"letterbox"`` (aspect kept, zero padding) or ``"stretch"``.
4. `thyroidseg.preprocessing.intensity`: `equalize`, ``"clahe"`` or ``"global"`` histogram
   equalisation.
5. `thyroidseg.preprocessing.intensity`: `smooth`, ``"median"``, ``"gaussian"`` or
   ``"bilateral"`` speckle smoothing.

Equalisation and smoothing run on the resized content *before* the letterbox padding is
added, so the padding never enters the histogram and the work is done on the smaller image.

The `Preprocessed` result carries the geometry: `Preprocessed.mask_to_network`
and `Preprocessed.mask_to_original` move masks between the two frames by
nearest-neighbour sampling with pixel-centre alignment, so a round trip moves a mask
boundary by at most `Preprocessed.round_trip_radius` pixels (see there).
`preprocess_folder` runs `preprocess` over a folder.

Examples
--------
>>> import cv2
>>> import numpy as np
>>> frame = np.zeros((360, 560), np.uint8)
>>> rng = np.random.default_rng(0)
>>> frame[20:320, 90:470] = rng.integers(20, 200, (300, 380))   # the field of view
>>> frame[30:40, 500:540] = 255                                  # a scanner text block
>>> result = preprocess(frame, size=(128, 128))
>>> result.views                       # the field of view
[Box(x0=90, y0=20, x1=470, y1=320)]
>>> result.box                         # the crop: plus a 6 px margin
Box(x0=84, y0=14, x1=476, y1=326)
>>> result.image.shape, result.image.dtype
((128, 128), dtype('uint8'))
>>> mask = np.zeros((360, 560), np.uint8)
>>> mask[100:200, 200:300] = 1
>>> back = result.mask_to_original(result.mask_to_network(mask))
>>> ry, rx = result.round_trip_radius   # no pixel moves further than this
>>> grown = cv2.dilate(mask, np.ones((2 * ry + 1, 2 * rx + 1), np.uint8))
>>> back.shape, bool((back <= grown).all())
((360, 560), True)
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thyroidseg._checks import PathLike, check_int
from thyroidseg.io.files import write_image
from thyroidseg.io.folder_loop import map_folder
from thyroidseg.preprocessing.geometry import (
    RESIZE_MODES,
    Box,
    ResizeMode,
    _nearest,
    _resize_to,
    _union,
    check_size,
    fit_box,
)
from thyroidseg.preprocessing.inpainting import _inpaint_marks
from thyroidseg.preprocessing.intensity import (
    EQUALIZE_METHODS,
    SMOOTH_METHODS,
    EqualizeMethod,
    SmoothMethod,
    _load_frame,
    _to_gray,
    equalize,
    smooth,
)
from thyroidseg.preprocessing.scan_region import _find_views

__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_SIZE",
    "Preprocessed",
    "preprocess",
    "preprocess_folder",
    "preprocess_settings",
    "to_unit_range",
]


DEFAULT_SIZE: tuple[int, int] = (128, 128)
"""The network frame of the shipped model and of the default recipe (`preprocess`,
`thyroidseg.data.ThyroidDataset`, ``thyroidseg train``): chosen by grouped cross-validation
on DDTI (docs/model-card.md)."""


def to_unit_range(frames: np.ndarray) -> np.ndarray:
    """``uint8`` network frames (`Preprocessed.image`, any shape) as ``float32`` in ``[0, 1]``.

    The one scaling between `preprocess` and the network, shared by training
    (`thyroidseg.data.ThyroidDataset`) and prediction (`thyroidseg.inference.Segmenter`):
    ``frames / 255``.

    >>> to_unit_range(np.array([0, 51, 255], np.uint8))
    array([0. , 0.2, 1. ], dtype=float32)
    """
    return frames.astype(np.float32) / np.float32(255.0)


def _round_trip_radius(source: int, target: int) -> int:
    """Largest shift of a pixel in a source -> target -> source nearest round trip."""
    return 0 if source <= target else int(np.floor(source / (2 * target) + 0.5))


# --------------------------------------------------------------------------- pipeline


@dataclass(frozen=True, eq=False)
class Preprocessed:
    """A preprocessed frame and the geometry that links it to the original frame.

    Attributes
    ----------
    image
        ``uint8 (H, W)`` network input (divide by 255 for ``[0, 1]``).
    box
        The crop in original coordinates: the scan region plus ``margin``, clipped to the
        frame (the whole frame with ``crop=False``). Crop pixels outside every view (the
        margin, a gap between views) are set to 0.
    views
        Field of view of each view in original coordinates (two on split-screen frames).
    content
        Where ``box`` lands in the network frame; outside it is letterbox padding (zeros).
    original_shape
        ``(height, width)`` of the original frame.
    settings
        The keyword arguments `preprocess` ran with.
    cleaned
        ``uint8`` grey crop ``box`` at the original resolution, after the views were kept
        and the marks inpainted: what was resized (`thyroidseg.inference.refine` cuts its crops from
        it). ``None`` for a `Preprocessed` made by hand.
    """

    image: np.ndarray
    box: Box
    views: list[Box]
    content: Box
    original_shape: tuple[int, int]
    settings: dict[str, object] = field(default_factory=dict)
    cleaned: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def size(self) -> tuple[int, int]:
        """Network ``(height, width)``."""
        return self.image.shape[0], self.image.shape[1]

    @property
    def scale(self) -> tuple[float, float]:
        """``(sy, sx)``: network pixels per original pixel along each axis."""
        return self.content.height / self.box.height, self.content.width / self.box.width

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """Letterbox padding ``(top, bottom, left, right)`` in network pixels."""
        height, width = self.size
        return (
            self.content.y0,
            height - self.content.y1,
            self.content.x0,
            width - self.content.x1,
        )

    @property
    def round_trip_radius(self) -> tuple[int, int]:
        """``(ry, rx)``: how far a mask round trip can move a pixel, in original pixels.

        `mask_to_original` of `mask_to_network` gives each pixel of ``box`` the
        value of an original pixel at most ``ry`` rows and ``rx`` columns away, with
        $r = \\lfloor b / (2c) + 1/2 \\rfloor$ when the box side ``b`` is shrunk to
        the content side ``c``, and 0 when it is enlarged (the round trip is then exact).
        So for a mask ``M`` inside ``box``: ``erode(M) <= round_trip(M) <= dilate(M)``
        with a ``(2 ry + 1) x (2 rx + 1)`` rectangle; only pixels within that distance of
        the mask boundary can change, and
        $\\mathrm{IoU} \\ge |\\mathrm{erode}(M)| / |\\mathrm{dilate}(M)|$.
        A 385x300 DDTI scan region at 256x256 letterbox gives ``(1, 1)``.
        """
        return (
            _round_trip_radius(self.box.height, self.content.height),
            _round_trip_radius(self.box.width, self.content.width),
        )

    def mask_to_network(self, mask: np.ndarray) -> np.ndarray:
        """Carry a mask (or label map) from the original frame to the network frame.

        Crop to ``box``, nearest-neighbour resize into ``content``, zero padding. The dtype
        is kept; pixels outside ``box`` are dropped.
        """
        mask = self._check_mask(mask, self.original_shape, "original frame")
        out = np.zeros(self.size, mask.dtype)
        rows = self.box.y0 + _nearest(self.box.height, self.content.height)
        cols = self.box.x0 + _nearest(self.box.width, self.content.width)
        out[self.content.slices] = mask[np.ix_(rows, cols)]
        return out

    def mask_to_original(self, mask: np.ndarray) -> np.ndarray:
        """Carry a mask predicted on the network frame back to the original frame and size.

        The ``content`` part is nearest-neighbour resized onto ``box``; everything outside
        ``box`` is 0. The dtype is kept (probabilities work too).
        """
        mask = self._check_mask(mask, self.size, "network frame")
        out = np.zeros(self.original_shape, mask.dtype)
        rows = self.content.y0 + _nearest(self.content.height, self.box.height)
        cols = self.content.x0 + _nearest(self.content.width, self.box.width)
        out[self.box.slices] = mask[np.ix_(rows, cols)]
        return out

    def cleaned_frame(self) -> np.ndarray:
        """The frame at its original size as the steps before resizing left it.

        ``cleaned`` in its place ``box``, zero elsewhere: ``uint8`` ``(H, W)``.

        Raises
        ------
        ValueError
            This `Preprocessed` was made by hand, without ``cleaned``.
        """
        if self.cleaned is None:
            raise ValueError("this Preprocessed holds no cleaned frame (made without preprocess)")
        frame = np.zeros(self.original_shape, np.uint8)
        frame[self.box.slices] = self.cleaned
        return frame

    def to_dict(self) -> dict[str, object]:
        """JSON-ready geometry and settings (no pixels)."""
        top, bottom, left, right = self.padding
        return {
            "original_shape": list(self.original_shape),
            "size": list(self.size),
            "box": list(self.box),
            "views": [list(view) for view in self.views],
            "content": list(self.content),
            "scale": list(self.scale),
            "padding": {"top": top, "bottom": bottom, "left": left, "right": right},
            "round_trip_radius": list(self.round_trip_radius),
            "settings": dict(self.settings),
        }

    @staticmethod
    def _check_mask(mask: np.ndarray, shape: tuple[int, int], frame: str) -> np.ndarray:
        if not isinstance(mask, np.ndarray):
            raise ValueError(f"mask: expected a numpy array, got {type(mask).__name__}")
        if mask.shape != tuple(shape):
            raise ValueError(
                f"mask of shape {mask.shape} does not match the {frame} {tuple(shape)}"
            )
        return mask


DEFAULT_MARGIN = 6
"""Pixels added around the scan region by `preprocess`: DDTI masks spill at most 6 px
past the field of view (onto black), so this keeps every labelled pixel (docs/preprocess.md)."""


def preprocess(
    image: np.ndarray | PathLike,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    crop: bool = True,
    margin: int = DEFAULT_MARGIN,
    inpaint_annotations: bool = True,
    equalization: EqualizeMethod | None = "clahe",
    smoothing: SmoothMethod | None = "median",
    resize_mode: ResizeMode = "letterbox",
) -> Preprocessed:
    """Turn a scanner frame into network input; every step can be switched off.

    Steps: 8-bit grey (`to_gray_uint8`) -> crop to the scan region plus ``margin``
    (`find_scan_region`) -> inpaint burned-in marks (`find_annotations`,
    `inpaint_annotations`) -> resize the crop into its place in ``size``
    (`fit_box`) -> `equalize` -> `smooth` -> zero letterbox padding.
    Equalisation and smoothing see only the resized content, never the padding.

    Parameters
    ----------
    image
        ``uint8``/``uint16`` ``(H, W)`` or BGR ``(H, W, 3)`` array, or an image path.
    size
        Network ``(height, width)``; default `DEFAULT_SIZE`, the shipped model's 128 x 128.
    crop
        Crop to the scan region. With False, ``box`` and the single view are the whole
        frame (for images that are already cropped).
    margin
        Pixels added on each side of the scan region (clipped to the frame), so that mask
        pixels drawn just past the field of view survive `Preprocessed.mask_to_network`.
        Image pixels outside the views are set to 0 (no ticks or markers come in with it).
    inpaint_annotations
        Fill text, caliper marks and colour overlays inside the crop.
    equalization
        ``"clahe"``, ``"global"`` or None.
    smoothing
        ``"median"``, ``"gaussian"``, ``"bilateral"`` (3x3) or None.
    resize_mode
        ``"letterbox"`` (aspect kept, zero padding) or ``"stretch"``.

    Returns
    -------
    Preprocessed

    Raises
    ------
    ValueError
        Bad image (see `to_gray_uint8`), no field of view found (use
        ``crop=False``), or a bad setting.
    """
    settings = preprocess_settings(
        size=size,
        crop=crop,
        margin=margin,
        inpaint_annotations=inpaint_annotations,
        equalization=equalization,
        smoothing=smoothing,
        resize_mode=resize_mode,
    )
    network_size = check_size(size)
    array, name = _load_frame(image)
    gray = _to_gray(array, name)
    if crop:
        views = _find_views(gray, name)
        box = _union(views).grow(margin, gray.shape)
    else:
        box = Box(0, 0, gray.shape[1], gray.shape[0])
        views = [box]
    content = fit_box((box.height, box.width), size, resize_mode)
    patch = gray[box.slices]
    if crop and (margin > 0 or len(views) > 1):
        # Only the views are image: the margin and any gap between views become 0, so
        # ticks and markers just outside the field of view do not come in with the margin.
        patch = np.zeros_like(patch)
        for view in views:
            inner = Box(view.x0 - box.x0, view.y0 - box.y0, view.x1 - box.x0, view.y1 - box.y0)
            patch[inner.slices] = gray[view.slices]
    if inpaint_annotations:
        patch = _inpaint_marks(patch, array[box.slices])
    cleaned = patch
    patch = _resize_to(patch, content.height, content.width)
    if equalization is not None:
        patch = equalize(patch, equalization)
    if smoothing is not None:
        patch = smooth(patch, smoothing)
    out = np.zeros(network_size, np.uint8)
    out[content.slices] = patch
    return Preprocessed(out, box, views, content, gray.shape, settings, cleaned)


def preprocess_settings(**settings: object) -> dict[str, object]:
    """The keyword arguments of `preprocess`, checked, as JSON-ready settings: all of them.

    Unknown names are a ``TypeError`` and missing ones take `preprocess`'s defaults, so a
    folder run can check its options before it reads the first image, and an exported
    segmenter's description (`thyroidseg.inference.base.SegmenterBase.describe`) states
    every one.

    >>> preprocess_settings(size=(96, 128))["size"], preprocess_settings()["equalization"]
    ([96, 128], 'clahe')
    """
    bound = inspect.signature(preprocess).bind_partial(**settings)
    bound.apply_defaults()
    checked = dict(bound.arguments)
    checked.pop("image", None)
    checked["size"] = list(check_size(checked["size"]))  # type: ignore[arg-type]
    check_int("margin", checked["margin"], 0)
    _check_choice("equalization", checked["equalization"], (*EQUALIZE_METHODS, None))
    _check_choice("smoothing", checked["smoothing"], (*SMOOTH_METHODS, None))
    _check_choice("resize_mode", checked["resize_mode"], RESIZE_MODES)
    return checked


def _check_choice(name: str, value: object, allowed: tuple[object, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def preprocess_folder(
    in_dir: PathLike,
    out_dir: PathLike,
    *,
    json_path: PathLike | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    **options: object,
) -> dict[str, Any]:
    """Preprocess every image of ``in_dir`` into ``out_dir`` (``<stem>.png``) plus a JSON.

    The JSON (``out_dir/preprocess.json`` unless ``json_path`` is given) holds the
    settings and, per stem, the source file and `Preprocessed.to_dict`; it is
    written once all images are done. Every file is written atomically. Existing outputs
    (images or the JSON) are an error unless ``overwrite``, checked for all of them before
    anything is written. An image that cannot be read or preprocessed does not stop the
    others: each failure is recorded under ``"errors"`` in the JSON, and once everything
    else is written a ``ValueError`` lists every failed file (`thyroidseg.io.folder_loop.map_folder`
    runs the loop).

    Parameters
    ----------
    in_dir, out_dir
        Input folder (not recursive; see `thyroidseg.io.files.list_images`) and output
        folder (created; must differ from ``in_dir``).
    json_path
        Where to write the JSON.
    overwrite
        Replace existing outputs.
    progress
        Progress bar on standard error (`thyroidseg._progress.Progress`): None draws
        it on a terminal and prints one summary line otherwise, False prints nothing.
    **options
        Keyword arguments of `preprocess`.

    Returns
    -------
    dict
        What was written to the JSON.

    Raises
    ------
    ValueError, FileNotFoundError
        Empty or missing ``in_dir``, ``out_dir`` equal to it, or images that could not
        be preprocessed (the message names each file; all other images and the JSON are
        written first).
    FileExistsError
        Outputs exist and ``overwrite`` is False; nothing was written.
    """
    preprocess_settings(**options)
    json_path = Path(out_dir) / "preprocess.json" if json_path is None else Path(json_path)
    records: dict[str, object] = {}
    summary: dict[str, object] = {"settings": {}, "images": records, "errors": {}}

    def load(source: Path) -> tuple[Path, Preprocessed]:
        return source, preprocess(source, **options)  # type: ignore[arg-type]

    def save(batch: dict[Path, tuple[Path, Preprocessed]]) -> None:
        for target, (source, result) in batch.items():
            write_image(target, result.image)
            record = result.to_dict()
            summary["settings"] = record.pop("settings")
            records[target.stem] = {"source": str(source), **record}

    def make_json(errors: dict[str, str]) -> bytes:
        summary["errors"] = errors
        return (json.dumps(summary, indent=1) + "\n").encode()

    map_folder(
        in_dir,
        out_dir,
        load,
        save,
        verb="preprocessed",
        overwrite=overwrite,
        summary=(json_path, make_json),
        progress=progress,
    )
    return summary
