"""Size of ``predict --report``'s report.html for 1,000 frames, and headless Chromium's load time.

The frames are real DDTI frames (``--data``, cycled to ``--frames`` frames, read by path and
never copied), each with its DDTI annotation standing in for the prediction (the network is
not what is measured here) and a mean probability drawn at random in [0.6, 1], so that some
nodules are flagged. They go through `thyroidseg.io.report.ReportBuilder` as ``predict``
hands them over (the frame with its outline, then the nodules measured with 0.1 mm pixels);
the script prints the time to build and write the report, its size, and the time headless
Chromium takes to open it (the ``load`` event of a page holding it in an iframe, median of
``--repeat`` runs) beside the time to open an empty page the same way:

    python benchmarks/bench_report.py --json benchmarks/results/bench-report.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from thyroidseg.inference.measurements import measure
from thyroidseg.inference.overlay import overlay
from thyroidseg.io.files import atomic_write_bytes, read_binary_mask, read_image
from thyroidseg.io.outputs import check_outputs
from thyroidseg.io.provenance import ModelIdentity
from thyroidseg.io.report import ReportBuilder
from thyroidseg.runtime import cpu_info

_WRAPPER = """<!doctype html><html><head><title>waiting</title></head><body>
<script>var start = performance.now();</script>
<iframe src="{page}" width="1200" height="900"
 onload="document.title = 'loaded ' + (performance.now() - start).toFixed(0)"></iframe>
</body></html>"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/ddti")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    if args.json is not None:
        check_outputs([args.json])
    browser = shutil.which("chromium")
    if browser is None:
        raise SystemExit("needs Debian's chromium (apt-get install chromium)")
    images = sorted((Path(args.data) / "images").glob("*.png"))
    rng = np.random.default_rng(0)
    identity = ModelIdentity("UNet", "bench", "0" * 64)
    with tempfile.TemporaryDirectory() as folder:
        report = ReportBuilder(Path(folder) / "report.html", identity, {}, "bench_report.py")
        start = time.perf_counter()
        for index in range(args.frames):
            path = images[index % len(images)]
            image = read_image(path)
            mask = read_binary_mask(Path(args.data) / "masks" / path.name)
            probability = (mask * rng.uniform(0.6, 1.0)).astype(np.float32)
            nodules = measure(mask, 0.1, probability)
            report.add(f"{index:04d}_{path.name}", overlay(image, mask), nodules)
        size = report.write().stat().st_size
        build = time.perf_counter() - start
        loads = [_load_ms(browser, report.path, folder) for _ in range(args.repeat)]
        empty = Path(folder) / "empty.html"
        empty.write_text("<!doctype html><title>empty</title>")
        blank = [_load_ms(browser, empty, folder) for _ in range(args.repeat)]
    result = {
        "frames": args.frames,
        "bytes": size,
        "megabytes": round(size / 1e6, 1),
        "build_seconds": round(build, 1),
        "chromium_load_ms_median": statistics.median(loads),
        "chromium_load_ms": loads,
        "empty_page_load_ms_median": statistics.median(blank),
        "chromium": subprocess.run(
            [browser, "--version"], capture_output=True, text=True, check=True
        ).stdout.strip(),
        "cpu": cpu_info().model or platform.processor(),
        "load_average_1min": round(os.getloadavg()[0], 1),  # other jobs slow the timings
        "python": platform.python_version(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        atomic_write_bytes(args.json, (text + "\n").encode())


def _load_ms(browser: str, page: Path, folder: str) -> int:
    """Milliseconds from the wrapper's first script to its iframe's ``load`` event."""
    wrapper = Path(folder) / "wrapper.html"
    wrapper.write_text(_WRAPPER.format(page=page.name))
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={Path(folder) / 'profile'}", "--dump-dom", wrapper.as_uri()],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    found = re.search(r"<title>loaded (\d+)</title>", dom)
    if found is None:
        raise RuntimeError(f"Chromium did not report the load of {page}")
    return int(found.group(1))


if __name__ == "__main__":
    main()
