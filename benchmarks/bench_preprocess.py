"""Speed and quality of thyroidseg.preprocessing, each against a baseline measured in the same run.

Speed (frames/s on (360, 560) frames, best of ``--repeat`` passes, OpenCV's default threads):
the default ``preprocess()`` against a plain OpenCV chain ``equalizeHist -> CLAHE ->
medianBlur(3) -> resize(256x256)`` on the whole frame. Target: ``preprocess`` >= 1,000
frames/s on 2 cores, i.e. at least half the plain chain's rate.

Quality (needs ../shared/data/ddti): for the scan-region step and the TN-SCUI 2020 winners'
rule (keep the rows and columns whose mean grey level is >= 5), on every frame:

- share of nodule-mask pixels inside the box (minimum over images), also counted only over
  mask components that touch the box (a stray polygon drawn on a label outside the image
  is not a nodule);
- mean share of the frame removed;
- frames that still carry text, by the check in :func:`text_words` (below);
- frames split into two views;
- round trip of each mask through the default ``preprocess`` geometry (IoU with the
  mask inside the box).

Run from the repository root::

    python benchmarks/bench_preprocess.py speed
    python benchmarks/bench_preprocess.py quality
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from thyroidseg.io.files import list_images, read_binary_mask, read_image
from thyroidseg.preprocessing import DEFAULT_MARGIN, preprocess
from thyroidseg.preprocessing.geometry import Box
from thyroidseg.preprocessing.inpainting import find_annotations
from thyroidseg.preprocessing.scan_region import _seam_strength, find_scan_region, find_views

ROOT = Path(__file__).resolve().parents[1]
DDTI = ROOT.parent / "shared" / "data" / "ddti"


# --------------------------------------------------------------------------- text check


def text_glyphs(gray: np.ndarray, bright: int = 150) -> list[tuple[int, int, int, int]]:
    """Boxes ``(x, y, w, h)`` of glyph-like marks: letters, digits, small icons.

    A glyph is a connected group of pixels >= ``bright`` whose bounding box is 6-16 px
    tall and 3-16 px wide (DDTI's scanner font is 7-11 px tall), that is not a solid
    blob (at most 80% of its box is bright), and that stands out: the median of the
    non-bright pixels in a 3-px ring around it is at most half the glyph's median. Bright
    speckle fails the last test (its surroundings are bright too).
    """
    mask = (gray >= bright).view(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    height, width = gray.shape
    glyphs = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        if not (6 <= h <= 16 and 3 <= w <= 16):
            continue
        core = mask[y : y + h, x : x + w]
        if core.mean() > 0.8:
            continue
        y0, y1 = max(y - 3, 0), min(y + h + 3, height)
        x0, x1 = max(x - 3, 0), min(x + w + 3, width)
        ring = gray[y0:y1, x0:x1][mask[y0:y1, x0:x1] == 0]
        if ring.size and np.median(ring) <= 0.5 * np.median(gray[y : y + h, x : x + w][core > 0]):
            glyphs.append((x, y, w, h))
    return glyphs


def text_words(glyphs: list[tuple[int, int, int, int]]) -> int:
    """Number of *words*: groups of >= 2 glyphs chained on one line (tops within 3 px,
    horizontal gaps <= 8 px).

    Scanner text ("P100", "DER", "TIRADS 4C", typed notes) is made of words; a lone glyph
    can be a caliper letter or a marker icon, which are counted apart.
    """
    parent = list(range(len(glyphs)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, (xa, ya, wa, _) in enumerate(glyphs):
        for j in range(i + 1, len(glyphs)):
            xb, yb, wb, _ = glyphs[j]
            gap = max(xa, xb) - min(xa + wa, xb + wb)
            if abs(ya - yb) <= 3 and gap <= 8:
                parent[root(j)] = root(i)
    sizes = Counter(root(i) for i in range(len(glyphs)))
    return sum(size >= 2 for size in sizes.values())


# --------------------------------------------------------------------------- baselines


def tnscui_box(gray: np.ndarray, threshold: float = 5.0) -> Box:
    """The TN-SCUI 2020 winners' crop: first to last row/column with mean >= threshold."""
    rows = np.flatnonzero(gray.mean(axis=1) >= threshold)
    cols = np.flatnonzero(gray.mean(axis=0) >= threshold)
    return Box(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


_CLAHE = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))


