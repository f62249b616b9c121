"""The exported segmenter in ONNX Runtime, without PyTorch: `OnnxSegmenter`.

``thyroidseg export --onnx unet.onnx`` writes the networks (``unet.onnx``, and
``unet-refine.onnx`` for a second stage) and their settings as data (``unet.json``,
`thyroidseg.inference.base.SegmenterBase.describe`). ``OnnxSegmenter.from_export("unet.onnx")``
runs them in ONNX Runtime (``pip install 'thyroidseg[onnx]'``) with everything else of
`thyroidseg.inference.Segmenter`, shared through `thyroidseg.inference.base.SegmenterBase`
and `thyroidseg.inference.refine_base.RefinerBase`: the same preprocessing, flip TTA, crops,
paste-back, post-processing, ``predict_many`` / ``predict_file`` / ``predict_folder`` and
thread policy. Neither this module nor anything it imports loads PyTorch
(docs/deployment.md, where the masks are compared with PyTorch's).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from typing_extensions import Unpack

from thyroidseg._checks import PathLike
from thyroidseg._version import __version__
from thyroidseg.inference.base import SegmenterBase, SegmenterSettings
from thyroidseg.inference.quality import stored_estimator
from thyroidseg.inference.refine_base import RefinerBase
from thyroidseg.io.export_format import cascade_paths, read_description
from thyroidseg.io.provenance import ModelIdentity
from thyroidseg.io.threads import Threads, resolve_threads
from thyroidseg.preprocessing.crops import CropRule

try:  # the optional extra thyroidseg[onnx]; from_export says how to install it
    import onnxruntime  # type: ignore[import-untyped]  # (ONNX Runtime ships no type stubs)
except ImportError:
    onnxruntime = None

__all__ = ["ONNX_DEVICES", "OnnxDevice", "OnnxRefiner", "OnnxSegmenter", "onnx_session"]

OnnxDevice = Literal["auto", "cpu", "cuda"]
ONNX_DEVICES: tuple[str, ...] = get_args(OnnxDevice)
"""Devices of `onnx_session`: ``"auto"`` is CUDA where ONNX Runtime has its CUDA provider."""

_SETTINGS = ("tta", "keep_largest", "min_area", "fill_holes", "min_probability")
"""The inference settings of the description that ``from_export`` may override."""


class OnnxSegmenter(SegmenterBase):
    """Segment whole scanner frames with exported networks in ONNX Runtime.

    ``OnnxSegmenter.from_export("unet.onnx").predict_many(["a.png", "b.png"])`` segments two
    frames with what ``thyroidseg export --onnx unet.onnx`` wrote (docs/deployment.md).

    Parameters
    ----------
    session
        An ``onnxruntime.InferenceSession`` of the whole-frame network (`onnx_session`):
        ``(N, 1, H, W)`` float32 in ``[0, 1]`` in, class scores ``(N, K, H, W)`` out.
    identity
        What `identity` returns, for reports and DICOM Segmentations (`from_export`: the
        graph files' names and SHA-256).
    preprocess_options, **settings
        As for `thyroidseg.inference.base.SegmenterBase`; ``refiner`` is usually an
        `OnnxRefiner`. ``threads`` applies to OpenCV during each call; the sessions get
        theirs when they are made (`onnx_session`).
    """

    def __init__(
        self,
        session: Any,
        preprocess_options: Mapping[str, Any] | None = None,
        *,
        identity: ModelIdentity | None = None,
        **settings: Unpack[SegmenterSettings],
    ) -> None:
        super().__init__(preprocess_options, **settings)
        self.session = session
        self._identity = identity

    @classmethod
    def from_export(
        cls,
        path: PathLike,
        *,
        refine: bool = True,
        device: OnnxDevice = "auto",
        threads: Threads = "auto",
        batch_size: int = 8,
        tta: bool | None = None,
        keep_largest: bool | None = None,
        min_area: int | None = None,
        fill_holes: bool | None = None,
        min_probability: float | None = None,
        quality: bool = True,
    ) -> OnnxSegmenter:
        """The segmenter that ``thyroidseg export --onnx PATH`` wrote.

        Reads ``PATH`` (the whole-frame network), ``STEM.json`` (the settings) and, when the
        description has a second stage and ``refine``, ``STEM-refine.onnx``.

        Parameters
        ----------
        path
            The exported whole-frame network, ``STEM.onnx``.
        refine
            Run the exported second stage when there is one (default ``True``); ``False``:
            the whole-frame network alone.
        device, threads
            Where the networks run and on how many CPU threads (`onnx_session`).
        batch_size
            Frames (and crops) per forward pass (default 8).
        tta, keep_largest, min_area, fill_holes, min_probability
            ``None`` (default): the exported settings; a value overrides them.
        quality
            Rate each nodule with the exported expected-IoU estimator (``"quality"``) when it
            was fitted for the stages that run (default ``True``).

        Raises
        ------
        ImportError
            ONNX Runtime is not installed.
        FileNotFoundError, ValueError
            A file is missing, unreadable or not what it should be; the message names it.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (an exported network)")
        refine_path, json_path = cascade_paths(path)
        description = read_description(json_path)
        given = (tta, keep_largest, min_area, fill_holes, min_probability)
        settings: dict[str, Any] = {
            name: description.get(name) if value is None else value
            for name, value in zip(_SETTINGS, given, strict=True)
        }
        count = resolve_threads(threads)  # once, for both sessions and OpenCV
        stage2 = description.get("refine") if refine else None
        session = onnx_session(path, device=device, threads=count)
        second = onnx_session(refine_path, device=device, threads=count) if stage2 else None
        try:
            refiner = (
                OnnxRefiner.from_description(second, stage2, batch_size=batch_size)
                if stage2 is not None
                else None
            )
            stages = 1 if refiner is None else 2
            estimator = stored_estimator(description.get("quality"), stages, "quality")
            return cls(
                session,
                description.get("preprocess_options"),
                identity=_file_identity(path, refine_path if second is not None else None),
                batch_size=batch_size,
                refiner=refiner,
                threads=count,
                quality=estimator if quality else None,
                **settings,
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"{json_path}: {error}") from error

    def identity(self) -> ModelIdentity:
        """The model's identity: ``identity=`` as given, from `from_export` the graph files'.

        Raises
        ------
        ValueError
            None was given.
        """
        if self._identity is None:
            raise ValueError(
                "this OnnxSegmenter was built without identity=...: the report and DICOM "
                "Segmentations need one (OnnxSegmenter.from_export sets it)"
            )
        return self._identity

    def _softmax(self, batch: np.ndarray) -> np.ndarray:
        return _softmax(_run(self.session, batch))


class OnnxRefiner(RefinerBase):
    """The second stage with an exported refine network in ONNX Runtime.

    Parameters
    ----------
    session
        An ``onnxruntime.InferenceSession`` of the refine network (`onnx_session`).
    rule, preprocess_options, whole_weight, batch_size
        As for `thyroidseg.inference.refine_base.RefinerBase`.
    """

    def __init__(
        self,
        session: Any,
        rule: CropRule,
        preprocess_options: Mapping[str, Any] | None = None,
        *,
        whole_weight: float,
        batch_size: int = 8,
    ) -> None:
        super().__init__(rule, preprocess_options, whole_weight=whole_weight, batch_size=batch_size)
        self.session = session

    @classmethod
    def from_description(
        cls, session: Any, description: Mapping[str, Any], *, batch_size: int = 8
    ) -> OnnxRefiner:
        """The refiner that ``description`` (`RefinerBase.describe`) sets up around
        ``session``.

        Raises
        ------
        ValueError, TypeError
            A setting is missing or wrong.
        """
        if not isinstance(description, Mapping) or "whole_weight" not in description:
            raise ValueError(f"'refine' must hold crops and whole_weight, got {description!r}")
        return cls(
            session,
            CropRule.from_dict(description.get("crops", {})),
            description.get("preprocess_options"),
            whole_weight=description["whole_weight"],
            batch_size=batch_size,
        )

    def _softmax(self, batch: np.ndarray) -> np.ndarray:
        return _softmax(_run(self.session, batch))


def onnx_session(path: PathLike, *, device: OnnxDevice = "auto", threads: Threads = "auto") -> Any:
    """An ``onnxruntime.InferenceSession`` of the graph at ``path``.

    Parameters
    ----------
    path
        An ONNX file.
    device
        ``"cpu"``, ``"cuda"`` (ONNX Runtime's CUDA provider, ``onnxruntime-gpu``) or
        ``"auto"`` (default: CUDA where that provider is installed, else the CPU).
    threads
        Threads of the session's operators (``intra_op_num_threads``): a count, ``"auto"``
        (default: `thyroidseg.runtime.free_cores` now) or ``None`` (ONNX Runtime's
        default, one per physical core). Per session: nothing process-wide changes.

    Raises
    ------
    ImportError
        ONNX Runtime is not installed.
    FileNotFoundError, ValueError
        No file at ``path``, a file ONNX Runtime cannot load, or an unknown ``device``.
    """
    if onnxruntime is None:
        raise ImportError(
            "running an exported model needs ONNX Runtime: pip install 'thyroidseg[onnx]'"
        )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (an exported network)")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = _count(threads)
    options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(
            str(path), options, providers=_providers(device, onnxruntime.get_available_providers())
        )
    except Exception as error:  # ONNX Runtime's errors derive from Exception alone
        raise ValueError(f"{path}: ONNX Runtime cannot load it ({error})") from error


def _count(threads: Threads) -> int:
    """``intra_op_num_threads`` for ``threads`` (0: ONNX Runtime's default)."""
    count = resolve_threads(threads)
    return 0 if count is None else count


def _providers(device: str, available: Sequence[str]) -> list[str]:
    """ONNX Runtime's execution providers for ``device``, best first.

    >>> _providers("auto", ["CPUExecutionProvider"])
    ['CPUExecutionProvider']
    >>> _providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    ['CUDAExecutionProvider', 'CPUExecutionProvider']
    """
    if device not in ONNX_DEVICES:
        raise ValueError(f"device must be one of {ONNX_DEVICES}, got {device!r}")
    cuda = "CUDAExecutionProvider"
    if device == "cuda" and cuda not in available:
        raise ValueError(
            "device 'cuda': this ONNX Runtime has no CUDA provider (pip install onnxruntime-gpu)"
        )
    use_cuda = device == "cuda" or (device == "auto" and cuda in available)
    return [cuda, "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]


def _run(session: Any, batch: np.ndarray) -> np.ndarray:
    (scores,) = session.run(None, {session.get_inputs()[0].name: batch})
    return np.asarray(scores, np.float32)


def _softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax over the class axis 1: ``exp(s - max) / sum exp(s - max)``."""
    exponentials = np.exp(scores - scores.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def _file_identity(path: Path, refine_path: Path | None) -> ModelIdentity:
    """The `ModelIdentity` of exported graph files: ``STEM.onnx`` (ONNX Runtime), this
    thyroidseg's version and the SHA-256 of each file's bytes."""
    refine_sha = None if refine_path is None else _sha256(refine_path)
    return ModelIdentity(f"{path.name} (ONNX Runtime)", __version__, _sha256(path), refine_sha)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
