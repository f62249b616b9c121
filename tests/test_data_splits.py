"""Group k-fold and train/val/test splits: no group on two sides, stratified, deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from thyroidseg.data.splits import group_kfold, size_tertiles, train_val_test_split

group_lists = st.lists(st.integers(0, 30), min_size=1, max_size=80)


def groups_on(indices: np.ndarray, groups: list) -> set:
    return {groups[i] for i in indices}


@settings(max_examples=60, deadline=None)
@given(groups=group_lists, folds_wanted=st.integers(2, 6), seed=st.integers(0, 2**32 - 1))
def test_group_kfold_partitions_items_and_never_splits_a_group(groups, folds_wanted, seed):
    assume(len(set(groups)) >= folds_wanted)
    folds = group_kfold(groups, folds_wanted, seed=seed)
    assert len(folds) == folds_wanted
    vals = np.concatenate([val for _, val in folds])
    assert sorted(vals.tolist()) == list(range(len(groups)))  # each item validated once
    for train, val in folds:
        assert len(val) > 0
        assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(groups)))
        assert not groups_on(train, groups) & groups_on(val, groups)


@settings(max_examples=30, deadline=None)
@given(groups=group_lists, folds_wanted=st.integers(2, 6), seed=st.integers(0, 2**32 - 1))
def test_group_kfold_refuses_fewer_groups_than_folds(groups, folds_wanted, seed):
    assume(len(set(groups)) < folds_wanted)
    with pytest.raises(ValueError, match="cannot fill"):
        group_kfold(groups, folds_wanted, seed=seed)


@settings(max_examples=60, deadline=None)
@given(
    groups=group_lists,
    strata=st.lists(st.integers(0, 2), min_size=80, max_size=80),
    seed=st.integers(0, 1000),
)
def test_train_val_test_split_never_splits_a_group(groups, strata, seed):
    assume(len(set(groups)) >= 3)
    parts = train_val_test_split(groups, stratify=strata[: len(groups)], seed=seed)
    assert all(len(part) > 0 for part in parts)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(groups)))
    sides = [groups_on(part, groups) for part in parts]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])


def test_splits_are_deterministic_for_a_seed_and_change_with_it():
    groups = [f"case{i // 3}" for i in range(90)]
    first, again = group_kfold(groups, 5, seed=7), group_kfold(groups, 5, seed=7)
    for (a_train, a_val), (b_train, b_val) in zip(first, again, strict=True):
        np.testing.assert_array_equal(a_val, b_val)
        np.testing.assert_array_equal(a_train, b_train)
    other = group_kfold(groups, 5, seed=8)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, other, strict=True))
    split = train_val_test_split(groups, seed=3)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(split, train_val_test_split(groups, seed=3), strict=True)
    )


def test_stratified_folds_get_each_size_class_in_proportion():
    rng = np.random.default_rng(0)
    sizes = rng.uniform(0.001, 0.4, 60)
    strata = size_tertiles(sizes)
    assert np.bincount(strata).tolist() == [20, 20, 20]
    folds = group_kfold([f"g{i}" for i in range(60)], 5, stratify=strata, seed=0)
    for _, val in folds:
        assert np.bincount(strata[val], minlength=3).tolist() == [4, 4, 4]
    # without stratification the same folds would be unbalanced for some seed
    unbalanced = [
        np.bincount(strata[val], minlength=3).tolist()
        for seed in range(5)
        for _, val in group_kfold([f"g{i}" for i in range(60)], 5, seed=seed)
    ]
    assert any(counts != [4, 4, 4] for counts in unbalanced)


def test_a_group_takes_its_most_common_stratum():
    groups = ["a", "a", "a", "b", "c", "d"]
    strata = [0, 0, 1, 1, 1, 0]  # a: 0 (two of three), b: 1, c: 1, d: 0
    for seed in range(5):
        for train, val in group_kfold(groups, 2, stratify=strata, seed=seed):
            assert not groups_on(train, groups) & groups_on(val, groups)
            # balanced by the groups' strata: one stratum-0 group (a or d) and one
            # stratum-1 group (b or c) per fold; were a's stratum its first or last label
            # rather than its most common one, 3 + 1 groups could not split 1 + 1 twice
            assert len(groups_on(val, groups) & {"a", "d"}) == 1
            assert len(groups_on(val, groups) & {"b", "c"}) == 1
    with pytest.raises(ValueError, match="stratify has 2 labels for 6 items"):
        group_kfold(groups, 2, stratify=[0, 1])


def test_train_val_test_fractions_and_empty_parts():
    groups = [f"g{i}" for i in range(200)]
    train, val, test = train_val_test_split(groups, (0.7, 0.2, 0.1), seed=0)
    assert (len(train), len(val), len(test)) == (140, 40, 20)
    train, val, test = train_val_test_split(groups, (0.8, 0.2, 0.0), seed=0)
    assert (len(train), len(val), len(test)) == (160, 40, 0)
    big_groups = [f"g{i // 10}" for i in range(200)]  # 20 groups of 10: shares stay close
    train, val, test = train_val_test_split(big_groups, seed=1)
    assert abs(len(train) - 140) <= 10 and abs(len(val) - 40) <= 10 and len(test) >= 10


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: group_kfold(["a", "b"], 1), "folds must be an integer >= 2"),
        (lambda: group_kfold([], 2), "empty list"),
        (lambda: train_val_test_split(["a", "b", "c"], (0.5, 0.5)), "3 non-negative"),
        (lambda: train_val_test_split(["a", "b", "c"], (0.9, 0.2, -0.1)), "3 non-negative"),
        (lambda: train_val_test_split(["a", "a", "b"]), "cannot fill 3"),
        (lambda: size_tertiles([0.1, float("nan")]), "finite"),
    ],
)
def test_bad_split_arguments_are_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=50))
def test_size_tertiles_are_monotone_classes(values):
    labels = size_tertiles(values)
    assert set(labels.tolist()) <= {0, 1, 2}
    order = np.argsort(values, kind="stable")
    assert (np.diff(labels[order]) >= 0).all()


def test_the_0_1_name_n_splits_is_gone():
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_splits'"):
        group_kfold(["a", "b", "c"], n_splits=3)  # type: ignore[call-arg]