def plain_chain(gray: np.ndarray, size: tuple[int, int] = (256, 256)) -> np.ndarray:
    """equalizeHist -> CLAHE -> medianBlur(3) -> resize, on the whole frame."""
    image = cv2.medianBlur(_CLAHE.apply(cv2.equalizeHist(gray)), 3)
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


# --------------------------------------------------------------------------- speed


def synthetic_frames(count: int) -> list[np.ndarray]:
    """DDTI-like (360, 560) frames: a textured field of view, text, a grey bar, a caliper."""
    rng = np.random.default_rng(0)
    frames = []
    for i in range(count):
        frame = np.zeros((360, 560), np.uint8)
        noise = cv2.GaussianBlur(rng.random((300, 385), np.float32), (5, 5), 1.0)
        frame[8:308, 87:472] = (20 + 200 * noise).astype(np.uint8)
        for row in range(10, 110, 16):
            cv2.putText(frame, "DR65", (515, row), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 255, 1)
        frame[160:260, 5:15] = 200
        frame[150 + i % 20, 200:209] = 255
        frames.append(frame)
    return frames


def rate(function, frames: list[np.ndarray], repeat: int) -> float:
    """Frames per second, best of ``repeat`` passes over ``frames`` (after one warm-up)."""
    function(frames[0])
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for frame in frames:
            function(frame)
        best = min(best, time.perf_counter() - start)
    return len(frames) / best


def run_speed(args: argparse.Namespace) -> None:
    if args.ddti.is_dir():
        paths = list(list_images(args.ddti / "images").values())[: args.frames]
        frames = [read_image(path, grayscale=True) for path in paths]
        source = f"{len(frames)} DDTI frames"
    else:
        frames = synthetic_frames(args.frames)
        source = f"{len(frames)} synthetic frames (no DDTI folder)"
    shape = frames[0].shape
    print(f"speed on {source} of shape {tuple(shape)}, OpenCV threads={cv2.getNumThreads()}")
    results = {
        "plain chain (equalizeHist+CLAHE+median+resize)": rate(plain_chain, frames, args.repeat),
        "preprocess() default": rate(preprocess, frames, args.repeat),
        "preprocess(inpaint_annotations=False)": rate(
            lambda f: preprocess(f, inpaint_annotations=False), frames, args.repeat
        ),
        "find_views() alone": rate(find_views, frames, args.repeat),
    }
    plain = next(iter(results.values()))
    for name, fps in results.items():
        print(f"  {name:<48} {fps:8.0f} frames/s   x{fps / plain:.2f} of plain")


# --------------------------------------------------------------------------- quality


def coverage(mask: np.ndarray, box: Box) -> tuple[float, float, int]:
    """(share of mask pixels in box, same over the mask components that touch the box,
    farthest distance in px of such a component's pixel outside the box)."""
    inside = np.count_nonzero(mask[box.slices])
    _, labels = cv2.connectedComponents(mask, connectivity=8)
    touching = np.unique(labels[box.slices][mask[box.slices] > 0])
    relevant = np.isin(labels, touching) & (mask > 0)
    ys, xs = np.nonzero(relevant)
    spill = np.maximum.reduce([box.x0 - xs, xs - (box.x1 - 1), box.y0 - ys, ys - (box.y1 - 1)])
    return (
        inside / np.count_nonzero(mask),
        inside / max(np.count_nonzero(relevant), 1),
        int(max(spill.max(initial=0), 0)),
    )


def round_trip_iou(mask: np.ndarray, result) -> float:
    cut = np.zeros_like(mask)
    cut[result.box.slices] = mask[result.box.slices]
    back = result.mask_to_original(result.mask_to_network(mask))
    union = np.count_nonzero(back | cut)
    return np.count_nonzero(back & cut) / union if union else 1.0


