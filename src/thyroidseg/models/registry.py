"""Stable names for what a checkpoint records: the model class (and, for runs, the batch hook).

A checkpoint names the class that rebuilds its network and the ``prepare_batch`` hook of its
run by a registered name (``"unet"``; ``"default"`` in `thyroidseg.training.batching.BATCH_HOOKS`,
kept there so that inference imports no training code), not by import path, so modules can move
without breaking saved runs or the shipped weights: the way segmentation_models.pytorch
resolves a stored class name and nnU-Net stores ``trainer_name``. The class is rebuilt from
the stored constructor arguments (``config["model"]``).

Checkpoints written by 0.1.x name them by import path; `canonical_name` reads those as the
registered names. `build_model` rebuilds a stored network, an ensemble of registered
networks too (``"ensemble"``: one checkpoint holding several members, as the shipped
whole-frame stage does; `ensemble_config`).

Examples
--------
>>> from thyroidseg.models.unet import UNet
>>> model_name(UNet(base_channels=4, depth=2))
'unet'
>>> model_class("thyroidseg.model.UNet") is UNet  # a 0.1.x checkpoint
True
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from thyroidseg.models.ensemble import Ensemble
from thyroidseg.models.unet import UNet

__all__ = [
    "LEGACY_NAMES",
    "MODELS",
    "build_model",
    "canonical_name",
    "ensemble_config",
    "model_class",
    "model_config",
    "model_name",
]

MODELS: dict[str, type[nn.Module]] = {"unet": UNet, "ensemble": Ensemble}
"""Registered name -> the class a checkpoint's ``config["model"]`` rebuilds (`build_model`)."""

LEGACY_NAMES: dict[str, str] = {
    "thyroidseg.model.UNet": "unet",
    "thyroidseg.batching.default_prepare_batch": "default",
}
"""How 0.1.x checkpoints named them (import paths) -> the registered names."""


def canonical_name(name: object) -> object:
    """The registered name for a 0.1.x import path; any other value unchanged."""
    return LEGACY_NAMES.get(name, name) if isinstance(name, str) else name


def model_name(model: nn.Module) -> str:
    """The registered name of ``model``'s class, else its ``module.QualifiedName``."""
    for name, cls in MODELS.items():
        if type(model) is cls:
            return name
    return f"{type(model).__module__}.{type(model).__qualname__}"


def model_class(name: object) -> type[nn.Module] | None:
    """The registered class a stored name (or 0.1.x import path) stands for; ``None`` if none."""
    canonical = canonical_name(name)
    return MODELS.get(canonical) if isinstance(canonical, str) else None


def model_config(name: object, config: object) -> object:
    """A stored model ``config`` with the constructor's defaults for the keys it lacks.

    A checkpoint written before an option existed (e.g. ``activation``, new in 0.2) built
    the network that option's default builds, so the two configs compare equal.
    """
    cls = model_class(name)
    if cls is None or not isinstance(config, Mapping):
        return config
    defaults = {
        key: parameter.default
        for key, parameter in inspect.signature(cls).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    return {**defaults, **config}


def ensemble_config(members: Sequence[tuple[object, Mapping[str, Any]]]) -> dict[str, Any]:
    """The ``config["model"]`` of an ``"ensemble"`` checkpoint from its members' stored
    ``(model_class, config["model"])`` pairs, in the order of the state_dict's
    ``members.<i>.`` prefixes: ``{"members": [{"model_class": ..., "model": ...}, ...]}``."""
    return {
        "members": [
            {"model_class": canonical_name(name), "model": dict(config)} for name, config in members
        ]
    }


def build_model(name: object, config: object) -> nn.Module:
    """The untrained network a stored ``model_class`` name and ``config["model"]`` describe.

    A registered class is called with the config as keyword arguments; an ``"ensemble"``
    (`ensemble_config`) becomes an `Ensemble` of its members, each built the same way, so
    that ``load_state_dict`` of the stored ``members.<i>.`` weights fits it.

    Examples
    --------
    >>> member = {"base_channels": 4, "depth": 2}
    >>> network = build_model("ensemble", ensemble_config([("unet", member)] * 2))
    >>> type(network).__name__, len(network.members)
    ('Ensemble', 2)

    Raises
    ------
    ValueError
        An unregistered name, or a config that is not a mapping (an ensemble's: without a
        non-empty ``"members"`` list of ``{"model_class", "model"}`` mappings).
    """
    cls = model_class(name)
    if cls is None or not isinstance(config, Mapping):
        raise ValueError(
            f"cannot rebuild a {name!r} model from {type(config).__name__} {config!r}: "
            f"the registered models are {', '.join(MODELS)}, each with a dict of arguments"
        )
    if cls is not Ensemble:
        return cls(**config)
    members = config.get("members")
    if not isinstance(members, list) or not members:
        raise ValueError(f"an ensemble's config needs a non-empty 'members' list, got {members!r}")
    for member in members:
        if not isinstance(member, Mapping) or set(member) != {"model_class", "model"}:
            raise ValueError(
                f"each ensemble member is a {{'model_class', 'model'}} dict, got {member!r}"
            )
    return Ensemble([build_model(m["model_class"], m["model"]) for m in members])
