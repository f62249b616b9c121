"""Where and how fast the model runs: device, mixed precision (AMP) and CPU tuning.

Shared by training (`thyroidseg.training`) and inference (`thyroidseg.inference`), so both
choose the device, the autocast dtype and the memory format by the same rules:

* `resolve_device`: ``"auto"`` is CUDA when available, else the CPU; ``cuda:<LOCAL_RANK>``
  under ``torchrun``;
* `resolve_amp`: the autocast dtype for an ``amp`` mode (bf16 on the CPU only where it is
  native, `cpu_has_native_bf16`), used through `autocast`; `for_inference`: a network
  placed and switched to eval mode for prediction;
* `cpu_info`: the CPU model and feature flags read from ``/proc/cpuinfo``;
* `tune_cpu_allocator`: glibc ``mallopt`` settings that stop a CPU training step from
  page-faulting its large activations again every step;
* `free_cores`: the cores that other jobs leave free (``--threads auto``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import nn

from thyroidseg._checks import PathLike
from thyroidseg.io.threads import free_cores

__all__ = [
    "AMP_MODES",
    "AmpMode",
    "CpuInfo",
    "autocast",
    "cpu_has_native_bf16",
    "cpu_info",
    "for_inference",
    "free_cores",
    "parse_cpuinfo",
    "resolve_amp",
    "resolve_device",
    "tune_cpu_allocator",
]

AmpMode = Literal["auto", "bf16", "fp16", "off"]
AMP_MODES: tuple[str, ...] = get_args(AmpMode)
"""The ``amp`` modes `resolve_amp` accepts (the values of `AmpMode`)."""

_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


# --------------------------------------------------------------------------- the CPU


@dataclass(frozen=True)
class CpuInfo:
    """The CPU model name and its feature flags, as ``/proc/cpuinfo`` lists them.

    Attributes
    ----------
    model
        E.g. ``"AMD EPYC 9B14"``; ``None`` when unknown.
    flags
        Lower-case feature flags (x86 ``flags``, ARM ``Features``) of the first processor;
        ``None`` when unknown (no ``/proc/cpuinfo``: macOS, Windows).
    """

    model: str | None
    flags: frozenset[str] | None

    def has(self, *flags: str) -> bool | None:
        """Whether any of ``flags`` is present; ``None`` when the flags are unknown."""
        if self.flags is None:
            return None
        return any(flag in self.flags for flag in flags)


def parse_cpuinfo(text: str) -> CpuInfo:
    """The `CpuInfo` of a ``/proc/cpuinfo`` text (its first processor's entries).

    Examples
    --------
    >>> info = parse_cpuinfo("model name\\t: Example CPU\\nflags\\t\\t: fpu avx2 amx_bf16\\n")
    >>> info.model, info.has("avx2"), info.has("avx512f")
    ('Example CPU', True, False)
    """
    model: str | None = None
    flags: frozenset[str] | None = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware") and model is None and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and flags is None:
            flags = frozenset(value.lower().split())
    return CpuInfo(model, flags)


@functools.cache
def cpu_info(path: PathLike = "/proc/cpuinfo") -> CpuInfo:
    """The `CpuInfo` of this machine (read once); model and flags ``None`` where unknown.

    Without ``/proc/cpuinfo`` the model comes from `platform.processor` when it names one.
    """
    try:
        return parse_cpuinfo(Path(path).read_text(errors="replace"))
    except OSError:
        return CpuInfo(platform.processor() or None, None)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX) and autocast works.

    Without native support PyTorch emulates bfloat16, which is slower than float32, so
    ``amp="auto"`` only turns bf16 on where this returns ``True``. The flags are read from
    ``/proc/cpuinfo`` (`cpu_info`); where they are unknown this returns ``False``.
    """
    return bool(cpu_info().has(*_NATIVE_BF16_FLAGS)) and _bf16_autocast_works()


@functools.cache
def _bf16_autocast_works() -> bool:
    """Run a tiny convolution under CPU bf16 autocast and check it really ran in bf16."""
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = nn.functional.conv2d(torch.ones(1, 2, 4, 4), torch.ones(3, 2, 3, 3))
        return out.dtype == torch.bfloat16 and bool(torch.isfinite(out).all())
    except RuntimeError:
        return False


# --------------------------------------------------------------------------- device and AMP


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The device to run on.

    ``"auto"`` picks CUDA when available, else the CPU. Under ``torchrun`` a bare ``"cuda"``
    (or ``"auto"``) becomes ``cuda:<LOCAL_RANK>``, one GPU per process.

    Raises
    ------
    ValueError
        ``device`` is not a device name, or names a CUDA device this machine lacks (a
        PyTorch built without CUDA, no GPU or driver, or an index beyond the GPUs).
    """
    requested = str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device {device!r} is not a device name: use 'auto', 'cpu', 'cuda' or 'cuda:<index>'"
        ) from error
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if not torch.cuda.is_available():
            why = (
                "no GPU or driver was found"
                if torch.backends.cuda.is_built()
                else f"this PyTorch ({torch.__version__}) was built without CUDA"
            )
            raise ValueError(f"device {requested!r} is not available: {why}; use 'cpu'")
        if device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {requested!r} is not available: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    return device


def resolve_amp(amp: AmpMode, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, or ``None`` for full float32.

    ==========  =====================================  ===================================
    ``amp``     CPU                                    CUDA
    ==========  =====================================  ===================================
    ``"auto"``  bf16 if `cpu_has_native_bf16`,         fp16 (with a gradient scaler)
                else float32
    ``"bf16"``  bf16 (error if autocast fails)         bf16 (error if the GPU lacks it)
    ``"fp16"``  error: fp16 autocast needs CUDA        fp16 (with a gradient scaler)
    ``"off"``   float32                                float32
    ==========  =====================================  ===================================
    """
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    if amp == "off":
        return None
    if device.type == "cuda":
        if amp == "bf16" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"amp='bf16': {torch.cuda.get_device_name(device)} has no bfloat16")
        return torch.bfloat16 if amp == "bf16" else torch.float16
    if device.type == "cpu":
        if amp == "fp16":
            raise ValueError("amp='fp16' needs a CUDA device; on the CPU use 'bf16' or 'off'")
        if amp == "auto":
            return torch.bfloat16 if cpu_has_native_bf16() else None
        if not _bf16_autocast_works():
            raise ValueError("amp='bf16': bfloat16 autocast does not work on this CPU")
        return torch.bfloat16
    if amp == "auto":
        return None
    raise ValueError(f"amp={amp!r} is supported on 'cpu' and 'cuda' devices, not {device.type!r}")


