"""Tests of checkpoint files: atomic saving, safe and checked loading, the run folder, RNG."""

from __future__ import annotations

import os
import random
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import thyroidseg.models.checkpoint
from thyroidseg._version import __version__
from thyroidseg.models.checkpoint import (
    BEST_CHECKPOINT,
    CHECKPOINT_FORMAT,
    LAST_CHECKPOINT,
    WEIGHTS_CHECKSUM,
    check_best_checkpoint,
    load_checkpoint,
    prepare_run_folder,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    weights_sha256,
)
from thyroidseg.models.unet import UNet


def unet_checkpoint(**extra: Any) -> dict[str, Any]:
    """What a Trainer writes about a small UNet: format, config, weights (and ``extra``)."""
    model = UNet(base_channels=4, depth=2, seed=0)
    config = {
        "model_class": "thyroidseg.model.UNet",
        "model": dict(model.config),
        "data": {"preprocess": "default", "preprocess_options": {"size": [32, 32]}},
    }
    return {"format": CHECKPOINT_FORMAT, "config": config, "model": model.state_dict(), **extra}


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    checkpoint = unet_checkpoint(w=torch.arange(6.0).reshape(2, 3))
    path = save_checkpoint(tmp_path / "run" / "a.pt", checkpoint)
    assert path == tmp_path / "run" / "a.pt"
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["w"], checkpoint["w"])
    assert loaded[WEIGHTS_CHECKSUM] == weights_sha256(checkpoint["model"])
    assert loaded["thyroidseg_version"] == __version__
    assert not list(path.parent.glob(".*.tmp"))


def test_weights_sha256_covers_names_types_shapes_and_values() -> None:
    weights = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.zeros((), dtype=torch.int64)}
    digest = weights_sha256(weights)
    assert len(digest) == 64 and digest == weights_sha256(
        {k: v.clone() for k, v in weights.items()}
    )
    changed = [
        {"a": weights["a"].reshape(3, 2), "b": weights["b"]},
        {"a": weights["a"].double(), "b": weights["b"]},
        {"c": weights["a"], "b": weights["b"]},
        {"b": weights["b"], "a": weights["a"]},
        {"a": weights["a"] + torch.eye(2, 3) * 1e-6, "b": weights["b"]},
        {"a": weights["a"].t().contiguous().t(), "b": weights["b"] + 1},
    ]
    assert all(weights_sha256(other) != digest for other in changed)
    assert weights_sha256({"a": weights["a"].t().contiguous().t(), "b": weights["b"]}) == digest


def tensor_data_offset(path: Path) -> int:
    """Where the bytes of the largest tensor of a torch zip checkpoint start in the file."""
    with zipfile.ZipFile(path) as archive:
        member = max(
            (m for m in archive.infolist() if "/data/" in m.filename), key=lambda m: m.file_size
        )
    with open(path, "rb") as handle:
        handle.seek(member.header_offset)
        header = handle.read(30)
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return member.header_offset + 30 + name_length + extra_length


def test_one_flipped_byte_inside_the_weights_is_an_error(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "a.pt", unet_checkpoint())
    data = bytearray(path.read_bytes())
    offset = tensor_data_offset(path) + 5
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"a.pt: corrupt checkpoint: the CRC-32 of archive member"):
        load_checkpoint(path)


def test_weights_that_differ_from_their_checksum_are_an_error(tmp_path: Path) -> None:
    # A consistent archive (torch.save computes the CRCs) whose weights were changed after
    # the checksum was taken: only the SHA-256 can tell.
    checkpoint = unet_checkpoint()
    checksum = weights_sha256(checkpoint["model"])
    first = next(iter(checkpoint["model"]))
    checkpoint["model"][first] = checkpoint["model"][first] + 1
    torch.save({**checkpoint, WEIGHTS_CHECKSUM: checksum}, tmp_path / "edited.pt")
    with pytest.raises(ValueError, match="edited.pt: corrupt checkpoint: its weights do not"):
        load_checkpoint(tmp_path / "edited.pt")


