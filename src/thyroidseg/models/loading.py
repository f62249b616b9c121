"""Networks from checkpoint files: one, several as an ensemble, or the model that ships.

`load_network` reads checkpoints written by `thyroidseg.training.Trainer` with the safe
loader `thyroidseg.models.checkpoint.load_checkpoint` (``torch.load(weights_only=True)``) and
returns what a `thyroidseg.inference.Segmenter` needs: the network (one
`thyroidseg.models.unet.UNet`, or one `thyroidseg.models.ensemble.Ensemble` of several), the
`thyroidseg.preprocessing.preprocess` options the frames were prepared with in training,
and the inference settings (TTA and post-processing). `shipped_weights` is where the model
inside the package lives; ``Segmenter.pretrained()`` loads it through `load_network`.

A checkpoint may recommend inference settings in ``config["inference"]``, a mapping with
any of the keys of `INFERENCE_DEFAULTS`; a shipped model stores the settings that
cross-validation chose there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import torch
from torch import nn

from thyroidseg._checks import PathLike, check_int, check_probability
from thyroidseg.models.checkpoint import load_checkpoint
from thyroidseg.models.ensemble import Ensemble
from thyroidseg.models.registry import MODELS, build_model, model_class
from thyroidseg.models.unet import UNet
from thyroidseg.preprocessing.crops import CropRule

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "INFERENCE_DEFAULTS",
    "SHIPPED_REFINE_WEIGHTS",
    "SHIPPED_WEIGHTS",
    "StoredModel",
    "load_network",
    "shipped_weights",
]

SHIPPED_WEIGHTS = "thyroidseg-unet-ddti.pt"
"""File name of the shipped model, in the package's ``weights`` folder (`shipped_weights`)."""

SHIPPED_REFINE_WEIGHTS = "thyroidseg-unet-ddti-refine.pt"
"""File name of the shipped model's second (refine) stage, beside `SHIPPED_WEIGHTS`."""

INFERENCE_DEFAULTS: dict[str, Any] = {
    "tta": False,
    "fill_holes": False,
    "min_area": 0,
    "keep_largest": False,
    "min_probability": 0.0,
}
"""Inference settings when neither the caller nor the checkpoint (``config["inference"]``)
sets them: no TTA, no post-processing beyond clearing pixels outside the views."""


class StoredModel(NamedTuple):
    """What `load_network` read from one or several checkpoints."""

    network: nn.Module
    """The `thyroidseg.models.unet.UNet` (or given model), or an `Ensemble` of several."""
    preprocess_options: dict[str, Any]
    """Keyword arguments of `thyroidseg.preprocessing.preprocess`, as in training."""
    inference: dict[str, Any]
    """One value for each key of `INFERENCE_DEFAULTS`."""
    crops: dict[str, Any] | None = None
    """A refine network's crop rule (``config["data"]["crops"]``,
    `thyroidseg.preprocessing.crops.CropRule` settings); ``None`` for a whole-frame network."""
    quality: dict[str, Any] | None = None
    """The expected-IoU estimator of a single checkpoint (``config["quality"]``,
    `thyroidseg.inference.quality.ExpectedIoU.to_dict`); ``None`` without one or for an
    ensemble."""


def shipped_weights(stage: Literal["whole", "refine"] = "whole") -> Traversable:
    """Where the shipped model lives: ``thyroidseg/weights/<SHIPPED_WEIGHTS>`` in the package.

    ``stage="refine"``: its second stage, `SHIPPED_REFINE_WEIGHTS`. Package data read through
    ``importlib.resources``, so it is found in an installed wheel, an editable install or a
    source checkout alike. The location is returned whether or not the file exists;
    ``Segmenter.pretrained()`` says clearly when it does not.
    """
    if stage not in ("whole", "refine"):
        raise ValueError(f"stage must be 'whole' or 'refine', got {stage!r}")
    name = SHIPPED_WEIGHTS if stage == "whole" else SHIPPED_REFINE_WEIGHTS
    return resources.files("thyroidseg") / "weights" / name