def for_inference(
    model: nn.Module, device: str | torch.device = "auto", amp: AmpMode = "auto"
) -> tuple[nn.Module, torch.device, torch.dtype | None]:
    """``model`` ready to predict: in ``eval()`` mode and channels-last on the resolved
    ``device`` (`resolve_device`), with the autocast dtype of ``amp`` there (`resolve_amp`).

    Both stages of `thyroidseg.inference.Segmenter` place their networks with it.
    """
    resolved = resolve_device(device)
    dtype = resolve_amp(amp, resolved)
    # torch's stubs lack the memory_format keyword that Module.to takes
    placed = model.to(resolved, memory_format=torch.channels_last)  # type: ignore[call-overload]
    return placed.eval(), resolved, dtype


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """``torch.autocast`` on ``device`` in ``dtype`` (from `resolve_amp`); off for ``None``.

    The one autocast context of the library: the training step, validation and
    `thyroidseg.inference.Segmenter` all run their forward passes in it.
    """
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


# --------------------------------------------------------------------------- CPU allocator

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h> parameter numbers
_M_MMAP_THRESHOLD = -3


def tune_cpu_allocator(*, mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 30) -> bool:
    """Stop glibc from returning large tensors to the OS after every training step.

    By default glibc serves every allocation over 32 MB with a fresh ``mmap`` and unmaps it on
    ``free``. A U-Net step allocates and frees activations of that size dozens of times, so
    the kernel zero-fills and page-faults the same memory again every step: measured here,
    system time was ~40% of a CPU training step. Raising ``M_MMAP_THRESHOLD`` keeps those
    blocks in the heap, and raising ``M_TRIM_THRESHOLD`` stops the heap from being trimmed
    back after each step. It costs some resident memory (freed blocks are kept for reuse).

    The setting is process-wide and lasts until the process exits; it applies to allocations
    made after the call. Elsewhere than Linux with glibc (macOS, Windows, musl) it does
    nothing and returns ``False``; so does a glibc that refuses the values.
    Preloading jemalloc or tcmalloc (``LD_PRELOAD``) has a similar effect.

    Parameters
    ----------
    mmap_threshold
        Allocations at least this large (bytes) still get their own ``mmap``. Default 1 GiB.
    trim_threshold
        Free memory at the top of the heap beyond this many bytes is returned to the OS.
        Default 1 GiB.

    Returns
    -------
    bool
        Whether both settings were applied.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    return mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1 and applied