def test_a_checkpoint_without_checksum_loads_with_a_warning(tmp_path: Path) -> None:
    checkpoint = unet_checkpoint(thyroidseg_version="0.0.9")
    torch.save(checkpoint, tmp_path / "old.pt")  # as thyroidseg 0.1.0 wrote them
    with pytest.warns(UserWarning, match=r"old.pt: the checkpoint stores no weight checksum"):
        loaded = load_checkpoint(tmp_path / "old.pt")
    assert weights_sha256(loaded["model"]) == weights_sha256(checkpoint["model"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("config"), r"has no 'config' entry"),
        (lambda c: c.pop("model"), r"has no 'model' entry"),
        (lambda c: c.update(model=[1, 2]), r"holds a list as 'model', not a dict"),
        (lambda c: c.update(model={"w": 3}), r"'model' entry is not a state_dict"),
        (
            lambda c: c["config"]["model"].update(attention=True),
            r"config\['model'\] names option\(s\) this version does not know: 'attention'",
        ),
        (
            lambda c: c["config"]["data"]["preprocess_options"].update(denoise="nlm"),
            r"config\['data'\]\['preprocess_options'\] names option\(s\).*'denoise'",
        ),
        (lambda c: c["config"].update(model="UNet()"), r"config\['model'\] is a str"),
    ],
)
def test_a_checkpoint_of_another_version_names_file_key_and_version(
    tmp_path: Path, change, message: str
) -> None:
    checkpoint = unet_checkpoint(thyroidseg_version="9.1")
    change(checkpoint)
    torch.save(checkpoint, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=rf"other.pt: .*{message}") as raised:
        load_checkpoint(tmp_path / "other.pt")
    assert f"written by thyroidseg 9.1; this is thyroidseg {__version__}" in str(raised.value)


def test_save_checkpoint_refuses_weights_that_are_not_tensors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'model'\] must be a state_dict of named tensors"):
        save_checkpoint(tmp_path / "a.pt", unet_checkpoint(model={"w": 3}))
    assert not list(tmp_path.iterdir())


def test_another_architecture_is_not_checked_against_the_unet(tmp_path: Path) -> None:
    checkpoint = unet_checkpoint()
    checkpoint["config"].update(model_class="my.Net", model={"attention": True})
    path = save_checkpoint(tmp_path / "mine.pt", checkpoint)
    assert load_checkpoint(path)["config"]["model"] == {"attention": True}


def test_load_checkpoint_refuses_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")

    good = save_checkpoint(tmp_path / "good.pt", {"format": CHECKPOINT_FORMAT, "w": torch.ones(99)})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.pt: corrupt or truncated"):
        load_checkpoint(truncated)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pt: corrupt or truncated"):
        load_checkpoint(empty)
    text = tmp_path / "text.pt"  # not a zip: torch reads it as a legacy pickle and fails
    text.write_text("garbage\n")
    with pytest.raises(ValueError, match=r"text.pt: corrupt or truncated checkpoint \(Unsupported"):
        load_checkpoint(text)

    pickled = tmp_path / "pickled.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "code": Path("x")}, pickled)
    with pytest.raises(ValueError, match="pickled.pt: refusing to load.*pathlib"):
        load_checkpoint(pickled)

    bare = tmp_path / "bare.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), bare)
    with pytest.raises(ValueError, match="bare.pt: not a thyroidseg checkpoint"):
        load_checkpoint(bare)


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(()))  # noqa: NPY002


def test_rng_state_survives_a_checkpoint_file(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "rng.pt", unet_checkpoint(rng=rng_state()))
    expected = draws()
    draws()  # move every generator on
    restore_rng_state(load_checkpoint(path)["rng"])
    assert draws() == expected


def test_prepare_run_folder_removes_only_our_stale_temporary_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    ours = [
        run / ".last.pt.a1b2c3d_.tmp",
        run / ".best.pt.zzzzzzzz.tmp",
        run / ".h.csv.00000000.tmp",
    ]
    theirs = [
        run / ".other.pt.a1b2c3d4.tmp",  # not a name we write
        run / ".last.pt.a1b2.tmp",  # not mkstemp's 8 characters
        run / "last.pt.a1b2c3d4.tmp",  # no leading dot
        run / "notes.txt",
    ]
    for path in ours + theirs:
        path.write_bytes(b"x")
    removed = prepare_run_folder(run, [LAST_CHECKPOINT, BEST_CHECKPOINT, "h.csv"])
    assert removed == sorted(ours)
    assert sorted(run.iterdir()) == sorted(theirs)


