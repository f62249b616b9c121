"""Tests of ``system_info`` and ``thyroidseg info``: what a bug report needs."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
import torch

from thyroidseg import __version__
from thyroidseg.cli import main
from thyroidseg.cli.info import format_system_info, system_info
from thyroidseg.runtime import CpuInfo, parse_cpuinfo


def test_system_info_is_json_ready_and_follows_the_thread_setting() -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert system_info()["torch_threads"] == 1
        torch.set_num_threads(2)
        assert system_info()["torch_threads"] == 2
    finally:
        torch.set_num_threads(threads)
    info = system_info()
    assert json.loads(json.dumps(info)) == info  # plain values only
    assert all(re.match(r"\d+\.\d+", info[name]) for name in ("thyroidseg", "python", "torch"))
    assert info["native_bf16"] in (True, False)  # probed on this machine
    assert system_info(parse_cpuinfo("flags : avx2\n"))["native_bf16"] is None  # not probed


def test_cuda_devices_are_named_with_capability_and_memory(monkeypatch) -> None:
    gpus = [SimpleNamespace(name="GPU A", major=8, minor=0, total_memory=80e9),
            SimpleNamespace(name="GPU B", major=9, minor=0, total_memory=141e9)]  # fmt: skip
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(gpus))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: gpus[index])
    info = system_info(CpuInfo(None, None))
    assert info["cuda"] == [
        {"name": "GPU A", "capability": "8.0", "memory_gb": 80.0},
        {"name": "GPU B", "capability": "9.0", "memory_gb": 141.0},
    ]
    assert "GPU B" in format_system_info(info)


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
