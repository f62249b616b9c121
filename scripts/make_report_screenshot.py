"""Make the report tutorial's screenshot: a real ``predict --report`` on a few DDTI frames.

Segments the fixed frames `STEMS` exactly as ``thyroidseg predict FRAMES OUT --report``
does (`Segmenter.predict_folder` on a temporary folder holding links to them, the model
shipped in the package, or ``--model``), opens the report in headless Chromium (Debian's
``chromium``) and writes the top of the page to ``docs/img/report.png``. The frames come
from ``../shared/data/ddti`` and are not stored in the repository; only the screenshot is::

    python scripts/make_report_screenshot.py
    python scripts/make_report_screenshot.py --model runs/fold0/last.pt --out /tmp/report.png
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2

from thyroidseg import Segmenter
from thyroidseg.io.files import read_image, write_image

ROOT = Path(__file__).resolve().parents[1]

STEMS = ("110_1", "198_1", "19_1", "3_1")
"""Two split-screen frames whose nodules the review rule flags (mean probabilities 0.878,
and 0.877 and 0.896, with the shipped model) and two frames of the measurement tutorial
(docs/measure.md; 19_1's nodule is flagged at 0.882, 3_1's is not)."""

WINDOW = (1000, 1500)
"""Browser window (width, height) in CSS pixels: the summary and the first entries."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ddti")
    parser.add_argument("--model", action="append", help="checkpoint(s) instead of the shipped")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "report.png")
    args = parser.parse_args()
    browser = shutil.which("chromium")
    if browser is None:
        raise SystemExit("needs Debian's chromium (apt-get install chromium)")
    segmenter = Segmenter.from_checkpoint(args.model) if args.model else Segmenter.pretrained()
    with tempfile.TemporaryDirectory() as folder:
        frames = Path(folder) / "frames"
        frames.mkdir()
        for stem in STEMS:
            (frames / f"{stem}.png").symlink_to((args.data / "images" / f"{stem}.png").resolve())
        result = segmenter.predict_folder(
            frames, Path(folder) / "out", report=True, pixel_spacing="auto", progress=False
        )
        assert result.report is not None
        shot = Path(folder) / "shot.png"
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={Path(folder) / 'profile'}", f"--screenshot={shot}",
             f"--window-size={WINDOW[0]},{WINDOW[1]}", result.report.as_uri()],
            capture_output=True, check=True, timeout=300,
        )  # fmt: skip
        picture = read_image(shot)
    grey = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
    used = (grey < 250).any(axis=1).nonzero()[0]  # crop the blank bottom
    write_image(args.out, picture[: int(used.max()) + 16] if used.size else picture)
    print(f"wrote {args.out}: {result.summary()}")


if __name__ == "__main__":
    main()
