"""How many nodules found on public ultrasound files of other organs are flagged for review.

Issue 23, part 3: a reader who feeds the wrong series (an obstetric frame, a Doppler lymph
node, a pelvis, a fetal loop) must not get confident nodules. This runs a segmenter with an
expected-IoU estimator on the vendor ultrasound files that the PyPI package ``pydicom-data``
ships (``pip install pydicom-data``; every frame of each file) and prints, per file, the
nodules found, how many are flagged for review (by the expected IoU alone, by the scan check
of `thyroidseg.preprocessing.scan_check`, either), and their expected IoU, mean probability
and area; DDTI's own share of flagged nodules is the ``review`` line of the estimator's JSON.

    python benchmarks/non_thyroid.py --model runs/cv-bc24wc/fold0/last.pt \\
        --quality benchmarks/results/expected-iou-whole.json

Without ``--refine`` the whole-frame model runs alone (the estimator must have been fitted
so: ``stages`` 1).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydicom.data import get_testdata_file

from thyroidseg import Segmenter
from thyroidseg.inference.quality import ExpectedIoU
from thyroidseg.io.dicom import iter_frames

FILES = {
    "OBXXXX1A.dcm": "obstetric, convex probe (Philips), palette colour",
    "JPGLosslessP14SV1_1s_1f_8b.dcm": "adult echocardiogram, phased array (Philips), grey",
    "US1_UNCR.dcm": "lymph node, linear probe, colour Doppler (GE)",
    "gdcm-US-ALOKA-16.dcm": "split-screen pelvis, convex probe (Aloka)",
    "color3d_jpeg_baseline.dcm": "cardiac loop, parasternal long axis, 120 frames (SonoSite)",
    "color-pl.dcm": "echocardiogram, colour Doppler",
}
"""The ultrasound files of pydicom-data, one per scan (other copies differ in encoding only), as
their burned-in text shows them ("Adult Echo", "S5-1"; "PLA", "Crd"; "C5-1", "OB")."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="whole-frame checkpoint")
    parser.add_argument("--refine", type=Path, default=None, help="refine checkpoint")
    parser.add_argument("--quality", required=True, type=Path, help="expected_iou.py's JSON")
    args = parser.parse_args()
    stored = json.loads(args.quality.read_text())
    segmenter = Segmenter.from_checkpoint(
        args.model,
        refine=args.refine,
        quality=ExpectedIoU.from_dict(stored["estimator"]),
        tta=True,
        fill_holes=True,
        min_probability=stored["setup"]["min_probability"],
    )
    review = stored["cv"]["review"]
    print(
        f"DDTI (out of fold): {review['flagged']} of {review['nodules']} nodules flagged "
        f"(threshold {review['threshold']:.3f})"
    )
    for name, what in FILES.items():
        found = get_testdata_file(name, download=False)
        if found is None:
            raise SystemExit(f"{name} not found: pip install pydicom-data")
        path = Path(found)
        nodules = [n for frame in iter_frames(path) for n in segmenter.measure(frame)]
        flagged = sum(bool(n.review) for n in nodules)
        threshold = segmenter.quality.threshold if segmenter.quality is not None else 0.0
        by_estimate = sum((n.expected_iou or 0.0) < threshold for n in nodules)
        by_check = sum(n.scan_warning is not None for n in nodules)
        shown = (
            f", expected IoU {min(n.expected_iou or 0 for n in nodules):.2f}-"
            f"{max(n.expected_iou or 0 for n in nodules):.2f}, mean probability "
            f"{min(n.mean_probability or 0 for n in nodules):.2f}-"
            f"{max(n.mean_probability or 0 for n in nodules):.2f}, largest "
            f"{max(n.area_px for n in nodules)} px"
            if nodules
            else ""
        )
        print(
            f"{name} ({what}): {len(nodules)} nodules, {flagged} flagged ({by_estimate} by the "
            f"expected IoU, {by_check} by the scan check){shown}"
        )


if __name__ == "__main__":
    main()
