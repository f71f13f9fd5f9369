"""Device choice (auto: CUDA, then MPS, then CPU) and mixed precision."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import torch

from training_backend.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; a named device must be present."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but no CUDA GPU is available; use auto or cpu")
    if name == "mps" and not _mps_available():
        raise ConfigError("device 'mps' asked for, but Apple MPS is not available; use auto or cpu")
    if name not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {name!r}; valid: auto, cpu, cuda, mps")
    return torch.device(name)


def available_devices() -> list[tuple[str, str]]:
    """(name, description) of each device present, CUDA and MPS named with their card."""
    found = [("cpu", "CPU")]
    if torch.cuda.is_available():
        found.insert(0, ("cuda", f"CUDA: {torch.cuda.get_device_name(0)}"))
    if _mps_available():
        found.insert(0, ("mps", "Apple MPS (Metal GPU)"))
    return found


def autocast_for(device: torch.device, enabled: bool) -> Callable[[], Any]:
    """A factory of autocast contexts in :func:`mixed_precision_dtype`, or of no-op ones."""
    dtype = mixed_precision_dtype(device, enabled)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def mixed_precision_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast type when mixed precision is enabled: bf16 (fp16 on older cards) on CUDA,
    bf16 on a CPU that computes it natively (the network about 1.6x faster on an
    AVX512-BF16 CPU, a whole training step less: benchmarks/speed.py); None (float32) elsewhere."""
    if enabled and device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if enabled and device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX-BF16, as Linux lists them in
    ``/proc/cpuinfo``). Emulated bf16 is slower than float32, so without them, and on systems
    that do not say, mixed precision stays off on the CPU."""
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as stream:
            for line in stream:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def needs_grad_scaler(device: torch.device, enabled: bool) -> bool:
    """fp16 autocast needs loss scaling; bf16 does not."""
    return enabled and device.type == "cuda" and not torch.cuda.is_bf16_supported()


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