def load_network(
    path: PathLike | Sequence[PathLike],
    *,
    model: nn.Module | None = None,
    settings: Mapping[str, Any] | None = None,
) -> StoredModel:
    """Rebuild the network, preprocessing and inference settings of checkpoints.

    A `thyroidseg.models.unet.UNet` is rebuilt from each checkpoint's ``config``; for any other
    architecture pass an instance as ``model`` (its weights are replaced). The preprocessing
    comes from ``config["data"]`` (the training dataset's
    `thyroidseg.data.ThyroidDataset.config`): `preprocess` with the stored
    ``"preprocess_options"``, or with its defaults when the training data described no
    preprocessing at all. Several checkpoints become one `Ensemble` (the mean of the
    members' probabilities) and must share one preprocessing.

    Each inference setting is the one given in ``settings`` (when not ``None``), else the
    checkpoints' ``config["inference"]`` value (the members of an ensemble must agree),
    else `INFERENCE_DEFAULTS`.

    Parameters
    ----------
    path
        One checkpoint file, or a sequence of them for an ensemble.
    model
        The network to load one checkpoint of another architecture into.
    settings
        Inference settings chosen by the caller (keys of `INFERENCE_DEFAULTS`; ``None``
        values and missing keys take the checkpoint's).

    Raises
    ------
    FileNotFoundError, ValueError
        As `thyroidseg.models.checkpoint.load_checkpoint`; also a model that cannot be rebuilt or
        whose weights do not fit ``model``, frames prepared otherwise than by `preprocess`
        (``preprocess=None`` or a custom callable: build
        ``Segmenter(model, preprocess_options)`` yourself then), unknown keys in
        ``config["inference"]`` or ``settings``, ``model`` given with several checkpoints, or
        ensemble members that differ in preprocessing or in a setting not given, NaN or
        infinite weights, or a stored frame size the network cannot take. Each message
        names the file.
    """
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    if not paths:
        raise ValueError("no checkpoint given")
    if model is not None and len(paths) > 1:
        raise ValueError(
            "model=... is loaded from one checkpoint; for an ensemble of other "
            "architectures build Segmenter(Ensemble([...]), preprocess_options)"
        )
    given = {name: value for name, value in (settings or {}).items() if value is not None}
    _check_setting_names("settings", given)
    members = [_load_member(p, model) for p in paths]
    options, crops = members[0][1], members[0][3]
    for other, (_, other_options, _, other_crops, _) in zip(paths[1:], members[1:], strict=True):
        if other_options != options:
            raise ValueError(
                f"{other}: prepares frames with {other_options}, but {paths[0]} with "
                f"{options}; the models of an ensemble must share one preprocessing"
            )
        if other_crops != crops:
            raise ValueError(
                f"{other}: crops {other_crops}, but {paths[0]} {crops}; the models of an "
                "ensemble must share one crop rule (and stage)"
            )
    inference = {}
    for name, default in INFERENCE_DEFAULTS.items():
        stored = {
            str(p): member[2].get(name, default) for p, member in zip(paths, members, strict=True)
        }
        if name not in given and len({repr(value) for value in stored.values()}) > 1:
            shown = ", ".join(f"{p}: {value!r}" for p, value in stored.items())
            raise ValueError(
                f"the ensemble's checkpoints disagree on {name} ({shown}); choose it ({name}=...)"
            )
        inference[name] = given.get(name, next(iter(stored.values())))
    network = members[0][0] if len(members) == 1 else Ensemble([m[0] for m in members])
    quality = members[0][4] if len(members) == 1 else None
    return StoredModel(network, options, inference, crops, quality)


