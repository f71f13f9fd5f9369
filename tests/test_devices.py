"""Mixed precision choice (training_backend.devices), with the CPU's flags patched."""

from __future__ import annotations

import contextlib

import pytest
import torch

from training_backend import devices
from training_backend.devices import (
    autocast_for,
    cpu_has_native_bf16,
    mixed_precision_dtype,
    needs_grad_scaler,
)

CPU = torch.device("cpu")


def with_flags(monkeypatch: pytest.MonkeyPatch, *flags: str) -> None:
    """Pretend ``/proc/cpuinfo`` lists ``flags`` (the cached reader is replaced)."""
    monkeypatch.setattr(devices, "_cpu_flags", lambda: frozenset({"sse2", "avx2", *flags}))


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_a_cpu_with_native_bf16_uses_it_when_enabled(monkeypatch, flag):
    with_flags(monkeypatch, flag)
    assert cpu_has_native_bf16()
    assert mixed_precision_dtype(CPU, True) is torch.bfloat16
    assert mixed_precision_dtype(CPU, False) is None
    assert not needs_grad_scaler(CPU, True)


def test_a_cpu_without_bf16_stays_in_float32(monkeypatch):
    with_flags(monkeypatch, "avx512f")
    assert not cpu_has_native_bf16()
    assert mixed_precision_dtype(CPU, True) is None
    assert mixed_precision_dtype(CPU, False) is None


def test_no_flags_at_all_means_no_bf16(monkeypatch):
    monkeypatch.setattr(devices, "_cpu_flags", lambda: frozenset())
    assert not cpu_has_native_bf16()
    assert mixed_precision_dtype(CPU, True) is None


def test_mps_stays_in_float32(monkeypatch):
    with_flags(monkeypatch, "avx512_bf16")
    assert mixed_precision_dtype(torch.device("mps"), True) is None


def test_autocast_for_gives_no_op_contexts_without_a_type(monkeypatch):
    with_flags(monkeypatch)
    factory = autocast_for(CPU, True)
    assert factory is contextlib.nullcontext
    a = torch.randn(4, 4)
    with factory():
        assert (a @ a).dtype == torch.float32
    assert autocast_for(CPU, False) is contextlib.nullcontext


def test_autocast_for_gives_bf16_contexts_on_a_bf16_cpu(monkeypatch):
    with_flags(monkeypatch, "avx512_bf16")
    factory = autocast_for(CPU, True)
    assert factory is not contextlib.nullcontext
    a = torch.randn(4, 4)
    with factory():
        assert (a @ a).dtype == torch.bfloat16
    assert (a @ a).dtype == torch.float32
    assert autocast_for(CPU, False) is contextlib.nullcontext


def test_cpu_flags_are_read_once_as_a_set_of_names():
    flags = devices._cpu_flags()
    assert isinstance(flags, frozenset) and all(isinstance(f, str) for f in flags)
    assert devices._cpu_flags() is flags  # cached


def test_an_unreadable_cpuinfo_gives_no_flags(monkeypatch):
    def unreadable(*args: object, **kwargs: object) -> None:
        raise OSError("no /proc here")

    monkeypatch.setattr(devices, "open", unreadable, raising=False)
    assert devices._cpu_flags.__wrapped__() == frozenset()
