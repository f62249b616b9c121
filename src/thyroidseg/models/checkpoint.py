"""Checkpoint files: the format, atomic saving, safe and checked loading, the run folder.

A checkpoint is a ``dict`` of tensors and plain Python values whose ``"format"`` key is
`CHECKPOINT_FORMAT`, with at least ``"config"`` (how the run was set up) and ``"model"`` (the
state_dict). `thyroidseg.training.Trainer` writes ``best.pt`` on improvement and then
``last.pt`` every epoch through `save_checkpoint` (temporary file + rename, so a crash
leaves the old or the new file, never a truncated one), and reads them back with
`load_checkpoint`, which refuses anything it cannot trust:

* ``torch.load(weights_only=True)``: opening a file cannot run code;
* the zip archive's CRC-32 of every member, and the SHA-256 of the weights that
  `save_checkpoint` stores under ``"model_sha256"`` (`weights_sha256`): a flipped byte is an
  error naming the file, not silently different masks;
* the ``"config"`` and ``"model"`` entries, and the options of a `thyroidseg.models.unet.UNet`
  config and of its preprocessing: a file written by another version of the library is an
  error naming the file, the key and that version.

`prepare_run_folder` checks that a run folder can be written before the first epoch and
removes the temporary files an interrupted run left behind. `rng_state` and
`restore_rng_state` carry the Python, NumPy and PyTorch generators, so a resumed run
continues exactly.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import os
import random
import re
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thyroidseg._checks import PathLike
from thyroidseg._version import __version__
from thyroidseg.io.files import atomic_write_bytes
from thyroidseg.models.ensemble import Ensemble
from thyroidseg.models.registry import model_class
from thyroidseg.models.unet import UNet
from thyroidseg.preprocessing.pipeline import preprocess

__all__ = [
    "BEST_CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "LAST_CHECKPOINT",
    "WEIGHTS_CHECKSUM",
    "check_best_checkpoint",
    "half_precision",
    "load_checkpoint",
    "prepare_run_folder",
    "restore_rng_state",
    "rng_state",
    "save_checkpoint",
    "seed_global_rngs",
    "weights_sha256",
]

CHECKPOINT_FORMAT = "thyroidseg-checkpoint/1"
"""Value of the ``"format"`` key of every checkpoint thyroidseg writes."""

LAST_CHECKPOINT = "last.pt"
"""File name of the checkpoint written after every epoch."""
BEST_CHECKPOINT = "best.pt"
"""File name of the checkpoint of the best validation epoch."""
WEIGHTS_CHECKSUM = "model_sha256"
"""Checkpoint key of the `weights_sha256` of its ``"model"`` state_dict."""

_WRITE_CHECK = "write-check"
"""Name stem of the empty file `prepare_run_folder` creates and removes to test the folder."""


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The SHA-256 (hex) of a state_dict: every key, dtype, shape and byte, in key order.

    For each entry the digest takes ``"<key>|<dtype>|<shape>\\n"`` and then the tensor's
    bytes in memory order (C-contiguous, on the CPU), so equal weights give equal digests on
    any device and a changed value, name, order, type or shape gives another. A float16 or
    bfloat16 tensor is hashed as the float32 tensor it loads into (exactly), so a checkpoint
    stored in half precision (`half_precision`) has the digest of the network loaded from it.

    Examples
    --------
    >>> a = {"w": torch.ones(2, 2)}
    >>> weights_sha256(a) == weights_sha256({"w": torch.ones(2, 2)})
    True
    >>> weights_sha256(a) == weights_sha256({"w": torch.ones(4)})
    False
    """
    digest = hashlib.sha256()
    for key, tensor in state_dict.items():
        values = tensor.detach().cpu().contiguous()
        if values.dtype in (torch.float16, torch.bfloat16):
            values = values.float()
        digest.update(f"{key}|{values.dtype}|{tuple(values.shape)}\n".encode())
        digest.update(values.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def half_precision(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of ``state_dict`` with its float32 tensors in float16: half the bytes on disk.

    Each value $w$ becomes the nearest float16, within a relative error of $2^{-11}$ for
    $2^{-14} \\le |w| \\le 65504$ (smaller magnitudes keep an absolute error under
    $2^{-25}$). ``load_state_dict`` casts them back into a float32 network, which computes with
    the rounded values; other tensors (integer counters, float64) are kept as they are.
    Whether the rounding costs accuracy is for cross-validation to show
    (``benchmarks/ddti_cv.py --half-weights``).

    Raises
    ------
    ValueError
        A finite value above float16's range (65504 in magnitude), which would become
        infinite; the message names the entry.

    Examples
    --------
    >>> half = half_precision({"w": torch.tensor([0.1, -3.0]), "n": torch.tensor(7)})
    >>> half["w"].dtype, half["n"].dtype, half["w"].float().tolist()
    (torch.float16, torch.int64, [0.0999755859375, -3.0])
    """
    half = {}
    for key, tensor in state_dict.items():
        if tensor.dtype == torch.float32:
            rounded = tensor.detach().half()
            if bool((torch.isinf(rounded) & torch.isfinite(tensor)).any()):
                raise ValueError(
                    f"weight {key!r} holds values beyond float16's range (|w| > 65504); "
                    "store this network in float32"
                )
            half[key] = rounded
        else:
            half[key] = tensor
    return half


def save_checkpoint(path: PathLike, checkpoint: Mapping[str, Any]) -> Path:
    """Write ``checkpoint`` (tensors and plain Python values only) atomically to ``path``.

    Adds ``"model_sha256"`` (`weights_sha256` of ``checkpoint["model"]``, when there is one)
    and ``"thyroidseg_version"`` (this version, unless given), which `load_checkpoint`
    uses. The file is serialised in memory, written to a temporary file in the same folder
    and renamed over ``path``: a crash at any moment leaves either the old or the new file.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        ``checkpoint["model"]`` is not a mapping of names to tensors.
    """
    path = Path(path)
    contents = {"thyroidseg_version": __version__, **checkpoint}
    if "model" in contents:
        if not _is_state_dict(contents["model"]):
            raise ValueError(f"{path}: checkpoint['model'] must be a state_dict of named tensors")
        contents[WEIGHTS_CHECKSUM] = weights_sha256(contents["model"])
    buffer = io.BytesIO()
    torch.save(contents, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_checkpoint(path: PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `thyroidseg.training.Trainer`, safely and checked.

    Loads with ``torch.load(weights_only=True)``: only tensors and plain Python values are
    accepted, so a file cannot run code when it is opened. Before that, the CRC-32 of every
    member of the zip archive is verified; after it, the ``"model_sha256"`` written by
    `save_checkpoint` (a checkpoint without one, from thyroidseg 0.1.0, loads with a
    warning), the ``"config"`` and ``"model"`` entries, and, for a `thyroidseg.models.unet.UNet`,
    that every option of ``config["model"]`` and of
    ``config["data"]["preprocess_options"]`` is one this version knows.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is truncated or corrupt (a failed CRC or weight checksum), needs arbitrary
        pickled code (refused), is not a thyroidseg checkpoint, or lacks or misdescribes an
        entry (named with the version of the library that wrote the file). The message
        names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    data = path.read_bytes()  # an unreadable file (permissions...): the OS error names it
    _check_archive(path, data)
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for damaged files; name them all
        message = str(error)
        code = re.search(r"GLOBAL (\S+)", message)  # a class or function the pickle would call
        if code:
            raise ValueError(
                f"{path}: refusing to load: the checkpoint holds pickled Python objects "
                f"({code.group(1)}) that could run arbitrary code. thyroidseg checkpoints hold "
                "only tensors and plain values; load this file yourself with "
                "torch.load(weights_only=False) only if you trust its source"
            ) from error
        detail = re.search(r"WeightsUnpickler error: \s*(.+)", message)  # e.g. bad opcode
        lines = message.strip().splitlines()
        reason = detail.group(1) if detail else lines[0] if lines else type(error).__name__
        raise ValueError(f"{path}: corrupt or truncated checkpoint ({reason})") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint)
        raise ValueError(
            f"{path}: not a thyroidseg checkpoint (format {found!r}, expected "
            f"{CHECKPOINT_FORMAT!r}); a bare state_dict can be loaded with "
            "model.load_state_dict(torch.load(path, weights_only=True))"
        )
    _check_entries(path, checkpoint)
    _check_weights(path, checkpoint)
    return checkpoint


def _check_archive(path: Path, data: bytes) -> None:
    """Verify the CRC-32 of every member of a zip checkpoint (torch's format since 1.6)."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return  # not a zip: torch.load reports it (a legacy file, or no checkpoint at all)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise ValueError(f"{path}: corrupt or truncated checkpoint ({error})") from error
    if damaged is not None:
        raise ValueError(
            f"{path}: corrupt checkpoint: the CRC-32 of archive member {damaged!r} does not "
            "match its contents (the file was damaged after it was written)"
        )


def _written_by(checkpoint: Mapping[str, Any]) -> str:
    version = checkpoint.get("thyroidseg_version")
    wrote = f"thyroidseg {version}" if version else "an unknown thyroidseg version"
    return f"written by {wrote}; this is thyroidseg {__version__}"


def _check_entries(path: Path, checkpoint: Mapping[str, Any]) -> None:
    """``config`` and ``model`` present and well-formed; UNet and preprocess options known."""
    for key in ("config", "model"):
        if not isinstance(checkpoint.get(key), Mapping):
            problem = (
                f"has no {key!r} entry"
                if key not in checkpoint
                else f"holds a {type(checkpoint[key]).__name__} as {key!r}, not a dict"
            )
            raise ValueError(f"{path}: the checkpoint {problem} ({_written_by(checkpoint)})")
    if not _is_state_dict(checkpoint["model"]):
        raise ValueError(
            f"{path}: the checkpoint's 'model' entry is not a state_dict of named tensors "
            f"({_written_by(checkpoint)})"
        )
    config = checkpoint["config"]
    unets = _unet_configs(config.get("model_class"), config.get("model"), "config['model']")
    if not unets:
        return  # another architecture: its user rebuilds it
    unet_options = set(inspect.signature(UNet).parameters)
    data = config.get("data") or {}
    sections = [(where, options, unet_options) for where, options in unets]
    sections.append(
        (
            "config['data']['preprocess_options']",
            data.get("preprocess_options"),
            set(inspect.signature(preprocess).parameters) - {"image"},
        )
    )
    for where, options, allowed in sections:
        if options is None:
            continue
        if not isinstance(options, Mapping):
            raise ValueError(
                f"{path}: {where} is a {type(options).__name__}, not a dict "
                f"({_written_by(checkpoint)})"
            )
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ValueError(
                f"{path}: {where} names option(s) this version does not know: "
                f"{', '.join(map(repr, unknown))} ({_written_by(checkpoint)}: load it with "
                "that version)"
            )


def _unet_configs(name: object, config: object, where: str) -> list[tuple[str, object]]:
    """``(where, config)`` of each `UNet` a stored model is or holds (an ensemble's members)."""
    cls = model_class(name)
    if cls is UNet:
        return [(where, config)]
    members = config.get("members") if cls is Ensemble and isinstance(config, Mapping) else None
    if not isinstance(members, list):
        return []
    found = []
    for index, member in enumerate(members):
        if isinstance(member, Mapping):
            inner = f"{where}['members'][{index}]['model']"
            found += _unet_configs(member.get("model_class"), member.get("model"), inner)
    return found


def _is_state_dict(weights: object) -> bool:
    return isinstance(weights, Mapping) and all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in weights.items()
    )


def _check_weights(path: Path, checkpoint: Mapping[str, Any]) -> None:
    """Compare the weights with their stored SHA-256; warn when there is none (0.1.0 files)."""
    expected = checkpoint.get(WEIGHTS_CHECKSUM)
    if expected is None:
        warnings.warn(
            f"{path}: the checkpoint stores no weight checksum ({_written_by(checkpoint)}), "
            "so damage to its weights cannot be detected; save it again to add one",
            stacklevel=3,
        )
        return
    if weights_sha256(checkpoint["model"]) != expected:
        raise ValueError(
            f"{path}: corrupt checkpoint: its weights do not match the SHA-256 stored when it "
            "was written (the file was damaged or edited after it was saved)"
        )


def prepare_run_folder(folder: PathLike, file_names: Iterable[str]) -> list[Path]:
    """Make sure a run folder can be written, and remove our stale temporary files in it.

    Checks that neither ``folder`` nor a parent of it is a file, creates it, and creates and
    removes an empty file in it, so a folder that cannot be written is reported (naming the
    folder) before any work is done. Then removes the temporary files that
    `thyroidseg.io.files.atomic_write_bytes` names ``.<name>.<8 characters>.tmp`` for each of
    ``file_names`` (left by a run killed while writing ``<name>``); no other file is touched.

    Returns
    -------
    list of pathlib.Path
        The stale temporary files removed.

    Raises
    ------
    ValueError
        ``folder`` or a parent is a file, or the folder cannot be created or written.
    """
    folder = Path(folder)
    for place in (folder, *folder.parents):
        if place.exists():
            if not place.is_dir():
                what = "the output folder" if place == folder else f"a parent of {folder}"
                raise ValueError(f"{place} is a file, not a folder ({what}); choose another")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=f".{_WRITE_CHECK}.", suffix=".tmp")
    except OSError as error:
        raise ValueError(
            f"{folder}: cannot write in this output folder ({error.strerror or error})"
        ) from error
    os.close(handle)
    Path(probe).unlink()
    names = [*file_names, _WRITE_CHECK]
    pattern = re.compile(r"\.(?:" + "|".join(map(re.escape, names)) + r")\.[a-z0-9_]{8}\.tmp")
    stale = sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name) and p.is_file())
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def check_best_checkpoint(last_path: PathLike, last: Mapping[str, Any]) -> None:
    """Check that ``best.pt`` beside ``last_path`` holds the best epoch that ``last`` records.

    ``last`` is the checkpoint read from ``last_path`` (``last.pt``), with ``"epoch"``,
    ``"best_epoch"`` (0: no best yet) and ``"best_score"``. `thyroidseg.training.Trainer`
    writes ``best.pt`` before ``last.pt``, so after a kill ``best.pt`` holds the recorded
    best epoch, or a later epoch than ``last.pt`` (killed between the two writes: the resumed
    run redoes that epoch). Both are accepted. A ``best.pt`` that is missing, unreadable or
    from another epoch (a kill while thyroidseg 0.1.0 wrote ``best.pt`` after ``last.pt``,
    or a deleted file) is rewritten from ``last``, with a warning, when the best epoch is
    ``last``'s own epoch, so its weights are those of the best epoch.

    Raises
    ------
    ValueError
        ``best.pt`` lacks the recorded best epoch and ``last`` does not hold its weights:
        that best model is lost.
    """
    last_path = Path(last_path)
    epoch, best_epoch = int(last["epoch"]), int(last["best_epoch"])
    if best_epoch == 0:
        return
    best = last_path.parent / BEST_CHECKPOINT
    try:
        found = int(load_checkpoint(best)["epoch"]) if best.is_file() else None
        state = "missing" if found is None else f"from epoch {found}"
    except ValueError as error:
        found, state = None, f"unreadable ({error})"
    if found is not None and (found == best_epoch or found > epoch):
        return
    if epoch == best_epoch:
        save_checkpoint(best, last)
        warnings.warn(
            f"{best} was {state}, but {last_path} records its own epoch {epoch} as the best: "
            f"rewrote {best} from it",
            stacklevel=2,
        )
        return
    raise ValueError(
        f"{best} is {state}, but {last_path} records the best validation IoU "
        f"{float(last['best_score']):.4f} at epoch {best_epoch}, whose weights it does not "
        f"hold (it is epoch {epoch}): that best model is lost, and resuming would report a "
        f"{BEST_CHECKPOINT} that does not exist. Start a new run, or train on from these "
        "weights in a new run: model.load_state_dict(load_checkpoint(path)['model'])"
    )


def seed_global_rngs(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators (what `rng_state` records)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (user code may draw from it)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global Python, NumPy, PyTorch and CUDA generator states, as checkpoint values.

    Only tensors, lists and numbers, so `load_checkpoint` can read them back.
    """
    numpy_state: tuple[Any, ...] = tuple(np.random.get_state())  # noqa: NPY002 (on purpose)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "python": list(random.getstate()),
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set the global generators to a `rng_state` (CUDA only where it was saved and exists)."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