def _load_member(
    path: PathLike, model: nn.Module | None
) -> tuple[nn.Module, dict[str, Any], dict[str, Any], dict[str, Any] | None, Any]:
    """The network, preprocessing options, stored inference settings, crop rule and
    expected-IoU estimator (``config["quality"]``) of one checkpoint."""
    checkpoint = load_checkpoint(path)
    config = checkpoint["config"]
    if model is None:
        if model_class(config.get("model_class")) is None:
            raise ValueError(
                f"{path}: holds a {config.get('model_class')!r} model; only the registered "
                f"models ({', '.join(MODELS)}) are rebuilt automatically, pass model=... for "
                "others"
            )
        if not config.get("model"):
            raise ValueError(
                f"{path}: holds a {config['model_class']!r} model stored without its "
                "constructor arguments (config['model'] is empty, as for a network with no "
                "`config` attribute, such as an Ensemble trained directly); pass model=..."
            )
        try:
            model = build_model(config["model_class"], config["model"])
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: config['model'] cannot be rebuilt: {error}") from None
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise ValueError(f"{path}: weights do not fit the model: {error}") from error
    _check_finite_weights(path, checkpoint["model"])
    stored = dict(config.get("inference") or {})
    _check_setting_names(f"{path}: config['inference']", stored)
    options = _training_preprocess_options(config.get("data", {}), path)
    crops = config.get("data", {}).get("crops")
    if crops is None:
        _check_size_fits(path, model, options)
    else:
        try:
            CropRule.from_dict(crops)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: config['data']['crops']: {error}") from None
    return model, options, stored, crops, config.get("quality")


def _check_finite_weights(path: PathLike, weights: Mapping[str, torch.Tensor]) -> None:
    """A weight that is NaN or infinite makes every prediction meaningless: refuse it."""
    for key, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"{path}: weight {key!r} holds {bad} NaN or infinite value(s); the checkpoint "
                "cannot segment anything (was it saved after training diverged?)"
            )


def _check_size_fits(path: PathLike, model: nn.Module, options: Mapping[str, Any]) -> None:
    """The stored network frame size must be one the `UNet` (each of an `Ensemble`'s) can
    take whole."""
    if isinstance(model, Ensemble):
        for member in model.members:
            _check_size_fits(path, member, options)
    if not isinstance(model, UNet) or "size" not in options:
        return
    size = tuple(options["size"])
    where = f"{path}: config['data']['preprocess_options']['size'] = {list(size)}"
    if model.same_padding:
        if min(size) < model.size_multiple:
            raise ValueError(
                f"{where} is smaller than the network's {model.size_multiple}-pixel "
                "down-sampling step: the frame would be mostly padding"
            )
        return
    try:
        model.output_size(int(size[0]), int(size[1]))
    except ValueError as error:
        raise ValueError(f"{where} does not fit this valid-mode network: {error}") from None


def _check_setting_names(where: str, settings: Mapping[str, Any]) -> None:
    """Known names only, and values of the default's kind (a flag, an integer >= 0, or a
    probability in [0, 1])."""
    for name, value in settings.items():
        default = INFERENCE_DEFAULTS.get(name)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"{where}: {name} must be True or False, got {value!r}")
        if type(default) is int:
            try:
                check_int(name, value, 0)
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
        if type(default) is float:
            try:
                check_probability(name, value)
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
    unknown = sorted(set(settings) - set(INFERENCE_DEFAULTS))
    if unknown:
        raise ValueError(
            f"{where}: unknown inference settings {unknown} "
            f"(known: {', '.join(INFERENCE_DEFAULTS)})"
        )


def _training_preprocess_options(data: Mapping[str, Any], path: PathLike) -> dict[str, Any]:
    """The `preprocess` keyword arguments a checkpoint's training data was prepared with."""
    method = data.get("preprocess")
    if method is None:
        return {}
    if method == "default":
        return dict(data.get("preprocess_options", {}))
    raise ValueError(
        f"{path}: the model was trained on frames prepared by {method!r}, not by "
        "thyroidseg's preprocess(); rebuild the model and pass matching options: "
        "Segmenter(model, preprocess_options)"
    )
