"""Synthetic phantoms: exact masks of visible nodules, determinism, split screens, files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from thyroidseg.data import ThyroidDataset
from thyroidseg.data.synthetic import synthetic_phantoms, write_synthetic_dataset


def test_shapes_types_and_every_frame_has_a_nodule():
    images, masks = synthetic_phantoms(12, size=(96, 128), seed=0)
    assert images.shape == masks.shape == (12, 96, 128)
    assert images.dtype == masks.dtype == np.uint8
    assert set(np.unique(masks).tolist()) == {0, 1}
    assert (masks.reshape(12, -1).sum(axis=1) > 0).all()
    assert synthetic_phantoms(0)[0].shape == (0, 256, 256)


def test_frame_i_depends_only_on_seed_and_i():
    images, masks = synthetic_phantoms(6, size=(64, 64), seed=5)
    head_images, head_masks = synthetic_phantoms(3, size=(64, 64), seed=5)
    np.testing.assert_array_equal(images[:3], head_images)
    np.testing.assert_array_equal(masks[:3], head_masks)
    assert not np.array_equal(images, synthetic_phantoms(6, size=(64, 64), seed=6)[0])
    assert len({image.tobytes() for image in images}) == 6


def test_masks_outline_visible_nodules():
    """Mean brightness inside each nodule differs clearly from a ring around it.

    The ring starts 3 pixels out, past the dark halo some nodules have.
    """
    images, masks = synthetic_phantoms(24, size=(128, 128), seed=1, decorations=False)
    contrasts = []
    for image, mask in zip(images, masks, strict=True):
        n_labels, labels = cv2.connectedComponents(mask)
        for label in range(1, n_labels):
            nodule = (labels == label).astype(np.uint8)
            near = cv2.dilate(nodule, np.ones((7, 7), np.uint8))
            ring = (cv2.dilate(nodule, np.ones((15, 15), np.uint8)) - near).astype(bool)
            inner = cv2.erode(nodule, np.ones((3, 3), np.uint8)).astype(bool)
            contrasts.append(abs(image[inner].mean() - image[ring & (mask == 0)].mean()))
    assert np.median(contrasts) > 20  # grey levels
    assert np.mean(np.array(contrasts) > 8) > 0.9


def test_hypo_and_hyper_echoic_nodules_both_occur():
    images, masks = synthetic_phantoms(40, size=(96, 96), seed=2, decorations=False)
    brighter = [
        image[mask == 1].mean() > image[(cv2.dilate(mask, np.ones((9, 9))) - mask) == 1].mean()
        for image, mask in zip(images, masks, strict=True)
    ]
    assert 0 < sum(brighter) < len(brighter)


def test_split_screen_frames_have_a_nodule_in_each_view():
    _, masks = synthetic_phantoms(8, size=(96, 160), seed=3, split_screen=1.0)
    for mask in masks:
        n_components = cv2.connectedComponents(mask)[0] - 1
        left, right = mask[:, :80].any(), mask[:, 80:].any()
        assert n_components >= 2 and left and right


def test_decorations_burn_text_into_a_black_border():
    plain, _ = synthetic_phantoms(4, size=(128, 128), seed=4, decorations=False)
    decorated, masks = synthetic_phantoms(4, size=(128, 128), seed=4, decorations=True)
    assert (plain[:, :2] > 0).any(axis=(1, 2)).all()  # speckle reaches the top rows
    assert (decorated[:, 0] == 0).all()  # black top border ...
    assert (decorated[:, 2:12].max(axis=(1, 2)) > 150).all()  # ... carrying bright text
    assert not masks[:, :8].any()  # no nodule under the border


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="non-negative integer"):
        synthetic_phantoms(-1)
    with pytest.raises(ValueError, match="at least 32x32"):
        synthetic_phantoms(1, size=(16, 64))
    with pytest.raises(ValueError, match="probability"):
        synthetic_phantoms(1, split_screen=2.0)


def test_written_dataset_reads_back_exactly(tmp_path):
    images, masks = synthetic_phantoms(5, size=(48, 64), seed=9)
    root = write_synthetic_dataset(tmp_path / "phantoms", 5, size=(48, 64), seed=9)
    ds = ThyroidDataset(root, size=(48, 64), preprocess=None, progress=False)
    assert ds.names == [f"phantom_{i:04d}" for i in range(5)]
    for i in range(5):
        image, mask = ds.load_preprocessed(i)
        np.testing.assert_array_equal(image, images[i])
        np.testing.assert_array_equal(mask, masks[i])
    with pytest.raises(FileExistsError, match="not empty"):
        write_synthetic_dataset(root, 2)
