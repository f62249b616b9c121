"""The scan check on ultrasound of other organs and on every DDTI frame: what it flags and why.

Issue 23, part 3. `thyroidseg.preprocessing.scan_check.check_scan` runs on every frame of
the vendor ultrasound files that the PyPI package ``pydicom-data`` ships (the test extra;
none is thyroid), on the 365 frames of ``--data`` (DDTI, as stored: 8-bit grey PNG) and on
the raw DDTI JPEG frames of ``--raw`` (3-channel, with their coloured caliper marks). It
prints, per file or set, the frames, how many are flagged and for which cue, and the range
of each cue, and writes them all to ``--json``:

    python benchmarks/scan_check.py --json benchmarks/results/scan-check.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from non_thyroid import FILES
from pydicom.data import get_testdata_file

from thyroidseg.io.dicom import iter_frames
from thyroidseg.io.files import read_image
from thyroidseg.io.outputs import check_outputs
from thyroidseg.preprocessing import preprocess
from thyroidseg.preprocessing.scan_check import (
    COLOUR_LIMIT,
    ECHO_LIMIT,
    TOP_EDGE_LIMIT,
    ScanCheck,
    check_scan,
)
from thyroidseg.runtime import cpu_info

CUES = ("colour_share", "top_edge_spread", "echo_share")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ddti"))
    parser.add_argument("--raw", type=Path, default=Path("../shared/data/ddti-raw-sample"))
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    if args.json is not None:
        check_outputs([args.json])
    cv2.setNumThreads(1)
    sets: dict[str, dict[str, object]] = {}
    for name, what in FILES.items():
        found = get_testdata_file(name, download=False)
        if found is None:
            raise SystemExit(f"{name} not found: pip install pydicom-data")
        sets[name] = {"what": what, **_run(name, iter_frames(found))}
    images = sorted((args.data / "images").glob("*.png"))
    if not images:
        raise SystemExit(f"{args.data / 'images'}: no PNG frames")
    sets["ddti"] = {
        "what": "DDTI, 365 thyroid frames (grey PNG)",
        **_run("ddti", (read_image(path) for path in images), [p.stem for p in images]),
    }
    raw = sorted(args.raw.glob("*.jpg"))
    if not raw:
        raise SystemExit(f"{args.raw}: no JPEG frames")
    sets["ddti-raw-sample"] = {
        "what": "DDTI raw JPEG frames (3 channels, coloured calipers)",
        **_run("ddti-raw-sample", (read_image(path) for path in raw), [p.stem for p in raw]),
    }
    for name, result in sets.items():
        _print(name, result)
    if args.json is not None:
        result = {
            "command": "python benchmarks/scan_check.py --json benchmarks/results/scan-check.json",
            "cpu": cpu_info().model or platform.processor(),
            "note": "2-core machine shared with two one-thread trainings",
            "machine": platform.machine(),
            "limits": {
                "colour_share": COLOUR_LIMIT,
                "top_edge_spread": TOP_EDGE_LIMIT,
                "echo_share": ECHO_LIMIT,
            },
            "sets": sets,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def _run(
    source: str, frames: Iterable[np.ndarray], names: list[str] | None = None
) -> dict[str, object]:
    """Check every frame: the counts, the flagged frames (stem, or frame number from 1), the
    reasons given for the first of them, each cue's range and the check's median time per
    frame (each frame checked twice, the second timed)."""
    checks: list[ScanCheck] = []
    seconds = []
    for frame in frames:
        prepared = preprocess(frame)
        check_scan(frame, prepared, name=source)  # warm: the first call of a run loads code
        start = time.perf_counter()
        checks.append(check_scan(frame, prepared, name=source))
        seconds.append(time.perf_counter() - start)
    flagged = [i for i, check in enumerate(checks) if not check.thyroid_bmode]
    return {
        "frames": len(checks),
        "flagged": len(flagged),
        "failed": dict(Counter(cue for check in checks for cue in check.failed)),
        "flagged_frames": [names[i] if names else i + 1 for i in flagged],
        "first_reasons": list(checks[flagged[0]].reasons) if flagged else [],
        "ranges": {
            cue: [min(getattr(c, cue) for c in checks), max(getattr(c, cue) for c in checks)]
            for cue in CUES
        },
        "ms_per_frame": 1000 * float(np.median(seconds)),
    }


def _print(name: str, result: dict[str, object]) -> None:
    ranges = result["ranges"]
    assert isinstance(ranges, dict)
    shown = ", ".join(f"{cue} {low:.3f}-{high:.3f}" for cue, (low, high) in ranges.items())
    print(
        f"{name} ({result['what']}): {result['frames']} frames, {result['flagged']} flagged "
        f"{result['failed']}; {shown}; {result['ms_per_frame']:.1f} ms/frame"
    )
    reasons = result["first_reasons"]
    assert isinstance(reasons, list)
    for reason in reasons:
        print(f"    {reason}")


if __name__ == "__main__":
    main()
