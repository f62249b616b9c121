"""What a bug report needs: versions, the CPU and what it can do, threads and GPUs.

``thyroidseg info`` prints `format_system_info` of `system_info` (as MONAI's
``print_config()``). The CPU capability decides the speed of everything here: PyTorch
emulates bfloat16 where the CPU lacks AVX512-BF16 or AMX, so ``amp="auto"`` trains in
float32 there (`thyroidseg.runtime.cpu_has_native_bf16`), several times slower.
"""

from __future__ import annotations

import platform
from typing import Any

import cv2
import numpy as np
import torch

from thyroidseg._version import __version__
from thyroidseg.runtime import CpuInfo, cpu_has_native_bf16, cpu_info

__all__ = ["CPU_FEATURES", "format_system_info", "system_info"]

CPU_FEATURES: dict[str, tuple[str, ...]] = {
    "AVX2": ("avx2",),
    "AVX512F": ("avx512f",),
    "AVX512-BF16": ("avx512_bf16",),
    "AMX": ("amx_tile", "amx_bf16", "amx_int8"),
}
"""Capabilities reported, each with the ``/proc/cpuinfo`` flags that show it (any of them)."""


def system_info(cpu: CpuInfo | None = None) -> dict[str, Any]:
    """Versions, CPU, threads and CUDA devices of this machine, as plain values.

    Parameters
    ----------
    cpu
        The CPU to describe (default: `thyroidseg.runtime.cpu_info`, this machine's).

    Returns
    -------
    dict
        ``thyroidseg``, ``python``, ``torch``, ``numpy``, ``opencv`` and ``platform``
        (strings); ``cpu`` (the model name or ``"unknown"``); ``cpu_features`` (each of
        `CPU_FEATURES` mapped to ``True``, ``False`` or ``None`` where the flags are unknown);
        ``torch_cpu_capability`` (the kernels PyTorch chose, e.g. ``"AVX2"``);
        ``native_bf16`` (`thyroidseg.runtime.cpu_has_native_bf16`, only for this machine's
        CPU, else ``None``); ``torch_threads``; ``cuda`` (one dict per device: ``name``,
        ``capability``, ``memory_gb``; empty without CUDA).
    """
    this_machine = cpu is None
    cpu = cpu_info() if cpu is None else cpu
    return {
        "thyroidseg": __version__,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "platform": platform.platform(),
        "cpu": cpu.model or "unknown",
        "cpu_features": {name: cpu.has(*flags) for name, flags in CPU_FEATURES.items()},
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16() if this_machine else None,
        "torch_threads": torch.get_num_threads(),
        "cuda": [_cuda_device(index) for index in range(torch.cuda.device_count())],
    }


def format_system_info(info: dict[str, Any]) -> str:
    """`system_info` as aligned ``name: value`` lines, ready to paste into a bug report.

    Examples
    --------
    >>> info = system_info(CpuInfo("Example CPU", frozenset({"avx2"})))
    >>> print(format_system_info(info).splitlines()[7])
    CPU features:         AVX2 yes, AVX512F no, AVX512-BF16 no, AMX no
    """
    features = ", ".join(
        f"{name} {_yes_no(present)}" for name, present in info["cpu_features"].items()
    )
    devices = [
        f"{device['name']} (compute capability {device['capability']}, "
        f"{device['memory_gb']:.1f} GB)"
        for device in info["cuda"]
    ]
    rows = [
        ("thyroidseg", info["thyroidseg"]),
        ("Python", info["python"]),
        ("PyTorch", info["torch"]),
        ("NumPy", info["numpy"]),
        ("OpenCV", info["opencv"]),
        ("Platform", info["platform"]),
        ("CPU", info["cpu"]),
        ("CPU features", features),
        ("PyTorch CPU kernels", info["torch_cpu_capability"]),
        ("native bf16", _yes_no(info["native_bf16"])),
        ("PyTorch threads", info["torch_threads"]),
        ("CUDA devices", "; ".join(devices) if devices else "none"),
    ]
    width = max(len(name) for name, _ in rows) + 2
    return "\n".join(f"{name + ':':<{width}} {value}" for name, value in rows)


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else "yes" if value else "no"


def _cuda_device(index: int) -> dict[str, Any]:
    properties = torch.cuda.get_device_properties(index)
    return {
        "name": properties.name,
        "capability": f"{properties.major}.{properties.minor}",
        "memory_gb": properties.total_memory / 1e9,
    }
