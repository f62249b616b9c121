"""Reading and writing image files with errors that name the file.

OpenCV's ``cv2.imread`` returns ``None`` for a missing, unreadable or corrupt file and
never says which; every reader in the library goes through `read_image` instead. DICOM
files (`thyroidseg.io.dicom.is_dicom`) are read there too, by `thyroidseg.io.dicom.read_frame`.
The loop of the folder commands over such files is `thyroidseg.io.folder_loop.map_folder`.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from thyroidseg._checks import PathLike
from thyroidseg._compat import moved_names
from thyroidseg.io.dicom import DICOM_EXTENSIONS, is_dicom, read_frame

__all__ = [
    "IMAGE_EXTENSIONS",
    "JPEG_MASK_THRESHOLD",
    "LOSSY_EXTENSIONS",
    "Inputs",
    "atomic_write_bytes",
    "check_mask_threshold",
    "csv_text",
    "image_stem",
    "list_images",
    "list_inputs",
    "read_binary_mask",
    "read_format_json",
    "read_image",
    "write_csv",
    "write_image",
    "NotBinaryMaskError",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", *DICOM_EXTENSIONS
)  # fmt: skip
"""File extensions (lower case) that count as images when a folder is listed (DICOM files
without one are recognised by content, `thyroidseg.io.dicom.is_dicom`)."""


def read_image(path: PathLike, *, grayscale: bool = False) -> np.ndarray:
    """Read an image file as it is stored (8- or 16-bit, 1 or 3 channels).

    Parameters
    ----------
    path
        The file to read.
    grayscale
        Convert colour images to one channel (OpenCV's luminance weights).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` or ``(H, W, 3)`` (BGR); an alpha channel is dropped. A DICOM file's one
        frame as `thyroidseg.io.dicom.read_frame` converts it.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file exists but cannot be decoded as an image, or is a JPEG whose decoder
        reported damaged data (a picture with garbage in it is no picture to segment), or
        is a DICOM cine loop (several frames; `thyroidseg.io.dicom.read_frame` reads them).
    ImportError
        A DICOM file, and pydicom is not installed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    if is_dicom(path):
        frame = read_frame(path)
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if grayscale and frame.ndim == 3 else frame
    data = np.fromfile(path, dtype=np.uint8)  # also works for non-ASCII paths on Windows
    if path.suffix.lower() in LOSSY_EXTENSIONS:
        image, complaint = _decode_jpeg(data)
        if complaint:
            raise ValueError(f"{path}: corrupt JPEG data (the decoder says: {complaint})")
    else:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ValueError(f"{path}: not a readable image (empty, truncated or unknown format)")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if grayscale and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image


_STDERR_LOCK = threading.Lock()


def _decode_jpeg(data: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Decode JPEG bytes; also return what libjpeg wrote to standard error while doing so.

    libjpeg reports damaged data ("Corrupt JPEG data: ...", "Premature end of JPEG file")
    only as a warning on file descriptor 2 and still returns a picture; OpenCV gives no
    other sign. So descriptor 2 is pointed at a temporary file for the decode (one decode
    at a time) and what was written is returned: anything there means the data is damaged.
    """
    if not data.size:
        return None, ""
    with _STDERR_LOCK, tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(captured.fileno(), 2)
            image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        complaint = captured.read().decode(errors="replace").strip()
    return image, " ".join(complaint.split())


LOSSY_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg")
"""Mask files with these extensions are binarised with ``> 127`` instead of ``!= 0``."""

JPEG_MASK_THRESHOLD = 127
"""Default threshold for JPEG masks: a pixel is nodule iff its grey value is ``> 127``."""


def check_mask_threshold(threshold: object) -> float | None:
    """``threshold`` as a float (or ``None``) if it is a usable mask threshold; else ``ValueError``.

    A threshold is a finite number ``>= 0``: a pixel is nodule iff ``value > threshold``, so a
    negative one makes every pixel nodule and NaN makes every pixel background.
    """
    if threshold is None:
        return None
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float | np.integer | np.floating)
        or not math.isfinite(threshold)
        or threshold < 0
    ):
        raise ValueError(
            f"a mask threshold must be a finite number >= 0 (nodule iff value > threshold) "
            f"or None, got {threshold!r}"
        )
    return float(threshold)


class NotBinaryMaskError(ValueError):
    """A lossless mask file holds more than two grey values (`read_binary_mask`)."""


def read_binary_mask(path: PathLike, *, threshold: float | None = None) -> np.ndarray:
    """Read a mask file as ``uint8`` ``{0, 1}``, applying the library's one mask rule.

    Parameters
    ----------
    path
        Mask image; colour masks are converted to grey first.
    threshold
        ``None`` (default): lossless files (PNG, BMP, TIFF) count every non-zero pixel as
        nodule and must hold at most two distinct values (``{0, 255}``, ``{0, 1}``...);
        JPEG files, whose compression noise leaves grey values around edges and in the
        background, count pixels ``> 127`` (`JPEG_MASK_THRESHOLD`). A number: a pixel
        is nodule iff ``value > threshold``, whatever the format (for probability maps).

    Raises
    ------
    FileNotFoundError, ValueError
        Missing or unreadable file, a lossless mask that is not binary, or a threshold that
        is negative, not finite, or at or above the file's largest value.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = write_image(folder / "m.png", np.array([[0, 255], [255, 0]], np.uint8))
    >>> read_binary_mask(folder / "m.png")
    array([[0, 1],
           [1, 0]], dtype=uint8)
    """
    threshold = check_mask_threshold(threshold)
    path = Path(path)
    grey = read_image(path, grayscale=True)
    if threshold is not None:
        top = np.iinfo(grey.dtype).max
        if threshold >= top:
            raise ValueError(
                f"{path}: threshold {threshold:g} is at or above the largest value of this "
                f"{grey.dtype.itemsize * 8}-bit mask ({top}): every pixel would be background"
            )
        return (grey > threshold).astype(np.uint8)
    if path.suffix.lower() in LOSSY_EXTENSIONS:
        return (grey > JPEG_MASK_THRESHOLD).astype(np.uint8)
    values = np.flatnonzero(np.bincount(grey.ravel(), minlength=1))
    if values.size > 2 or (values.size == 2 and values[0] != 0):
        shown = ", ".join(str(v) for v in values[:8]) + (", ..." if values.size > 8 else "")
        raise NotBinaryMaskError(
            f"{path}: not a binary mask ({values.size} distinct values: {shown}); "
            "give a threshold to binarise it"
        )
    return (grey != 0).astype(np.uint8)


def list_images(folder: PathLike) -> dict[str, Path]:
    """Map file stem -> path for every image file in ``folder`` (not recursive).

    An entry counts as an image by its extension (`IMAGE_EXTENSIONS`, any case), or as a
    DICOM file by content when its name has no extension (`thyroidseg.io.dicom.is_dicom`; its
    stem is then its whole name). Entries named like images that are not image files (a
    broken symbolic link, a directory called ``a.png``, a pipe...) are an error that lists
    them all: skipping them would silently drop frames, e.g. from a dataset whose links
    point to files not yet downloaded.
    Symbolic links to image files count as images.

    Raises
    ------
    FileNotFoundError
        ``folder`` is not a directory.
    ValueError
        The folder holds no image file, entries named like images are not files, or two
        files share a stem (``a.png`` and ``a.jpg``); each listed by name.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such directory")
    found: dict[str, Path] = {}
    clashes: list[str] = []
    not_files: list[str] = []
    for path in sorted(folder.iterdir()):
        if not _is_image(path):
            continue
        stem = image_stem(path)
        if not path.is_file():
            not_files.append(f"{path.name} ({_not_a_file(path)})")
        elif stem in found:
            clashes.append(f"{found[stem].name} and {path.name}")
        else:
            found[stem] = path
    problems = []
    if not_files:
        problems.append(
            f"{len(not_files)} entries named like images are not files: " + ", ".join(not_files)
        )
    if clashes:
        problems.append(f"several images share a stem: {', '.join(clashes)}")
    if problems:
        raise ValueError(f"{folder}: " + "; ".join(problems))
    if not found:
        raise ValueError(
            f"{folder}: no image files (looked for {', '.join(IMAGE_EXTENSIONS)} and DICOM)"
        )
    return found


def image_stem(path: Path) -> str:
    """The name outputs for ``path`` are made from: the stem, or the whole name of a file
    without an image extension (a DICOM file named ``1.2.840.55`` keeps its dots)."""
    return path.stem if path.suffix.lower() in IMAGE_EXTENSIONS else path.name


Inputs = PathLike | Sequence[PathLike]
"""A folder of images, one image file, a glob pattern, or a sequence of these."""


def list_inputs(inputs: Inputs) -> dict[str, Path]:
    """Map file stem -> path for the images ``inputs`` names, in the order given.

    Each input is a folder (its images, `list_images`), an image file, or a glob pattern
    (``*``, ``?`` or ``[`` in the name; its matches, sorted). A path that exists is taken
    as it is, so ``scan[1].png`` is that file, never a pattern matching ``scan1.png``.
    Outputs are named by stem, so
    two inputs with one stem are an error, as are a missing file, a file that is not an
    image by its extension (or a DICOM file by content), and a pattern that matches nothing.

    Raises
    ------
    FileNotFoundError, ValueError
        As above, naming the input.
    """
    entries = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    if not entries:
        raise ValueError("no input given: name a folder, image files or a glob pattern")
    found: dict[str, Path] = {}
    for entry in entries:
        path = Path(entry)
        if any(char in str(entry) for char in "*?[") and not os.path.lexists(path):
            matches = sorted(Path(p) for p in glob.glob(str(entry)))
            images = [m for m in matches if _is_image(m)]
            if not images:
                raise FileNotFoundError(f"{entry}: the pattern matches no image file")
            listed = {image_stem(m): m for m in images}
        elif path.is_dir():
            listed = list_images(path)
        elif path.is_file() or path.is_symlink():
            if not path.is_file():
                raise ValueError(f"{path}: {_not_a_file(path)}")
            if not _is_image(path):
                raise ValueError(
                    f"{path}: not an image file (looked for {', '.join(IMAGE_EXTENSIONS)} "
                    "and DICOM)"
                )
            listed = {image_stem(path): path}
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
        for stem, source in listed.items():
            if stem in found and found[stem].resolve() != source.resolve():
                raise ValueError(
                    f"{found[stem]} and {source} share the stem {stem!r}: their outputs would "
                    "have one name; give them separately"
                )
            found[stem] = source
    return found


def _is_image(path: Path) -> bool:
    """Named like an image (`IMAGE_EXTENSIONS`), or a DICOM file by content (`is_dicom`)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS or (path.is_file() and is_dicom(path))


def _not_a_file(path: Path) -> str:
    """Why ``path``, which is not a regular file (after following links), cannot be read."""
    if path.is_symlink() and not path.exists():
        return f"broken symbolic link to {os.readlink(path)}"
    if path.is_dir():
        return "a directory"
    return "not a regular file"


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows as CSV text with a header, every cell by one rule (the library's one CSV writer).

    ``columns`` (default: every key, in the order keys first appear) orders the header; a
    row without some column leaves that cell empty. Cells: ``true``/``false`` for booleans,
    empty for ``None``, ``str`` for the rest (``nan`` and ``inf`` stay readable by
    ``float()``).

    >>> print(csv_text([{"a": True, "b": None, "c": 0.5}]), end="")
    a,b,c
    true,,0.5
    """
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: _csv_cell(value) for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def _csv_cell(value: Any) -> Any:
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    return "" if value is None else value


def write_csv(
    path: PathLike, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> Path:
    """Write `csv_text` of ``rows`` to ``path`` atomically (`atomic_write_bytes`)."""
    path = Path(path)
    atomic_write_bytes(path, csv_text(rows, columns).encode())
    return path


def write_image(path: PathLike, image: np.ndarray) -> Path:
    """Write ``image`` to ``path`` atomically (temporary file + rename).

    The parent folder is created. A crash mid-write never leaves a truncated file under
    ``path``; an existing file is replaced only once the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise ValueError(f"{path}: OpenCV could not encode an image of shape {image.shape}")
    atomic_write_bytes(path, encoded.tobytes())
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder + rename.

    An ``OSError`` (a full disk, a folder without write permission...) names ``path``, the
    file the caller asked for, never the temporary file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise OSError(error.errno, f"{path}: cannot write ({error.strerror})") from error
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())  # mkstemp makes 0600; honour the umask
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(error.errno, f"{path}: cannot write ({error.strerror})") from error
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    """The process umask, read without changing it where Linux allows (thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)  # elsewhere: the only portable way, briefly changes it
    os.umask(mask)
    return mask


def read_format_json(path: PathLike, format_name: str, what: str) -> dict[str, Any]:
    """The JSON object in file ``path`` whose ``"format"`` is ``format_name``.

    ``what`` names such a file in the messages (e.g. ``"crop-box file"``).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not JSON, or not an object with that format; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a JSON file ({error})") from error
    if not isinstance(data, dict) or data.get("format") != format_name:
        raise ValueError(f"{path}: not a {what} (format {format_name!r})")
    return data


__getattr__ = moved_names(  # the folder loop's 0.2 path
    __name__, dict.fromkeys(["FilesFailedError", "map_folder"], "thyroidseg.io.folder_loop"), "0.4"
)
