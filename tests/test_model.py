"""Tests for thyroidseg.models.unet: shapes for any size, valid mode, init, config, compile."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from thyroidseg.models.unet import UNet, valid_output_size

TINY = {"base_channels": 4, "seed": 0}
"""A narrow network: same code paths, fast tests."""


@pytest.mark.parametrize(
    ("in_channels", "height", "width"),
    [(1, 255, 333), (1, 1, 1), (3, 17, 40), (3, 64, 64), (1, 2, 129)],
)
def test_same_mode_keeps_any_input_size(in_channels: int, height: int, width: int) -> None:
    model = UNet(in_channels, 2, **TINY).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, in_channels, height, width))
    assert logits.shape == (2, 2, height, width)
    assert model.output_size(height, width) == (height, width)


@pytest.mark.parametrize(
    ("norm", "downsample", "upsample", "residual"),
    [  # every value of every option, each pair of down/up-sampling and residual choices
        ("batch", "strided", "transpose", True),
        ("instance", "maxpool", "bilinear", True),
        ("group", "strided", "bilinear", False),
        ("none", "maxpool", "transpose", False),
        ("batch", "maxpool", "transpose", True),
        ("group", "strided", "bilinear", True),
    ],
)
def test_every_option_trains_at_odd_sizes(
    norm: str, downsample: str, upsample: str, residual: bool
) -> None:
    model = UNet(
        1,
        3,
        base_channels=4,
        depth=2,
        norm=norm,
        downsample=downsample,
        upsample=upsample,
        residual=residual,
        dropout=0.1,
        seed=0,
    )
    logits = model(torch.randn(2, 1, 13, 22))
    assert logits.shape == (2, 3, 13, 22)
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_narrow_residual_blocks_train_in_channels_last() -> None:
    """Regression: a stride-2 1x1 shortcut with 8 input channels crashed PyTorch 2.13's
    channels-last backward (heap corruption), so run it in a child process."""
    code = (
        "import torch\n"
        "from thyroidseg.models.unet import ConvBlock\n"
        "block = ConvBlock(8, 16, stride=2).to(memory_format=torch.channels_last)\n"
        "x = torch.randn(8, 8, 128, 128).to(memory_format=torch.channels_last)\n"
        "for _ in range(3):\n"
        "    block(x.requires_grad_()).mean().backward()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_group_norm_accepts_widths_not_divisible_by_8() -> None:
    model = UNet(base_channels=6, depth=1, norm="group", seed=0)
    assert model(torch.randn(1, 1, 8, 8)).shape == (1, 2, 8, 8)


def test_padding_does_not_leak_into_the_kept_region() -> None:
    """Cropping back is exact: the top-left pixels of a padded input see the same network."""
    model = UNet(**TINY).eval()
    image = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        full = model(image)
        # 30 x 30 is padded back to 32 x 32 with zeros; the same input padded by hand agrees.
        cropped_input = image[..., :30, :30]
        padded = torch.nn.functional.pad(cropped_input, [0, 2, 0, 2])
        assert torch.allclose(model(cropped_input), model(padded)[..., :30, :30], atol=1e-6)
    assert full.shape[-2:] == (32, 32)


def test_channels_last_gives_the_same_logits() -> None:
    model = UNet(**TINY).eval()
    image = torch.randn(2, 1, 40, 24)
    with torch.no_grad():
        reference = model(image)
        model = model.to(memory_format=torch.channels_last)
        fast = model(image.to(memory_format=torch.channels_last))
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_valid_output_size_matches_the_network(depth: int) -> None:
    sizes = [n for n in range(1, 130) if _is_valid(n, depth)]
    assert sizes, "some sizes must be valid"
    model = UNet(padding="valid", downsample="maxpool", depth=depth, base_channels=2).eval()
    with torch.no_grad():
        for height, width in [(sizes[0], sizes[1]), (sizes[-1], sizes[0])]:
            logits = model(torch.zeros(1, 1, height, width))
            assert logits.shape[-2:] == valid_output_size((height, width), depth=depth)
            assert model.output_size(height, width) == tuple(logits.shape[-2:])


def _is_valid(size: int, depth: int) -> bool:
    try:
        valid_output_size(size, depth=depth)
    except ValueError:
        return False
    return True


def test_valid_output_size_of_the_paper() -> None:
    assert valid_output_size((572, 572)) == (388, 388)  # Ronneberger et al. 2015, figure 1
    with pytest.raises(ValueError, match="odd feature map"):
        valid_output_size(573)
    with pytest.raises(ValueError, match="too small"):
        valid_output_size(60)


def test_valid_mode_rejects_sizes_that_would_misalign() -> None:
    model = UNet(padding="valid", downsample="maxpool", depth=2, base_channels=2)
    with pytest.raises(ValueError, match="size 45 is not valid"):
        model(torch.zeros(1, 1, 45, 48))


@pytest.mark.parametrize(("height", "width"), [(13, 22), (1, 1), (64, 96)])
def test_a_half_resolution_stem_still_returns_full_size_logits(height: int, width: int) -> None:
    model = UNet(1, 2, base_channels=4, depth=2, stem_stride=2, seed=0)
    assert model.size_multiple == 8
    logits = model(torch.randn(2, 1, height, width))
    assert logits.shape == (2, 2, height, width)
    logits.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # stage 0 really runs at half resolution: its block sees a stride-2 first convolution
    assert model.encoder[0].conv1.stride == (2, 2)


def test_valid_mode_needs_maxpool() -> None:
    with pytest.raises(ValueError, match="maxpool"):
        UNet(padding="valid", downsample="strided")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"norm": "layer"},
        {"downsample": "avgpool"},
        {"upsample": "pixelshuffle"},
        {"padding": "reflect"},
        {"in_channels": 0},
        {"depth": 0},
        {"base_channels": 2.5},
        {"dropout": 1.0},
        {"stem_stride": 3},
        {"stem_stride": 2, "downsample": "maxpool"},
        {"deep_supervision": -1},
        {"deep_supervision": 4},
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        UNet(**kwargs)


def test_forward_rejects_non_4d_input() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        UNet(**TINY)(torch.zeros(1, 32, 32))


def test_config_is_json_ready_and_rebuilds_the_network() -> None:
    model = UNet(
        3,
        4,
        base_channels=4,
        depth=3,
        norm="group",
        dropout=0.2,
        deep_supervision=2,
        position_channels=True,
        seed=7,
    )
    config = json.loads(json.dumps(model.config))
    rebuilt = UNet(**config)
    assert rebuilt.config == model.config
    for (name, a), (_, b) in zip(
        model.state_dict().items(), rebuilt.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a = UNet(**TINY).state_dict()
    b = UNet(**TINY).state_dict()
    c = UNet(base_channels=4, seed=1).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_unseeded_init_follows_torch_manual_seed() -> None:
    torch.manual_seed(3)
    a = UNet(base_channels=4).state_dict()
    torch.manual_seed(3)
    b = UNet(base_channels=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_tiny_network_fits_one_image() -> None:
    """The network can learn: 40 Adam steps fit a rectangle on a 24 x 24 image."""
    model = UNet(base_channels=4, depth=2, seed=0)
    image = torch.zeros(1, 1, 24, 24)
    image[..., 6:15, 8:20] = 1.0
    target = (image[:, 0] > 0).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(image), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    model.eval()
    with torch.no_grad():
        assert (model(image).argmax(1) == target).float().mean() > 0.95


def test_torch_compile_traces_the_whole_network() -> None:
    """Dynamo captures the forward in one graph (the "eager" backend needs no C++ compiler)."""
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available")
    model = UNet(depth=2, **TINY).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True, dynamic=True)
    image = torch.randn(1, 1, 37, 45)
    with torch.no_grad():
        torch.testing.assert_close(compiled(image), model(image))


def test_a_network_too_large_to_build_is_refused_before_allocation() -> None:
    with pytest.raises(ValueError, match=r"depth=12 needs about [\d,]+ weights \(\d+ GiB"):
        UNet(depth=12)
    assert UNet(depth=5, base_channels=32, seed=0).config["depth"] == 5  # large, still allowed


@pytest.mark.parametrize(
    "batch, error, message",
    [
        (torch.zeros(1, 1, 16, 16).numpy(), TypeError, "torch.from_numpy"),
        (torch.zeros(1, 1, 0, 16), ValueError, "non-empty"),
        (torch.zeros(1, 2, 16, 16), ValueError, "expected 1 input channel"),
        (torch.zeros(1, 1, 16, 16, dtype=torch.uint8), TypeError, r"x.float\(\) / 255"),
        (torch.zeros(1, 1, 16, 16, dtype=torch.float64), TypeError, "differs from the weights'"),
    ],
)
def test_forward_explains_inputs_it_cannot_take(batch, error, message) -> None:
    with pytest.raises(error, match=message):
        UNet(base_channels=4, depth=2, seed=0)(batch)


def test_prelu_networks_rebuild_from_their_config_and_start_at_a_quarter_slope() -> None:
    model = UNet(base_channels=4, depth=2, activation="prelu", seed=0)
    slopes = [m.weight for m in model.modules() if isinstance(m, torch.nn.PReLU)]
    assert slopes and all(torch.all(w == 0.25) for w in slopes)
    rebuilt = UNet(**model.config)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(2, 1, 20, 28)
    torch.testing.assert_close(rebuilt(x), model(x))
    with pytest.raises(ValueError, match="activation must be one of"):
        UNet(activation="gelu")  # type: ignore[arg-type]


def test_position_channels_give_the_first_block_each_pixels_row_and_column() -> None:
    model = UNet(base_channels=4, depth=2, position_channels=True, seed=0).eval()
    seen: list[torch.Tensor] = []
    model.encoder[0].register_forward_hook(lambda _, args, __: seen.append(args[0]))
    image = torch.rand(2, 1, 5, 7)
    with torch.no_grad():
        assert model(image).shape == (2, 2, 5, 7)
    rows, columns = seen[0][:, 1], seen[0][:, 2]
    assert seen[0].shape[1] == 3 and torch.equal(seen[0][:, :1, :5, :7], image)
    torch.testing.assert_close(rows[0, :5, 0], (torch.arange(5.0) * 2 + 1) / 5 - 1)
    torch.testing.assert_close(columns[1, 0, :7], (torch.arange(7.0) * 2 + 1) / 7 - 1)
    assert torch.all(seen[0][:, 1:, 5:, :] == 0) and torch.all(seen[0][:, 1:, :, 7:] == 0)
    config = dict(model.config)
    del config["position_channels"]  # a checkpoint written before the option
    assert UNet(**config).config["position_channels"] is False
