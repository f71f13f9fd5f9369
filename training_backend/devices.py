"""Device choice (auto: CUDA, then MPS, then CPU) and mixed precision."""

from __future__ import annotations

import contextlib
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
    """A factory of autocast contexts: bf16 (or fp16) on CUDA when enabled, nothing elsewhere."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return lambda: torch.autocast("cuda", dtype=dtype)


def needs_grad_scaler(device: torch.device, enabled: bool) -> bool:
    """fp16 autocast needs loss scaling; bf16 does not."""
    return enabled and device.type == "cuda" and not torch.cuda.is_bf16_supported()


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
