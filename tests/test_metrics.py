"""ConfusionMatrix and the metric functions: properties against brute force and hand counts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

from thyroidseg.metrics import (
    ConfusionMatrix,
    balanced_accuracy,
    dice,
    frequency_weighted_iou,
    iou,
    mean_dice,
    mean_iou,
    pixel_accuracy,
    precision,
    recall,
    specificity,
)
from thyroidseg.metrics.confusion import nanmean
from thyroidseg.metrics.counting import (
    _validate_and_count,  # the accelerator path, run here on CPU tensors
    confusion_matrices,
)
from thyroidseg.metrics.statistics import summarize

IGNORE = 255
FEW = settings(max_examples=40, deadline=None)


@st.composite
def label_pairs(draw, with_ignore: bool = False):
    """(pred, target, num_classes, ignore_index) as small (N, H, W) int arrays."""
    num_classes = draw(st.integers(2, 4))
    n, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, num_classes, (n, h, w))
    target = rng.integers(0, num_classes, (n, h, w))
    ignore_index = None
    if with_ignore and draw(st.booleans()):
        ignore_index = IGNORE
        target[rng.random(target.shape) < 0.3] = IGNORE
    return pred, target, num_classes, ignore_index


def brute_force(pred, target, num_classes, ignore_index):
    """One matrix per image, counted pixel by pixel."""
    out = np.zeros((pred.shape[0], num_classes, num_classes), dtype=np.int64)
    for n, i, j in np.ndindex(*pred.shape):
        if target[n, i, j] != ignore_index:
            out[n, target[n, i, j], pred[n, i, j]] += 1
    return out


# ---- counting --------------------------------------------------------------------------


@FEW
@given(label_pairs(with_ignore=True))
def test_matches_brute_force_and_counts_every_non_ignored_pixel(case):
    pred, target, num_classes, ignore_index = case
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index).update(pred, target)
    expected = brute_force(pred, target, num_classes, ignore_index)
    np.testing.assert_array_equal(cm.per_image_matrices, expected)
    np.testing.assert_array_equal(cm.matrix, expected.sum(0))
    assert cm.matrix.dtype == np.int64
    assert cm.matrix.sum() == np.count_nonzero(target != ignore_index)


@FEW
@given(label_pairs(with_ignore=True))
def test_numpy_and_torch_inputs_give_identical_matrices(case):
    pred, target, num_classes, ignore_index = case
    from_numpy = confusion_matrices(pred, target, num_classes, ignore_index=ignore_index)
    from_torch = confusion_matrices(
        torch.from_numpy(pred), torch.from_numpy(target), num_classes, ignore_index=ignore_index
    )
    mixed = confusion_matrices(
        torch.from_numpy(pred), target, num_classes, ignore_index=ignore_index
    )
    # the path used for tensors on an accelerator, run here on CPU tensors
    on_device = _validate_and_count(
        torch.from_numpy(pred), torch.from_numpy(target), num_classes, ignore_index
    )
    np.testing.assert_array_equal(from_numpy, from_torch)
    np.testing.assert_array_equal(from_numpy, mixed)
    np.testing.assert_array_equal(from_numpy, on_device)


@FEW
@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**32 - 1))
def test_binary_fast_path_agrees_with_general_count_for_every_dtype(n, h, w, seed):
    rng = np.random.default_rng(seed)
    pred, target = rng.integers(0, 2, (2, n, h, w))
    # ignore_index that never occurs forces the general bincount path
    general = confusion_matrices(pred, target, ignore_index=-1)
    for dtype in (np.bool_, np.uint8, np.int8, np.int32, np.int64, np.uint16):
        fast = confusion_matrices(pred.astype(dtype), target.astype(dtype))
        np.testing.assert_array_equal(fast, general, err_msg=str(dtype))
        pred_t, target_t = (
            torch.from_numpy(pred.astype(dtype)),
            torch.from_numpy(target.astype(dtype)),
        )
        fast_torch = confusion_matrices(pred_t, target_t)
        np.testing.assert_array_equal(fast_torch, general, err_msg=f"torch {dtype}")
        device_path = _validate_and_count(pred_t, target_t, 2, None)
        np.testing.assert_array_equal(device_path, general, err_msg=f"device path {dtype}")
    # non-contiguous views take the same path
    np.testing.assert_array_equal(
        confusion_matrices(pred.astype(np.uint8)[:, ::-1], target.astype(np.uint8)[:, ::-1]),
        confusion_matrices(pred[:, ::-1], target[:, ::-1], ignore_index=-1),
    )


def test_layouts_hw_nhw_and_n1hw_are_equivalent():
    rng = np.random.default_rng(0)
    pred, target = rng.integers(0, 3, (2, 4, 5, 6))
    batch = confusion_matrices(pred, target, 3)
    np.testing.assert_array_equal(confusion_matrices(pred[:, None], target[:, None], 3), batch)
    np.testing.assert_array_equal(confusion_matrices(pred[:, None], target, 3), batch)
    np.testing.assert_array_equal(confusion_matrices(pred[0], target[0], 3), batch[:1])


@FEW
@given(label_pairs(with_ignore=True), st.data())
def test_merging_two_halves_equals_one_update(case, data):
    pred, target, num_classes, ignore_index = case
    cut = data.draw(st.integers(0, pred.shape[0]))
    whole = ConfusionMatrix(num_classes, ignore_index=ignore_index).update(pred, target)
    first, second = (ConfusionMatrix(num_classes, ignore_index=ignore_index) for _ in range(2))
    if cut:
        first.update(pred[:cut], target[:cut])
    if cut < pred.shape[0]:
        second.update(pred[cut:], target[cut:])
    merged = first + second
    np.testing.assert_array_equal(merged.matrix, whole.matrix)
    np.testing.assert_array_equal(merged.per_image_matrices, whole.per_image_matrices)
    assert merged.n_images == whole.n_images == pred.shape[0]


@FEW
@given(label_pairs())
def test_swapping_pred_and_target_transposes(case):
    pred, target, num_classes, _ = case
    forward = confusion_matrices(pred, target, num_classes)
    backward = confusion_matrices(target, pred, num_classes)
    np.testing.assert_array_equal(backward, forward.transpose(0, 2, 1))
    np.testing.assert_allclose(recall(backward.sum(0)), precision(forward.sum(0)), equal_nan=True)


def test_repeated_updates_and_reset():
    cm = ConfusionMatrix()
    ones = np.ones((3, 3), np.uint8)
    cm.update(ones, ones).update(ones, 1 - ones)
    assert cm.n_images == 2
    np.testing.assert_array_equal(cm.matrix, [[0, 9], [0, 9]])
    cm.matrix[0, 0] = 100  # a copy: the state is not changed through it
    assert cm.matrix[0, 0] == 0
    with pytest.raises(ValueError):
        cm.per_image_matrices[0, 0, 0] = 1
    cm.reset()
    assert cm.n_images == 0
    np.testing.assert_array_equal(cm.matrix, np.zeros((2, 2)))
    assert cm.per_image("iou").shape == (0,)


def test_from_matrices_round_trip():
    rng = np.random.default_rng(1)
    cm = ConfusionMatrix(3).update(*rng.integers(0, 3, (2, 4, 8, 8)))
    again = ConfusionMatrix.from_matrices(np.array(cm.to_dict()["per_image_matrices"]))
    np.testing.assert_array_equal(again.per_image_matrices, cm.per_image_matrices)
    np.testing.assert_array_equal(again.matrix, cm.matrix)
    with pytest.raises(ValueError, match="non-negative integer"):
        ConfusionMatrix.from_matrices(-np.ones((1, 2, 2), np.int64))


# ---- bad input ---------------------------------------------------------------------------


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"pred \(2, 4, 4\) vs target \(2, 4, 5\)"):
        confusion_matrices(np.zeros((2, 4, 4), int), np.zeros((2, 4, 5), int))


def test_labels_out_of_range_are_listed():
    pred = np.array([[0, 1], [7, -3]])
    with pytest.raises(ValueError, match=r"pred has labels outside \[0, 2\): -3, 7 \(2 pixels\)"):
        confusion_matrices(pred, np.zeros((2, 2), int))
    with pytest.raises(ValueError, match=r"target has labels outside \[0, 3\) or 255: 9"):
        confusion_matrices(np.zeros((2, 2), int), np.array([[255, 9], [0, 1]]), 3, ignore_index=255)
    with pytest.raises(ValueError, match=r"outside \[0, 2\): 5"):
        confusion_matrices(torch.tensor([[0, 5]]), torch.tensor([[0, 1]]))
    for dtype in (torch.uint8, torch.int64):  # the accelerator path's own checks
        with pytest.raises(ValueError, match=r"target has labels outside \[0, 2\) or 255: 3"):
            _validate_and_count(
                torch.tensor([[0, 1]], dtype=dtype), torch.tensor([[3, 255]], dtype=dtype), 2, 255
            )


def test_ignore_index_is_not_a_valid_prediction():
    with pytest.raises(ValueError, match="pred has labels outside"):
        confusion_matrices(np.array([[255, 0]]), np.array([[255, 0]]), ignore_index=255)


@pytest.mark.parametrize("make", [np.asarray, torch.as_tensor])
def test_float_input_says_threshold_or_argmax(make):
    with pytest.raises(ValueError, match="threshold probabilities or take the argmax"):
        confusion_matrices(make(np.full((2, 2), 0.7)), make(np.zeros((2, 2), np.int64)))
    with pytest.raises(ValueError, match="target has floating-point dtype torch.float32"):
        _validate_and_count(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2), 2, None)


def test_empty_and_wrong_rank_inputs():
    with pytest.raises(ValueError, match=r"pred is empty \(shape \(0, 4\)\)"):
        confusion_matrices(np.zeros((0, 4), int), np.zeros((0, 4), int))
    with pytest.raises(ValueError, match="argmax over the class axis"):
        confusion_matrices(np.zeros((1, 3, 4, 4), int), np.zeros((1, 3, 4, 4), int))
    with pytest.raises(ValueError, match=r"expected \(H, W\), \(N, H, W\) or \(N, 1, H, W\)"):
        confusion_matrices(np.zeros(4, int), np.zeros(4, int))
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        ConfusionMatrix(1)


def test_adding_different_settings_is_an_error():
    with pytest.raises(ValueError, match="num_classes 2 vs 3"):
        ConfusionMatrix(2) + ConfusionMatrix(3)
    with pytest.raises(ValueError, match="ignore_index None vs 255"):
        ConfusionMatrix(2) + ConfusionMatrix(2, ignore_index=255)


def test_unknown_metric_and_class_are_errors():
    cm = ConfusionMatrix().update(np.zeros((2, 2), int), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="unknown metric 'miou'; choose from iou, dice"):
        cm.per_image("miou")
    with pytest.raises(ValueError, match=r"cls must be a class index in \[0, 2\)"):
        cm.per_image("iou", cls=2)


# ---- metric definitions ---------------------------------------------------------------------


def test_hand_counted_binary_example():
    # truth 0: 6 right, 1 wrong; truth 1: 1 missed, 2 found
    m = np.array([[6, 1], [1, 2]])
    np.testing.assert_allclose(iou(m), [6 / 8, 2 / 4])
    np.testing.assert_allclose(dice(m), [12 / 14, 4 / 6])
    np.testing.assert_allclose(precision(m), [6 / 7, 2 / 3])
    np.testing.assert_allclose(recall(m), [6 / 7, 2 / 3])
    np.testing.assert_allclose(specificity(m), [2 / 3, 6 / 7])
    assert pixel_accuracy(m) == pytest.approx(8 / 10)
    assert mean_iou(m) == pytest.approx((6 / 8 + 2 / 4) / 2)
    assert mean_iou(m, include_background=False) == pytest.approx(0.5)
    assert mean_dice(m) == pytest.approx((12 / 14 + 4 / 6) / 2)
    assert frequency_weighted_iou(m) == pytest.approx(0.7 * 6 / 8 + 0.3 * 2 / 4)
    assert balanced_accuracy(m) == pytest.approx((6 / 7 + 2 / 3) / 2)


def test_predicting_only_background_shows_what_each_metric_hides():
    # 90 % background: pixel accuracy 0.9 although no nodule pixel is found
    m = np.array([[90, 0], [10, 0]])
    assert pixel_accuracy(m) == pytest.approx(0.9)
    assert mean_iou(m) == pytest.approx(0.45)
    assert iou(m)[1] == 0.0
    assert balanced_accuracy(m) == pytest.approx(0.5)
    assert math.isnan(precision(m)[1])  # never predicted: undefined, not 0


@FEW
@given(label_pairs(with_ignore=True))
def test_dice_is_a_function_of_iou(case):
    pred, target, num_classes, ignore_index = case
    m = ConfusionMatrix(num_classes, ignore_index=ignore_index).update(pred, target).matrix
    j = iou(m)
    np.testing.assert_allclose(dice(m), 2 * j / (1 + j), equal_nan=True)
    np.testing.assert_array_equal(np.isnan(iou(m)), (m.sum(0) + m.sum(1)) == 0)


@FEW
@given(label_pairs())
def test_perfect_prediction_scores_one_for_present_classes_nan_for_absent(case):
    _, target, num_classes, _ = case
    cm = ConfusionMatrix(num_classes).update(target, target)
    present = np.isin(np.arange(num_classes), target)
    for values in (cm.iou(), cm.dice(), cm.precision(), cm.recall()):
        np.testing.assert_array_equal(values[present], 1.0)
        assert np.isnan(values[~present]).all()
    assert cm.pixel_accuracy() == 1.0
    assert cm.mean_iou() == 1.0 and cm.balanced_accuracy() == 1.0


def test_mean_over_defined_classes_without_warning(recwarn):
    m = np.zeros((3, 3), np.int64)
    m[0, 0] = 5  # classes 1 and 2 absent everywhere
    assert mean_iou(m) == 1.0
    assert math.isnan(mean_iou(m, include_background=False))
    assert math.isnan(pixel_accuracy(np.zeros((2, 2), np.int64)))
    assert not recwarn.list


def test_nanmean_skips_undefined_values_without_warning(recwarn):
    values = np.array([[0.2, np.nan, 0.6], [np.nan, np.nan, np.nan]])
    np.testing.assert_allclose(nanmean(values), [0.4, np.nan])
    assert nanmean([0.5, np.nan, 1.0]) == pytest.approx(0.75)
    assert isinstance(nanmean([0.5]), float)
    assert math.isnan(nanmean(np.array([])))  # no value at all: undefined too
    assert not recwarn.list


def test_functions_accept_stacks_of_matrices():
    stack = np.array([[[6, 1], [1, 2]], [[4, 0], [0, 0]]])
    assert iou(stack).shape == (2, 2)
    np.testing.assert_allclose(pixel_accuracy(stack), [0.8, 1.0])
    np.testing.assert_allclose(mean_iou(stack), [0.625, 1.0])


# ---- per image -------------------------------------------------------------------------------


@FEW
@given(label_pairs(with_ignore=True))
def test_per_image_equals_pooled_for_one_image(case):
    pred, target, num_classes, ignore_index = case
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index).update(pred[:1], target[:1])
    for name, pooled in [("iou", cm.iou()), ("dice", cm.dice()), ("recall", cm.recall())]:
        for cls in range(num_classes):
            np.testing.assert_array_equal(cm.per_image(name, cls), pooled[cls : cls + 1])


def test_empty_mask_policy():
    nothing = np.zeros((4, 4), np.uint8)
    blob = nothing.copy()
    blob[1:3, 1:3] = 1
    cm = ConfusionMatrix()
    cm.update(blob, blob)  # found
    cm.update(nothing, nothing)  # nothing to find, nothing found
    cm.update(blob, nothing)  # false-positive image
    cm.update(nothing, blob)  # missed
    np.testing.assert_array_equal(cm.per_image("iou"), [1.0, np.nan, 0.0, 0.0])
    np.testing.assert_array_equal(cm.per_image("iou", empty=1.0), [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(cm.per_image("recall"), [1.0, np.nan, np.nan, 0.0])
    np.testing.assert_array_equal(cm.per_image("precision"), [1.0, np.nan, 0.0, np.nan])
    np.testing.assert_array_equal(cm.per_image("specificity", empty=0.5), [1, 1, 12 / 16, 1])
    np.testing.assert_array_equal(cm.false_positive_images(), [False, False, True, False])
    summary = cm.summary("iou")
    assert (summary.n_images, summary.n_excluded) == (3, 1)
    assert summary.mean == pytest.approx(1 / 3)
    assert cm.summary("iou", empty=1.0).n_excluded == 0


def test_pooled_and_per_image_differ_when_object_sizes_differ():
    big, small = np.zeros((2, 10, 10), np.uint8), np.zeros((2, 10, 10), np.uint8)
    big[0, :8, :8] = 1  # truth: a large nodule found exactly
    small[0] = big[0]
    big[1, 0, 0] = 1  # truth: a one-pixel nodule, missed
    cm = ConfusionMatrix().update(small, big)
    assert cm.iou()[1] == pytest.approx(64 / 65)
    np.testing.assert_allclose(cm.per_image("iou"), [1.0, 0.0])


# ---- summaries ------------------------------------------------------------------------------


def test_summarize_excludes_nan_and_inf_and_is_reproducible():
    values = [0.2, 0.4, np.nan, 0.9, np.inf, 0.5]
    s = summarize(values, seed=3)
    finite = np.array([0.2, 0.4, 0.9, 0.5])
    assert (s.n_images, s.n_excluded) == (4, 2)
    assert s.mean == pytest.approx(finite.mean())
    assert s.std == pytest.approx(finite.std(ddof=1))
    assert finite.min() <= s.ci_low <= s.mean <= s.ci_high <= finite.max()
    assert summarize(values, seed=3) == s
    json.dumps(s.to_dict(), allow_nan=False)


def test_summarize_small_and_constant_samples():
    one = summarize([0.7])
    assert one.mean == 0.7 and math.isnan(one.std) and math.isnan(one.ci_low)
    none = summarize([np.nan])
    assert math.isnan(none.mean) and none.n_excluded == 1
    constant = summarize([0.5] * 10)
    assert (constant.ci_low, constant.ci_high) == (0.5, 0.5)
    with pytest.raises(ValueError, match="confidence"):
        summarize([0.1, 0.2], confidence=95)


def test_bootstrap_interval_narrows_with_more_images():
    rng = np.random.default_rng(0)
    few, many = summarize(rng.random(20)), summarize(rng.random(2000))
    assert many.ci_high - many.ci_low < few.ci_high - few.ci_low


# ---- output ---------------------------------------------------------------------------------


def test_to_dict_is_strict_json_and_report_is_readable():
    rng = np.random.default_rng(2)
    cm = ConfusionMatrix(3).update(*rng.integers(0, 3, (2, 3, 8, 8)))
    cm.update(np.zeros((8, 8), int), np.zeros((8, 8), int))  # classes 1, 2 absent: NaN
    data = json.loads(json.dumps(cm.to_dict(), allow_nan=False))
    assert data["matrix"] == cm.matrix.tolist()
    assert data["n_images"] == 4
    assert set(data["per_image"]) == {"1", "2"}
    assert data["per_image"]["1"]["iou"]["n_excluded"] == 1
    assert data["pooled"]["iou"] == pytest.approx(cm.iou().tolist())
    text = cm.report()
    assert "rows: truth, columns: prediction" in text
    assert f"{cm.matrix[2, 1]:,}" in text
    assert "pixel accuracy" in text and "Per image, class 2" in text


# ---- distributed ------------------------------------------------------------------------------


def test_sync_without_process_group_is_a_no_op():
    cm = ConfusionMatrix().update(np.ones((2, 2), int), np.ones((2, 2), int))
    assert cm.sync() is cm
    assert cm.n_images == 1


def _sync_worker(rank: int, world_size: int, init_file: str, results) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        rng = np.random.default_rng(rank)
        n_images = rank + 1  # ranks hold different numbers of images
        cm = ConfusionMatrix(3).update(*rng.integers(0, 3, (2, n_images, 5, 5)))
        own = cm.per_image_matrices.copy()
        skipped = cm.sync(should_sync=False).n_images  # every process counted every image
        cm.sync()
        try:
            cm.sync()
            second = "no error"
        except RuntimeError as error:
            second = str(error)
        gathered = cm.per_image_matrices.copy()
        unsynced = cm.unsync().per_image_matrices.copy()
        alone = [dist.new_group([r]) for r in range(world_size)][rank]  # every rank makes both
        in_group = cm.sync(alone).n_images  # a group of this process only
        results.put((rank, gathered, second, skipped, unsynced, own, in_group))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_sync_gathers_per_image_matrices_across_processes(tmp_path):
    world_size = 2
    context = mp.get_context("spawn")
    results = context.Queue()
    mp.spawn(
        _sync_worker,
        args=(world_size, str(tmp_path / "init"), results),
        nprocs=world_size,
        join=True,
    )
    expected = np.concatenate(
        [
            confusion_matrices(*np.random.default_rng(rank).integers(0, 3, (2, rank + 1, 5, 5)), 3)
            for rank in range(world_size)
        ]
    )
    for _ in range(world_size):
        rank, matrices, second, skipped, unsynced, own, in_group = results.get(timeout=60)
        np.testing.assert_array_equal(matrices, expected, err_msg=f"rank {rank}")
        assert "already called" in second
        assert skipped == in_group == rank + 1  # should_sync=False, and a one-process group
        np.testing.assert_array_equal(unsynced, own)  # unsync: this process's images again


def test_unsync_without_sync_is_refused() -> None:
    cm = ConfusionMatrix().update(np.ones((2, 2), int), np.ones((2, 2), int))
    with pytest.raises(RuntimeError, match="sync\\(\\) was not called"):
        cm.unsync()


def test_a_confusion_matrix_too_large_to_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 1024, got 1000000"):
        ConfusionMatrix(10**6)
