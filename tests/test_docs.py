"""Every ```python block of README.md and docs/*.md runs, on small data made here.

As torchmetrics does for its docs: each page's blocks run in order in one namespace (a later
block may use an earlier one's names), in a fresh working folder that holds what the pages
name: ``../shared/data/ddti`` (a stand-in of synthetic phantoms under DDTI-like names; the
real data for a page that compares with ``ddti-raw-sample``, skipped without it),
``DATA_DIR``, ``scan.png``, ``a.png``, ``b.png``, ``SCANS/``, ``new-scans/`` and a tiny
trained ``runs/fold0`` (left out for a page that trains it). `SMALLER` shrinks the sizes
and epochs of the training examples so the suite stays fast; nothing else is changed.
Blocks that show a session with its output are fenced ``pycon`` and are not run.
"""

from __future__ import annotations

import os
import re
import shutil
import textwrap
from pathlib import Path

import pytest
from torch import nn

from thyroidseg.data import ThyroidDataset
from thyroidseg.data.synthetic import write_synthetic_dataset
from thyroidseg.models.unet import UNet
from thyroidseg.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(?P<indent> *)```python\n(?P<code>.*?)^(?P=indent)```", re.M | re.S)
PAGES = [
    page
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    if FENCE.search(page.read_text())
]
REAL_SHARED = Path(os.environ.get("THYROIDSEG_SHARED_DATA", ROOT.parent / "shared" / "data"))

SMALLER = {
    "size=(256, 256)": "size=(64, 64)",
    "epochs=50": "epochs=1",
    "T_max=50": "T_max=1",
    "UNet(seed=0)": "UNet(base_channels=4, depth=2, seed=0)",
    "UNet(in_channels=1, num_classes=2, seed=0)": "UNet(base_channels=4, depth=2, seed=0)",
    "torch.randn(8, 1, 256, 256)": "torch.randn(2, 1, 64, 64)",
    "torch.randint(0, 2, (8, 256, 256))": "torch.randint(0, 2, (2, 64, 64))",
    "crops=CropRule(), **REFINE_RECIPE": (
        "crops=CropRule(size=32), epochs=1, base_channels=4, size=(64, 64), progress=False"
    ),
}
"""Text replaced in the blocks before they run: the same calls, on smaller networks."""

STEMS = ["2_1", "3_1", "58_1", "80_1", "100_1", "101_1", "102_1", "103_1"]
"""DDTI frame names the pages use, given to the stand-in's phantoms."""


def blocks(page: Path) -> list[str]:
    """The page's ```python blocks, dedented, with `SMALLER` applied."""
    found = []
    for match in FENCE.finditer(page.read_text()):
        code = textwrap.dedent(match["code"])
        for large, small in SMALLER.items():
            code = code.replace(large, small)
        found.append(code)
    return found


def stand_in_ddti(folder: Path) -> Path:
    """Synthetic phantoms laid out as ``ddti/`` (images, masks, metadata with leak groups)."""
    write_synthetic_dataset(folder / "tmp", len(STEMS), size=(180, 280), seed=0)
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
        for stem, path in zip(STEMS, sorted((folder / "tmp" / sub).glob("*.png")), strict=True):
            path.rename(folder / sub / f"{stem}.png")
    rows = "".join(f"{stem},g{stem.split('_')[0]}\n" for stem in STEMS)
    (folder / "metadata.csv").write_text(f"stem,leak_group\n{rows}")
    shutil.rmtree(folder / "tmp")
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder every page runs in, with what the pages read."""
    base = tmp_path_factory.mktemp("docs")
    ddti = stand_in_ddti(base / "shared" / "data" / "ddti")
    project = base / "project"
    project.mkdir()
    shutil.copytree(ddti, project / "DATA_DIR")
    named = {"scan": "2_1", "a": "3_1", "b": "80_1", "scan1": "58_1", "scan2": "100_1"}
    for name, stem in named.items():
        shutil.copy(ddti / "images" / f"{stem}.png", project / f"{name}.png")
    for folder, stems in (("SCANS", ("3_1", "80_1")), ("new-scans", ("2_1", "58_1"))):
        (project / folder).mkdir()
        for stem in stems:
            shutil.copy(ddti / "images" / f"{stem}.png", project / folder)
    Trainer(
        UNet(base_channels=4, depth=2, seed=0), ThyroidDataset(ddti, size=(64, 64)),
        loss=nn.CrossEntropyLoss(), epochs=1, out_dir=project / "runs" / "fold0", progress=False,
    ).fit()  # fmt: skip
    return project


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_the_python_of_every_page_runs(
    page: Path, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = blocks(page)
    shared = workspace.parent / "shared" / "data"
    if any("ddti-raw-sample" in block for block in code):
        if not (REAL_SHARED / "ddti-raw-sample").is_dir():
            pytest.skip(f"{page.name} compares with the real DDTI sample, absent here")
        shared = REAL_SHARED
    run_dir = tmp_path / "project"  # a fresh copy: pages write files of their own
    shutil.copytree(workspace, run_dir, symlinks=True)
    if any('out_dir="runs/fold0"' in block for block in code):
        shutil.rmtree(run_dir / "runs")  # the page trains its own runs/fold0
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(shared)
    monkeypatch.chdir(run_dir)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for number, block in enumerate(code):
        try:
            exec(compile(block, f"{page.name} block {number}", "exec"), namespace)  # noqa: S102
        except Exception as error:
            raise AssertionError(f"{page.name}, python block {number} failed:\n{block}") from error


def test_the_site_loads_no_script_or_font_from_another_host() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    scripts = re.findall(r"^extra_javascript:.*\n((?:  - .*\n)+)", config, re.M)
    assert scripts, "mkdocs.yml lists no extra_javascript"
    for entry in re.findall(r"  - (\S+)", scripts[0]):
        assert "//" not in entry and (ROOT / "docs" / entry).is_file(), entry
    assert re.search(r"^  font: false", config, re.M)  # material's default loads web fonts
    pages = [*(ROOT / "docs").glob("*.md"), ROOT / "README.md"]
    assert not [p.name for p in pages if re.search(r"<(script|link)[^>]+https?://", p.read_text())]
