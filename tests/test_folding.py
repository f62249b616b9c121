"""Batch normalisation folded into convolutions: same function, original untouched, never stale."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from thyroidseg import Segmenter, UNet
from thyroidseg.models.folding import FoldedNetwork, fold_batch_norm


def _trained_statistics(model: nn.Module, seed: int) -> nn.Module:
    """``model`` in eval mode with running statistics and affine parameters away from 0/1."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(torch.randn(channels, generator=generator))
            module.running_var.copy_(torch.rand(channels, generator=generator) * 3 + 0.1)
            module.weight.data.copy_(torch.randn(channels, generator=generator))
            module.bias.data.copy_(torch.randn(channels, generator=generator))
    return model.eval()


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    base_channels=st.sampled_from([4, 8]),
    residual=st.booleans(),
    activation=st.sampled_from(["relu", "prelu"]),
    stem_stride=st.sampled_from([1, 2]),
)
def test_folded_network_computes_the_same_function(
    seed: int, base_channels: int, residual: bool, activation: str, stem_stride: int
) -> None:
    model = UNet(
        base_channels=base_channels,
        depth=2,
        residual=residual,
        activation=activation,  # type: ignore[arg-type]
        stem_stride=stem_stride,
        seed=seed,
    )
    model = _trained_statistics(model, seed)
    folded = fold_batch_norm(model)
    x = torch.rand(2, 1, 24, 20, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


def test_the_original_keeps_its_normalisation_and_weights() -> None:
    model = _trained_statistics(UNet(base_channels=4, depth=2, seed=0), 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batch_norm(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_other_normalisations_are_left_as_they_are() -> None:
    model = UNet(base_channels=8, depth=2, norm="group", seed=0).eval()
    folded = fold_batch_norm(model)
    assert sum(isinstance(m, nn.GroupNorm) for m in folded.modules()) == sum(
        isinstance(m, nn.GroupNorm) for m in model.modules()
    )
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x))


def test_a_model_in_training_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="eval"):
        fold_batch_norm(UNet(base_channels=4, depth=2, seed=0))


def test_folded_network_folds_again_when_the_weights_change() -> None:
    model = _trained_statistics(UNet(base_channels=4, depth=2, seed=0), 2)
    folded = FoldedNetwork(model)
    first = folded.current()
    assert folded.current() is first  # unchanged weights: no new copy
    other = _trained_statistics(UNet(base_channels=4, depth=2, seed=5), 3)
    model.load_state_dict(other.state_dict())
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(folded.current()(x), other(x), atol=1e-4, rtol=1e-4)
    model.train()
    assert folded.current() is model


def test_segmenter_predicts_with_weights_loaded_after_it_was_built() -> None:
    rng = np.random.default_rng(0)
    frame = (rng.random((40, 56)) * 255).astype(np.uint8)
    options = {"size": (32, 32)}
    segmenter = Segmenter(UNet(base_channels=4, depth=2, seed=0), options, device="cpu", amp="off")
    before = segmenter.predict(frame, return_probabilities=True)[1]
    other = _trained_statistics(UNet(base_channels=4, depth=2, seed=9), 4)
    segmenter.model.load_state_dict(other.state_dict())
    expected = Segmenter(other, options, device="cpu", amp="off")
    after = segmenter.predict(frame, return_probabilities=True)[1]
    reference = expected.predict(frame, return_probabilities=True)[1]
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, reference, atol=1e-5)


def test_the_network_itself_runs_while_it_has_a_forward_hook() -> None:
    model = _trained_statistics(UNet(base_channels=4, depth=2, seed=0), 6)
    folded = FoldedNetwork(model)
    assert folded.current() is not model
    calls: list[int] = []
    handle = model.encoder[0].register_forward_hook(lambda *_: calls.append(1))
    assert folded.current() is model
    handle.remove()
    assert folded.current() is not model
