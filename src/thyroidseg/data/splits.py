"""Leakage-safe splits: k-fold and train/validation/test that keep every group on one side.

Images of one patient, frames of one case, and pixel-identical copies under different case
numbers are near-duplicates: putting one copy in training and another in testing lets a
model be scored on images it has memorised, which inflates every metric. `group_kfold` and
`train_val_test_split` take one group key per item (e.g. `thyroidseg.data.ThyroidDataset.
groups`) and never put a group on two sides; `size_tertiles` gives the stratification
labels the TN-SCUI 2020 winners used.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from thyroidseg._checks import check_int

__all__ = ["group_kfold", "size_tertiles", "train_val_test_split"]


def size_tertiles(fractions: Sequence[float] | np.ndarray) -> np.ndarray:
    """Label each nodule small (0), medium (1) or large (2) by the tertiles of its area.

    The TN-SCUI 2020 winners stratified their folds this way so that every fold sees
    small and large nodules alike. Ties at a cut go to the lower class.

    Parameters
    ----------
    fractions
        Nodule area per item (pixels or fraction of the frame), finite.

    Examples
    --------
    >>> size_tertiles([0.01, 0.30, 0.05, 0.20, 0.02, 0.10]).tolist()
    [0, 2, 1, 2, 0, 1]
    """
    values = np.asarray(fractions, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError("size_tertiles needs a non-empty list of finite areas")
    cuts = np.quantile(values, [1 / 3, 2 / 3])
    return np.searchsorted(cuts, values, side="left").astype(np.int64)


def group_kfold(
    groups: Sequence[Hashable],
    folds: int = 5,
    *,
    stratify: Sequence[Hashable] | None = None,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """K-fold cross-validation where each group falls in exactly one validation fold.

    Parameters
    ----------
    groups
        Group key per item (e.g. `ThyroidDataset.groups`): items sharing a key are
        never split between training and validation.
    folds
        Number of folds, at least 2 and at most the number of groups (the name
        ``thyroidseg train --folds`` and `thyroidseg.training.workflows.train_folder` use).
    stratify
        Optional label per item (e.g. `size_tertiles`); each group takes its most
        common label and the folds get each label in proportion.
    seed
        Same seed, same folds.

    Returns
    -------
    list of (train_indices, val_indices)
        Sorted ``int64`` arrays; the validation parts partition ``range(len(groups))``.

    Examples
    --------
    >>> splits = group_kfold(["a", "a", "b", "c", "c", "d"], folds=2, seed=0)
    >>> [sorted(set(val)) == sorted(val) for _, val in splits]
    [True, True]
    >>> sorted(np.concatenate([val for _, val in splits]).tolist())
    [0, 1, 2, 3, 4, 5]
    """
    check_int("folds", folds, 2)
    part = _assign_groups(groups, np.full(folds, 1.0 / folds), stratify, seed)
    everything = np.arange(len(part))
    return [(everything[part != k], everything[part == k]) for k in range(folds)]


def train_val_test_split(
    groups: Sequence[Hashable],
    fractions: Sequence[float] = (0.7, 0.2, 0.1),
    *,
    stratify: Sequence[Hashable] | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split items into train/validation/test with no group on two sides.

    Parameters
    ----------
    groups, stratify, seed
        As in `group_kfold`.
    fractions
        Target share of *items* for train, validation and test (non-negative, sum 1; a
        zero gives an empty part). Groups are indivisible, so shares are approximate.

    Returns
    -------
    (train_indices, val_indices, test_indices)
        Sorted ``int64`` arrays that partition ``range(len(groups))``.

    Examples
    --------
    >>> train, val, test = train_val_test_split([f"g{i // 2}" for i in range(20)])
    >>> len(train), len(val), len(test)
    (14, 4, 2)
    """
    shares = np.asarray(fractions, dtype=np.float64)
    if shares.shape != (3,) or (shares < 0).any() or not np.isclose(shares.sum(), 1.0):
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    part = _assign_groups(groups, shares, stratify, seed)
    everything = np.arange(len(part))
    train, val, test = (everything[part == k] for k in range(3))
    return train, val, test


def _assign_groups(
    groups: Sequence[Hashable],
    shares: np.ndarray,
    stratify: Sequence[Hashable] | None,
    seed: int,
) -> np.ndarray:
    """Part index per item: whole groups, greedily, so each stratum follows ``shares``.

    Groups are visited stratum by stratum, in a seeded random order with larger groups
    first, and each joins the part furthest below its target share:
    ``argmin_k (count_k[stratum] + group_size) / share_k`` (ties: fewer items overall,
    then lower ``k``). Parts with a zero share get nothing; when only as many groups are
    left as parts are still empty, those groups go to the empty parts.
    """
    keys = list(groups)
    if not keys:
        raise ValueError("cannot split an empty list of groups")
    group_ids, group_of_item = np.unique(np.array([str(k) for k in keys]), return_inverse=True)
    n_groups = len(group_ids)
    wanted = int((shares > 0).sum())
    if n_groups < wanted:
        raise ValueError(f"{n_groups} group(s) cannot fill {wanted} non-empty parts")
    sizes = np.bincount(group_of_item, minlength=n_groups)
    if stratify is None:
        strata = np.zeros(n_groups, np.int64)
    else:
        labels = list(stratify)
        if len(labels) != len(keys):
            raise ValueError(f"stratify has {len(labels)} labels for {len(keys)} items")
        strata = _group_labels(group_of_item, labels, n_groups)

    rng = np.random.default_rng(seed)
    order = rng.permutation(n_groups)
    order = order[np.argsort(-sizes[order], kind="stable")]  # big groups first, random ties
    order = np.concatenate([order[strata[order] == s] for s in np.unique(strata)])
    positive = shares > 0
    share_or_one = np.where(positive, shares, 1.0)
    counts = np.zeros((int(strata.max()) + 1, len(shares)))
    totals = np.zeros(len(shares))
    part_of_group = np.empty(n_groups, np.int64)
    for visited, g in enumerate(order):
        fill = np.where(positive, (counts[strata[g]] + sizes[g]) / share_or_one, np.inf)
        empty = positive & (totals == 0)
        if n_groups - visited <= empty.sum():  # just enough groups left for the empty parts
            fill = np.where(empty, fill, np.inf)
        best = np.lexsort((np.arange(len(shares)), totals / share_or_one, fill))[0]
        part_of_group[g] = best
        counts[strata[g], best] += sizes[g]
        totals[best] += sizes[g]
    return part_of_group[group_of_item]


def _group_labels(group_of_item: np.ndarray, labels: list[Hashable], n_groups: int) -> np.ndarray:
    """Most common label of each group (ties: the label that sorts first), as integers."""
    label_ids, label_of_item = np.unique(np.array([str(v) for v in labels]), return_inverse=True)
    per_group = np.zeros((n_groups, len(label_ids)), np.int64)
    np.add.at(per_group, (group_of_item, label_of_item), 1)
    return per_group.argmax(axis=1)