def test_prepare_run_folder_creates_the_folder(tmp_path: Path) -> None:
    assert prepare_run_folder(tmp_path / "a" / "b", [LAST_CHECKPOINT]) == []
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())


def test_an_output_path_that_is_a_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"file is a file, not a folder \(the output folder\)"):
        prepare_run_folder(tmp_path / "file", [])
    with pytest.raises(ValueError, match=r"file is a file, not a folder \(a parent of .*run\)"):
        prepare_run_folder(tmp_path / "file" / "run", [])


def test_an_unwritable_output_folder_is_named(tmp_path: Path, monkeypatch) -> None:
    def refuse(*, dir: str, prefix: str, suffix: str):  # what mkstemp raises in such a folder
        raise PermissionError(
            13, "Permission denied", os.path.join(dir, f"{prefix}x1y2z3w4{suffix}")
        )

    monkeypatch.setattr(thyroidseg.models.checkpoint.tempfile, "mkstemp", refuse)
    with pytest.raises(ValueError, match=r"run: cannot write in this output folder") as raised:
        prepare_run_folder(tmp_path / "run", [])
    assert ".tmp" not in str(raised.value) and "Permission denied" in str(raised.value)


PROC = Path("/proc/self")


@pytest.mark.skipif(not PROC.is_dir(), reason="needs Linux's /proc")
def test_a_folder_no_user_can_write_in_is_named() -> None:
    """``/proc/self``: the kernel refuses a new file there to every user, root included
    (a folder made read-only with chmod would not stop root)."""
    with pytest.raises(ValueError, match=r"^/proc/self: cannot write in this output folder \("):
        prepare_run_folder(PROC, [])


def last_and_best(folder: Path, epoch: int, best_epoch: int, best_file_epoch: int | None) -> Path:
    """A ``last.pt`` of ``epoch`` recording ``best_epoch``, and a best.pt of another epoch."""
    for name, at in ((LAST_CHECKPOINT, epoch), (BEST_CHECKPOINT, best_file_epoch)):
        if at is not None:
            checkpoint = unet_checkpoint(epoch=at, best_epoch=best_epoch, best_score=0.5)
            save_checkpoint(folder / name, checkpoint)
    return folder / LAST_CHECKPOINT


@pytest.mark.parametrize(
    ("epoch", "best_epoch", "best_file_epoch"),
    [(3, 2, 2), (3, 2, 4), (3, 0, None)],  # the best epoch; killed between best and last; none
)
def test_a_consistent_best_checkpoint_is_accepted(
    tmp_path: Path, epoch: int, best_epoch: int, best_file_epoch: int | None
) -> None:
    last = last_and_best(tmp_path, epoch, best_epoch, best_file_epoch)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    check_best_checkpoint(last, load_checkpoint(last))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("best_file_epoch", [None, 2])
def test_a_lost_best_checkpoint_is_rewritten_from_last_when_it_holds_the_best(
    tmp_path: Path, best_file_epoch: int | None
) -> None:
    last = last_and_best(tmp_path, 3, 3, best_file_epoch)
    with pytest.warns(UserWarning, match=r"best.pt was (missing|from epoch 2), but .*last.pt"):
        check_best_checkpoint(last, load_checkpoint(last))
    best = load_checkpoint(tmp_path / BEST_CHECKPOINT)
    assert best["epoch"] == best["best_epoch"] == 3
    assert best[WEIGHTS_CHECKSUM] == load_checkpoint(last)[WEIGHTS_CHECKSUM]


@pytest.mark.parametrize("best_file_epoch", [None, 1, 3])
def test_a_best_checkpoint_that_is_lost_for_good_is_an_error(
    tmp_path: Path, best_file_epoch: int | None
) -> None:
    last = last_and_best(tmp_path, 3, 2, best_file_epoch)
    with pytest.raises(ValueError, match=r"best.pt is (missing|from epoch \d).*epoch 2.*is lost"):
        check_best_checkpoint(last, load_checkpoint(last))
