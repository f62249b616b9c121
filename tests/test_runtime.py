"""Tests of the device, AMP and CPU rules shared by training and inference."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest
import torch

import thyroidseg.runtime
from thyroidseg.runtime import (
    autocast,
    cpu_has_native_bf16,
    parse_cpuinfo,
    resolve_amp,
    resolve_device,
)

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_amp_on_the_cpu_follows_the_native_bf16_probe(monkeypatch, native: bool) -> None:
    monkeypatch.setattr(thyroidseg.runtime, "cpu_has_native_bf16", lambda: native)
    assert resolve_amp("auto", CPU) is (torch.bfloat16 if native else None)


def test_amp_modes_on_the_cpu() -> None:
    assert resolve_amp("off", CPU) is None
    with pytest.raises(ValueError, match="fp16.*needs a CUDA device"):
        resolve_amp("fp16", CPU)
    with pytest.raises(ValueError, match="amp must be one of"):
        resolve_amp("half", CPU)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flags", "autocast_works", "expected"),
    [("avx2 avx512f", True, False), ("avx2 avx512_bf16", True, True),
     ("amx_bf16", True, True), ("avx512_bf16", False, False)],
)  # fmt: skip
def test_native_bf16_needs_the_cpu_flag_and_working_autocast(
    monkeypatch, flags: str, autocast_works: bool, expected: bool
) -> None:
    monkeypatch.setattr(thyroidseg.runtime, "cpu_info", lambda: parse_cpuinfo(f"flags : {flags}"))
    monkeypatch.setattr(thyroidseg.runtime, "_bf16_autocast_works", lambda: autocast_works)
    cpu_has_native_bf16.cache_clear()
    try:
        assert cpu_has_native_bf16() is expected
    finally:
        cpu_has_native_bf16.cache_clear()


def test_parse_cpuinfo_reads_model_and_flags_of_x86_and_arm() -> None:
    x86 = parse_cpuinfo(
        "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu AVX2 amx_tile\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu\n"
    )
    assert x86.model == "AMD EPYC 7B13"
    assert x86.has("avx2") and x86.has("amx_bf16", "amx_tile") and not x86.has("avx512f")
    arm = parse_cpuinfo("processor\t: 0\nFeatures\t: fp asimd bf16\nHardware\t: BCM2835\n")
    assert arm.model == "BCM2835" and arm.has("bf16")
    unknown = parse_cpuinfo("")
    assert unknown.model is None and unknown.has("avx2") is None


def test_autocast_is_off_for_float32() -> None:
    weight = torch.ones(3, 2, 3, 3)
    with autocast(CPU, None):
        assert not torch.is_autocast_enabled("cpu")
        assert torch.nn.functional.conv2d(torch.ones(1, 2, 4, 4), weight).dtype == torch.float32


def test_autocast_in_bf16_runs_a_convolution_in_bf16() -> None:
    """Unconditional: PyTorch's CPU autocast runs bf16 also without native support (emulated,
    only slower), so a float32 result here is a failure, not a reason to skip."""
    weight = torch.ones(3, 2, 3, 3)
    with autocast(CPU, torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        out = torch.nn.functional.conv2d(torch.ones(1, 2, 4, 4), weight)
    assert out.dtype == torch.bfloat16
    assert thyroidseg.runtime._bf16_autocast_works()  # so the probe agrees


def test_resolve_device() -> None:
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else CPU)
    with pytest.raises(ValueError, match="device 'gpu' is not a device name"):
        resolve_device("gpu")


@pytest.mark.parametrize("built", [True, False])
def test_a_cuda_device_without_cuda_is_a_one_line_error(monkeypatch, built: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: built)
    why = "no GPU or driver was found" if built else "was built without CUDA"
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=rf"device '{name}' is not available: .*{why}"):
            resolve_device(name)
    assert resolve_device("auto") == CPU


def test_a_cuda_index_beyond_the_gpus_is_an_error(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="device 'cuda:2' is not available: .* 2 CUDA device"):
        resolve_device("cuda:2")


ALLOCATIONS = textwrap.dedent(
    """
    import resource, torch
    # The top-level API loaded, as in a program that trains: whether glibc can keep the freed
    # block in its heap depends on the heap's layout, which the imports shape (with only
    # thyroidseg.runtime loaded, the block was mapped anew every time).
    from thyroidseg import ConfusionMatrix, Segmenter, ThyroidDataset, UNet, export_onnx
    from thyroidseg import evaluate_folders, group_kfold, load_checkpoint, measure, preprocess
    from thyroidseg.runtime import tune_cpu_allocator

    def page_faults():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(6):
            block = torch.ones(96 << 18)  # 96 MiB: above glibc's largest mmap threshold
            del block
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    plain = page_faults()
    applied = tune_cpu_allocator()
    # The heap grows by a few blocks before freed ones are reused (how many depends on its
    # layout: 1 to 3 of 6 were seen), so the tuned count is taken once it has settled.
    page_faults()
    print(applied, plain, page_faults())
    """
)


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt tuning exists on Linux with glibc only",
)
def test_allocator_tuning_stops_page_faults_of_reused_blocks() -> None:
    # A fresh process: the setting is process-wide, and other tests may have applied it.
    done = subprocess.run(
        [sys.executable, "-c", ALLOCATIONS], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    applied, plain, tuned = done.stdout.split()
    assert applied == "True"
    # Untuned, every block is a fresh mmap faulted in page by page; tuned, the settled heap
    # serves each block from memory it already holds.
    assert int(tuned) < int(plain) / 3
