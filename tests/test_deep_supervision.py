"""Tests of deep supervision: `UNet(deep_supervision=S)`'s training output, the loss wrapper
`thyroidseg.training.deep_supervision.DeepSupervisionLoss`, and runs that use them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from thyroidseg.cli import main
from thyroidseg.data.synthetic import write_synthetic_dataset
from thyroidseg.inference import Segmenter
from thyroidseg.models.checkpoint import LAST_CHECKPOINT, load_checkpoint
from thyroidseg.models.registry import model_config
from thyroidseg.models.unet import UNet
from thyroidseg.training.deep_supervision import DeepSupervisionLoss, with_deep_supervision
from thyroidseg.training.losses import WeightedCrossEntropyLoss, make_loss
from thyroidseg.training.workflows import train_folder

TINY = {"base_channels": 4, "depth": 3, "seed": 0}


def batch(height: int = 29, width: int = 37) -> torch.Tensor:
    return torch.randn(2, 1, height, width, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("stem_stride", [1, 2])
@pytest.mark.parametrize("levels", [1, 2])
def test_training_mode_stacks_the_levels_and_eval_mode_returns_the_logits_alone(
    stem_stride: int, levels: int
) -> None:
    model = UNet(**TINY, stem_stride=stem_stride, deep_supervision=levels)
    plain = UNet(**TINY, stem_stride=stem_stride)  # same seed: the same main path
    out = model(batch())
    assert out.shape == (2, 1 + levels, 2, 29, 37)
    assert torch.equal(out[:, 0], plain(batch()))  # index 0: the usual logits
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.aux_heads.parameters())
    model.eval(), plain.eval()
    assert torch.equal(model(batch()), plain(batch()))


def test_the_heads_sit_on_the_decoder_levels_below_the_last_with_a_half_resolution_stem() -> None:
    model = UNet(**TINY, stem_stride=2, deep_supervision=2)
    seen: list[torch.Tensor] = []
    for up in model.decoder:  # outputs at 1/8, 1/4, 1/2 of the padded 32 x 48 input
        up.register_forward_hook(lambda _m, _i, output: seen.append(output))
    out = model(batch())
    assert [tuple(level.shape[-2:]) for level in seen] == [(4, 6), (8, 12), (16, 24)]
    for index, (head, features) in enumerate(zip(model.aux_heads.heads, seen[-2::-1], strict=True)):
        expected = F.interpolate(head(features), size=(32, 48), mode="bilinear")
        torch.testing.assert_close(out[:, 1 + index], expected[..., :29, :37])


def test_heads_have_no_state_when_off_and_old_configs_rebuild_without_them() -> None:
    assert not any("aux" in key for key in UNet(**TINY).state_dict())
    config = UNet(**TINY, deep_supervision=2).config
    assert config["deep_supervision"] == 2
    old = {key: value for key, value in config.items() if key != "deep_supervision"}
    assert model_config("unet", old)["deep_supervision"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"deep_supervision": -1}, "deep_supervision must be an integer >= 0"),
        ({"deep_supervision": True}, "deep_supervision must be an integer >= 0"),
        ({"deep_supervision": 1.0}, "deep_supervision must be an integer >= 0"),
        ({"deep_supervision": 3}, "at most depth - 1 = 2"),
        ({"deep_supervision": 1, "padding": "valid", "downsample": "maxpool"}, 'padding="same"'),
    ],
)
def test_bad_deep_supervision_is_explained(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UNet(**{**TINY, **kwargs})


def levels_and_target() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 2, 8, 8, generator=generator)
    target = torch.randint(0, 2, (2, 8, 8), generator=generator)
    target[0, 0] = -100  # ignored pixels pass to every level
    return logits, target


def test_the_default_weights_are_nnunets_halving_normalised_to_one() -> None:
    loss = DeepSupervisionLoss(make_loss("dice_ce"))
    assert loss.level_weights(1) == [1.0]
    assert loss.level_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    logits, target = levels_and_target()
    terms = [loss.loss(logits[:, i], target) for i in range(3)]
    assert len({round(float(t), 6) for t in terms}) == 3  # the levels differ
    expected = (4 * terms[0] + 2 * terms[1] + terms[2]) / 7
    torch.testing.assert_close(loss(logits, target), expected)


def test_4d_logits_and_keyword_arguments_reach_the_wrapped_loss_unchanged() -> None:
    inner = WeightedCrossEntropyLoss()
    loss = DeepSupervisionLoss(inner, weights=[1.0, 0.0, 2.0])
    logits, target = levels_and_target()
    weight_map = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(loss(logits[:, 1], target, weight_map=weight_map),
                       inner(logits[:, 1], target, weight_map=weight_map))  # fmt: skip
    expected = inner(logits[:, 0], target, weight_map) + 2 * inner(logits[:, 2], target, weight_map)
    torch.testing.assert_close(loss(logits, target, weight_map=weight_map), expected)
    assert loss.ignore_index == inner.ignore_index


@pytest.mark.parametrize(
    ("weights", "message"),
    [([1.0, -1.0], "not negative"), ([0.0, 0.0], "not all 0"), ([], "not all 0"),
     ([1.0, float("nan")], "finite")],
)  # fmt: skip
def test_bad_weights_are_refused(weights: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeepSupervisionLoss(make_loss("ce"), weights=weights)


def test_weights_must_match_the_levels_and_a_loss_is_wrapped_once() -> None:
    logits, target = levels_and_target()
    with pytest.raises(ValueError, match="2 weights for logits with 3 levels"):
        DeepSupervisionLoss(make_loss("ce"), weights=[1.0, 1.0])(logits, target)
    with pytest.raises(ValueError, match="already a DeepSupervisionLoss"):
        DeepSupervisionLoss(DeepSupervisionLoss(make_loss("ce")))


def test_a_plain_loss_given_the_stacked_levels_says_to_wrap_it() -> None:
    logits, target = levels_and_target()
    with pytest.raises(ValueError, match="wrap the loss in .*DeepSupervisionLoss"):
        make_loss("dice_ce")(logits, target)


def test_the_loss_is_wrapped_exactly_when_the_model_supervises_levels() -> None:
    plain = make_loss("dice_ce")
    assert with_deep_supervision(plain, UNet(**TINY)) is plain
    wrapped = with_deep_supervision(plain, UNet(**TINY, deep_supervision=1))
    assert isinstance(wrapped, DeepSupervisionLoss) and wrapped.loss is plain
    assert with_deep_supervision(wrapped, UNet(**TINY, deep_supervision=1)) is wrapped


def test_a_deep_supervision_run_trains_saves_and_predicts_full_size_logits(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "data", 6, size=(48, 64), seed=0)
    run = tmp_path / "run"
    argv = ["train", str(data), str(run), "--folds", "2", "--size", "32", "32", "--quiet"]
    argv += ["--batch-size", "4", "--base-channels", "4", "--amp", "off", "--epochs", "1"]
    assert main([*argv, "--deep-supervision", "2"]) == 0
    checkpoint = load_checkpoint(run / LAST_CHECKPOINT)
    assert checkpoint["config"]["model"]["deep_supervision"] == 2
    assert "DeepSupervisionLoss" in checkpoint["config"]["loss"]
    assert np.isfinite(checkpoint["history"][0]["train_loss"])
    segmenter = Segmenter.from_checkpoint(run / LAST_CHECKPOINT, device="cpu", amp="off")
    assert segmenter.model(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_train_folder_wraps_the_loss_for_a_model_built_with_deep_supervision(
    tmp_path: Path,
) -> None:
    data = write_synthetic_dataset(tmp_path / "data", 6, size=(48, 64), seed=0)
    model = UNet(base_channels=4, stem_stride=2, deep_supervision=1, seed=0)  # ddti_cv's --unet
    trainer = train_folder(
        data, tmp_path / "run", folds=2, size=(32, 32), model=model, epochs=1, batch_size=4,
        amp="off", progress=False,
    )  # fmt: skip
    assert isinstance(trainer.loss_fn, DeepSupervisionLoss)
    assert np.isfinite(trainer.history[0]["train_loss"])