def run_quality(args: argparse.Namespace) -> None:
    if not (args.ddti / "images").is_dir():
        sys.exit(f"quality: no DDTI folder at {args.ddti}")
    images = list_images(args.ddti / "images")
    masks = list_images(args.ddti / "masks")
    rows = {name: [] for name in ("full frame", "TN-SCUI mean>=5", "ours margin 0", "ours")}
    two_views, ious, thin, worst = 0, [], [], {}
    seam_ratios: dict[bool, list[float]] = {False: [], True: []}
    marked_crop, marked_nodule = [], []
    for stem, path in images.items():
        gray = read_image(path, grayscale=True)
        mask = read_binary_mask(masks[stem])
        height, width = gray.shape
        views = find_views(gray)
        two_views += len(views) > 1
        region = find_scan_region(gray)
        seam_ratios[len(views) > 1].append(_seam_strength(gray[region.slices])[1])
        marks = find_annotations(gray[region.slices])
        marked_crop.append(marks.mean())
        marked_nodule.append(marks[mask[region.slices] > 0].mean())
        result = preprocess(gray)
        ious.append(round_trip_iou(mask, result))
        thin.append(not cv2.erode(mask, np.ones((3, 3), np.uint8)).any())  # 1-2 px outlines
        # The step's own output at native resolution: crop, blank outside views, fill marks.
        native = preprocess(
            gray,
            size=(result.box.height, result.box.width),
            resize_mode="stretch",
            equalization=None,
            smoothing=None,
        ).image
        boxes = {
            "full frame": (Box(0, 0, width, height), gray),
            "TN-SCUI mean>=5": (tnscui_box(gray), None),
            "ours margin 0": (region, None),
            "ours": (result.box, native),
        }
        for name, (box, crop) in boxes.items():
            crop = gray[box.slices] if crop is None else crop
            glyphs = text_glyphs(crop)
            kept, kept_touching, spill = coverage(mask, box)
            rows[name].append(
                (
                    kept,
                    kept_touching,
                    1 - box.area / (height * width),
                    text_words(glyphs),
                    len(glyphs),
                    spill,
                )
            )
            if kept < worst.get(name, (1.0, ""))[0]:
                worst[name] = (kept, stem)

    n = len(images)
    print(f"quality on {n} DDTI frames ({args.ddti})")
    header = (
        f"  {'crop':<18}{'min mask kept':>14}{'(touching)':>11}{'frames <100%':>13}"
        f"{'removed':>9}{'frames w/ words':>16}{'w/ glyphs':>10}"
    )
    print(header)
    for name, values in rows.items():
        data = np.array(values)
        print(
            f"  {name:<18}{data[:, 0].min():>14.2%}{data[:, 1].min():>11.2%}"
            f"{int((data[:, 0] < 1).sum()):>13d}{data[:, 2].mean():>9.1%}"
            f"{int((data[:, 3] > 0).sum()):>16d}{int((data[:, 4] > 0).sum()):>10d}"
        )
    for name, (kept, stem) in worst.items():
        print(f"  worst {name}: {stem} keeps {kept:.2%} of its mask")
    spill = np.array(rows["ours margin 0"])[:, 5]
    print(
        f"  exact field of view: {int((spill > 0).sum())} frames have nodule pixels drawn"
        f" outside it, at most {int(spill.max())} px away"
    )
    print(
        f"  seam step ratio: single-view frames max {max(seam_ratios[False]):.2f},"
        f" split frames min {min(seam_ratios[True]):.2f} (threshold 4.5)"
    )
    print(
        f"  annotation marks: median {np.median(marked_crop):.3%} of the field of view,"
        f" mean {np.mean(marked_nodule):.3%} of the nodule pixels"
    )
    print(f"  ours: margin={DEFAULT_MARGIN} px, 'ours' text counts are after blanking + mark fill")
    print(f"  split-screen frames (two views): {two_views} of {n}")
    ious, thin = np.array(ious), np.array(thin)
    print(
        f"  mask round trip through preprocess() (256x256 letterbox): IoU min {ious.min():.4f},"
        f" mean {ious.mean():.4f}; without the {thin.sum()} masks that are 1-2 px wide"
        f" outlines: min {ious[~thin].min():.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["speed", "quality"])
    parser.add_argument("--ddti", type=Path, default=DDTI, help="DDTI folder (images/, masks/)")
    parser.add_argument("--frames", type=int, default=200, help="frames timed (speed)")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes, best kept (speed)")
    parser.add_argument("--threads", type=int, default=None, help="OpenCV threads (speed)")
    args = parser.parse_args()
    if args.threads is not None:
        cv2.setNumThreads(args.threads)
    {"speed": run_speed, "quality": run_quality}[args.what](args)


if __name__ == "__main__":
    main()
