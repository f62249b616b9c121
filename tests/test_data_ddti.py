"""Readers on the real DDTI data in ../shared/data (skipped when it is absent)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from thyroidseg.data import ThyroidDataset, read_binary_mask
from thyroidseg.data.splits import group_kfold, size_tertiles

pytestmark = pytest.mark.ddti


@pytest.fixture(scope="module")
def ddti(ddti_dir):
    return ThyroidDataset(ddti_dir, size=(64, 96), preprocess=None, progress=False)


def test_plain_reader_loads_all_365_pairs_with_their_leak_groups(ddti, ddti_dir):
    with (ddti_dir / "metadata.csv").open(newline="") as handle:
        rows = {row["stem"]: row for row in csv.DictReader(handle)}
    assert ddti.layout == "folder" and len(ddti) == len(rows) == 365
    assert ddti.names == sorted(rows)
    assert ddti.groups == [rows[name]["leak_group"] for name in ddti.names]
    assert ddti.meta[0]["tirads"] == rows[ddti.names[0]]["tirads"]
    fractions = ddti.foreground_fractions()
    assert (fractions > 0).all()  # README: no empty masks
    reference = np.array([float(rows[name]["mask_fg_frac"]) for name in ddti.names])
    np.testing.assert_allclose(fractions, reference, atol=0.02)  # resized, so not exact


def test_group_kfold_on_ddti_keeps_every_leak_group_on_one_side(ddti):
    groups = ddti.groups
    strata = size_tertiles(ddti.foreground_fractions())
    folds = group_kfold(groups, 5, stratify=strata, seed=0)
    for train, val in folds:
        assert not {groups[i] for i in train} & {groups[i] for i in val}
        assert 0.15 < len(val) / len(groups) < 0.25
        assert np.bincount(strata[val], minlength=3).min() >= 15


def test_xml_reader_reports_the_two_broken_cases(ddti_raw_dir):
    with pytest.raises(ValueError) as error, pytest.warns(UserWarning, match="merge"):
        ThyroidDataset(ddti_raw_dir, preprocess=None, progress=False)
    message = str(error.value)
    assert "54.xml: image 54_1: truncated" in message
    assert "62.xml: image 62_3: empty <svg>" in message


def raw_sample(ddti_raw_dir):
    with pytest.warns(UserWarning) as caught:
        raw = ThyroidDataset(
            ddti_raw_dir, preprocess=None, size=(64, 64), on_invalid="skip", progress=False
        )
    return raw, "\n".join(str(w.message) for w in caught)


def test_xml_reader_reproduces_the_shipped_masks(ddti_raw_dir, ddti_dir):
    raw, warned = raw_sample(ddti_raw_dir)
    assert "2 invalid" in warned
    assert raw.layout == "ddti-xml" and "54_1" not in raw.names and "62_3" not in raw.names
    compared = set()
    for i, name in enumerate(raw.names):
        shipped = ddti_dir / "masks" / f"{name}.png"
        if not shipped.is_file():
            continue
        # each polygon filled on its own: repeated polygons must not cancel out
        mask = raw.load_original(i)[1].astype(bool)
        reference = read_binary_mask(shipped).astype(bool)
        assert mask.shape == reference.shape
        assert (mask & reference).sum() / (mask | reference).sum() >= 0.99, name
        compared.add(name)
    # the cases ../shared/data/README.md says both folders hold
    in_both = {"2_1", "3_1", "4_1", "14_1", "58_1", "58_2", "59_1", "62_1", "62_2"}
    in_both |= {"150_1", "233_1", "233_2", "353_1", "353_2", "396_1"}
    assert compared == in_both


def test_xml_reader_joins_cases_of_pixel_identical_frames(ddti_raw_dir):
    raw, warned = raw_sample(ddti_raw_dir)
    assert "2 merge(s)" in warned
    assert "233_2 = 150_1" in warned and "396_1 = 353_2" in warned
    group = dict(zip(raw.names, raw.groups, strict=True))
    assert group["150_1"] == group["233_1"] == group["233_2"]
    assert group["353_1"] == group["353_2"] == group["396_1"]
    assert len({group["150_1"], group["353_1"], group["2_1"]}) == 3
    meta = dict(zip(raw.names, raw.meta, strict=True))
    assert meta["233_2"]["exact_duplicate_of"] == "150_1"
    for seed in range(5):
        for train, val in group_kfold(raw.groups, 3, seed=seed):
            sides = [{raw.names[i] for i in part} for part in (train, val)]
            for a, b in (("150_1", "233_2"), ("353_2", "396_1")):
                assert any({a, b} <= side for side in sides), (seed, a, b)
