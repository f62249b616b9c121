"""Export a segmentation network to TorchScript or ONNX, to run it without thyroidseg.

The exported graph is the network alone (`thyroidseg.inference.Segmenter.model`): a
preprocessed frame batch ``(N, C, H, W)`` float32 in ``[0, 1]`` in (``preprocess(...).image
/ 255``), per-pixel class scores (logits) ``(N, num_classes, H', W')`` out, with the batch,
height and width dynamic. Preprocessing, softmax/argmax and the mapping back to the frame's
size stay outside the graph, in `thyroidseg.preprocessing` and `thyroidseg.inference`.

Both exporters share one body, `_export`: the model is put in ``eval()`` mode and handed
back in the mode it was in, the archive is serialised in memory and written atomically, so a
file already at the destination survives a failed export.

ONNX uses PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``),
chosen over the ``torch.export``-based one (``dynamo=True``, which needs ``onnxscript``):
``docs/model.md`` (Export) gives the measurements behind that choice.

Examples
--------
>>> import tempfile, pathlib, torch
>>> from thyroidseg.models.unet import UNet
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> model = UNet(base_channels=4, depth=2, seed=0)
>>> scripted = torch.jit.load(export_torchscript(model, folder / "unet.pt"))
>>> scripted(torch.zeros(2, 1, 33, 47)).shape
torch.Size([2, 2, 33, 47])
"""

from __future__ import annotations

import importlib.util
import io
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor, nn

from thyroidseg._checks import PathLike
from thyroidseg.io.export_format import cascade_paths
from thyroidseg.io.files import atomic_write_bytes
from thyroidseg.models.unet import UNet

__all__ = [
    "ONNX_INPUT",
    "ONNX_OUTPUT",
    "cascade_paths",
    "export_cascade",
    "export_onnx",
    "export_torchscript",
]

ONNX_INPUT = "image"
"""Name of the ONNX graph's input: ``(batch, in_channels, height, width)`` float32."""

ONNX_OUTPUT = "logits"
"""Name of the ONNX graph's output: ``(batch, num_classes, out_height, out_width)``."""

_Writer = Callable[[nn.Module, BinaryIO], None]


def export_torchscript(model: nn.Module, path: PathLike) -> Path:
    """Save ``model`` as a TorchScript (``torch.jit.script``) archive, in inference mode.

    The archive runs without ``thyroidseg`` (``torch.jit.load(path)``), for any batch size and
    image size the eager model accepts. The file is written atomically: an existing file at
    ``path`` stays intact if the export fails. The model is put in ``eval()`` mode and given
    back in the mode it was in.

    Parameters
    ----------
    model
        The network to export (a `thyroidseg.models.unet.UNet`, or any scriptable module).
    path
        Destination file (conventionally ``.pt``).

    Returns
    -------
    pathlib.Path
        ``path``.
    """

    def write(module: nn.Module, buffer: BinaryIO) -> None:
        torch.jit.save(torch.jit.script(module), buffer)

    return _export(model, path, write)


def export_onnx(
    model: nn.Module,
    path: PathLike,
    *,
    opset_version: int = 17,
    example_size: tuple[int, int] = (256, 256),
    in_channels: int | None = None,
) -> Path:
    """Save ``model`` as an ONNX graph with dynamic batch, height and width, in inference mode.

    The input is called ``"image"`` (`ONNX_INPUT`, ``N x in_channels x H x W``, float32) and
    the output ``"logits"`` (`ONNX_OUTPUT`). Uses PyTorch's TorchScript-based exporter, which
    needs no package beyond ``onnx``. The file is written atomically and the model is given
    back in the mode it was in.

    Parameters
    ----------
    model
        The network to export.
    path
        Destination file (conventionally ``.onnx``).
    opset_version
        ONNX opset (default 17, supported by onnxruntime >= 1.13).
    example_size
        ``(H, W)`` of the example input used for tracing; any size works afterwards. For a
        ``padding="valid"`` `UNet` it must be a size `thyroidseg.models.unet.valid_output_size`
        accepts.
    in_channels
        Channels of the example input. ``None`` (default): ``model.config["in_channels"]``
        for a `UNet`, else the input channels of the model's first 2-D convolution.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        An example size a valid-mode `UNet` cannot take, or no way to tell ``in_channels``.
    ModuleNotFoundError
        The ``onnx`` package is missing (``pip install 'thyroidseg[export]'``).
    """
    if importlib.util.find_spec("onnx") is None:
        raise ModuleNotFoundError(
            "ONNX export needs the onnx package: pip install 'thyroidseg[export]'", name="onnx"
        )
    if isinstance(model, UNet):
        model.output_size(*example_size)  # a valid-mode model rejects sizes it cannot take
    example = _export_example(model, example_size, in_channels)

    def write(module: nn.Module, buffer: BinaryIO) -> None:
        torch.onnx.export(
            module,
            (example,),
            # the stub says a path; the TorchScript exporter (dynamo=False) takes a file object
            buffer,  # type: ignore[arg-type]
            dynamo=False,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_axes={
                ONNX_INPUT: {0: "batch", 2: "height", 3: "width"},
                ONNX_OUTPUT: {0: "batch", 2: "out_height", 3: "out_width"},
            },
            opset_version=opset_version,
        )

    return _export(model, path, write)


def export_cascade(
    model: nn.Module,
    refine_model: nn.Module | None,
    description: Mapping[str, Any],
    path: PathLike,
    *,
    exporter: Callable[[nn.Module, PathLike], Path] = export_onnx,
) -> list[Path]:
    """A segmenter's networks and how to run them, as `thyroidseg.inference.OnnxSegmenter` reads.

    Writes ``model`` (the whole-frame network) to ``path``, ``refine_model`` (the second
    stage, if any) beside it as ``STEM-refine.SUFFIX`` and ``description`` as ``STEM.json``
    (`cascade_paths`): the preprocessing, inference settings and crop rule as data, as
    `thyroidseg.inference.Segmenter.describe` gives them (docs/deployment.md), from which
    `thyroidseg.inference.OnnxSegmenter.from_export` (or a runtime without thyroidseg)
    rebuilds the masks.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    refine_path, json_path = cascade_paths(path)
    written = [exporter(model, path)]
    if refine_model is not None:
        written.append(exporter(refine_model, refine_path))
    text = json.dumps(description, indent=2) + "\n"
    atomic_write_bytes(json_path, text.encode())
    return [*written, json_path]


def _export(model: nn.Module, path: PathLike, write: _Writer) -> Path:
    """Run ``write(model, buffer)`` in eval mode, restore the mode, write ``path`` atomically."""
    was_training = model.training
    model.eval()
    try:
        buffer = io.BytesIO()
        write(model, buffer)
    finally:
        model.train(was_training)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _export_example(model: nn.Module, size: tuple[int, int], in_channels: int | None) -> Tensor:
    """A zero ``(1, C, H, W)`` float32 input on the model's device."""
    if in_channels is None:
        in_channels = _input_channels(model)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    return torch.zeros(1, in_channels, size[0], size[1], device=device)


def _input_channels(model: nn.Module) -> int:
    """``config["in_channels"]`` of a `UNet`, else the first ``Conv2d``'s input channels."""
    if isinstance(model, UNet):
        return int(model.config["in_channels"])
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise ValueError(
        f"cannot tell the input channels of a {type(model).__name__} (no Conv2d layer): "
        "pass in_channels=..."
    )
