"""Readers on the real DDTI data in ../shared/data (skipped when it is absent)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from thyroidseg.data import ThyroidDataset, group_kfold, read_binary_mask, size_tertiles

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
    with pytest.raises(ValueError) as error:
        ThyroidDataset(ddti_raw_dir, preprocess=None, progress=False)
    message = str(error.value)
    assert "54.xml: image 54_1: truncated" in message
    assert "62.xml: image 62_3: empty <svg>" in message


def test_xml_reader_reproduces_the_shipped_masks(ddti_raw_dir, ddti_dir):
    with pytest.warns(UserWarning, match="2 invalid"):
        raw = ThyroidDataset(
            ddti_raw_dir, preprocess=None, size=(64, 64), on_invalid="skip", progress=False
        )
    assert raw.layout == "ddti-xml" and "54_1" not in raw.names and "62_3" not in raw.names
    compared = 0
    for i, name in enumerate(raw.names):
        shipped = ddti_dir / "masks" / f"{name}.png"
        if not shipped.is_file():
            continue
        mask = raw.load_original(i)[1].astype(bool)
        reference = read_binary_mask(shipped).astype(bool)
        assert mask.shape == reference.shape
        assert (mask & reference).sum() / (mask | reference).sum() >= 0.99, name
        compared += 1
    assert compared == 9  # cases 2, 3, 4, 14, 58 (x2), 59, 62 (x2)
