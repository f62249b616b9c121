"""Tests of ``system_info`` and ``thyroidseg info``: what a bug report needs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from thyroidseg import __version__
from thyroidseg.cli import main
from thyroidseg.cli.info import format_system_info, system_info
from thyroidseg.runtime import CpuInfo, cpu_has_native_bf16, parse_cpuinfo


def test_system_info_names_the_versions_threads_and_devices() -> None:
    info = system_info()
    assert info["thyroidseg"] == __version__
    assert (info["torch"], info["numpy"], info["opencv"]) == (
        str(torch.__version__), np.__version__, cv2.__version__
    )  # fmt: skip
    assert info["native_bf16"] is cpu_has_native_bf16()
    assert info["torch_threads"] == torch.get_num_threads()
    assert len(info["cuda"]) == torch.cuda.device_count()


def test_cpu_capability_from_the_flags() -> None:
    amx = parse_cpuinfo("model name : Example Xeon\nflags : avx2 avx512f avx512_bf16 amx_tile\n")
    info = system_info(amx)
    assert info["cpu"] == "Example Xeon"
    assert info["cpu_features"] == {
        "AVX2": True, "AVX512F": True, "AVX512-BF16": True, "AMX": True
    }  # fmt: skip
    avx2 = system_info(parse_cpuinfo("flags : fpu avx2\n"))["cpu_features"]
    assert avx2 == {"AVX2": True, "AVX512F": False, "AVX512-BF16": False, "AMX": False}


def test_unknown_cpu_is_reported_as_unknown() -> None:
    info = system_info(CpuInfo(None, None))
    assert info["cpu"] == "unknown" and set(info["cpu_features"].values()) == {None}
    text = format_system_info(info)
    assert "CPU:" in text and "AVX2 unknown" in text and "native bf16" in text


def test_info_command_prints_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    for name in ("thyroidseg", "Python", "PyTorch", "NumPy", "OpenCV", "CPU features",
                 "native bf16", "PyTorch threads", "CUDA devices"):  # fmt: skip
        assert f"{name}:" in text
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["thyroidseg"] == __version__
