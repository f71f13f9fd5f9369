"""Distributed data parallel under ``torchrun``: gloo on CPU, NCCL on CUDA; rank 0 writes.

Outside ``torchrun`` (no ``WORLD_SIZE`` above 1) every function is a no-op for one process.
"""

from __future__ import annotations

import os

import torch
from torch import distributed as dist
from torch import nn

from training_backend.errors import TrainingError

_in_step_collectives = False
"""True from joining the group until this process leaves the training loop normally: while
it holds, a peer may be waiting in a gradient exchange or an :func:`agree`."""


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def initialise(device: torch.device) -> None:
    """Join the process group when started by torchrun (idempotent)."""
    if not launched_by_torchrun() or dist.is_initialized():
        return
    global _in_step_collectives
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    _in_step_collectives = True


def leave_training_loop() -> None:
    """Called by every process that leaves the training loop without an error; from here on
    its peers are either leaving the loop too or already waiting in :func:`shutdown`."""
    global _in_step_collectives
    _in_step_collectives = False


def inside_training_loop() -> bool:
    """Whether this process joined a group and has not left the training loop normally."""
    return _in_step_collectives


def shutdown(failed: bool = False) -> None:
    """Leave the group together: rank 0 may still be writing when the others finish, and a
    rank that tears gloo down alone can abort its peers. A process that failed inside the
    training loop skips the barrier (its peers may be inside another collective, where a
    barrier would never meet them); one that failed after it (rank 0 writing the model) still
    meets the peers waiting there."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1 and not (failed and _in_step_collectives):
            try:
                dist.barrier()
            except RuntimeError:  # a peer has gone: nobody is left to wait for
                pass
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank; before the group is joined, the one torchrun gave it."""
    if active():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def device_for_rank(device: torch.device) -> torch.device:
    """On CUDA each process takes the GPU of its local rank, and joins the group."""
    if device.type == "cuda" and launched_by_torchrun():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        started = int(os.environ.get("LOCAL_WORLD_SIZE", str(local + 1)))
        count = torch.cuda.device_count()
        if started > count:  # every process refuses, before any of them waits for the others
            raise TrainingError(
                f"torchrun started {started} processes on this machine, but it has {count} "
                f"CUDA device(s) and each process needs its own: start at most {count} "
                f"(--nproc-per-node {count}), or train on the CPU with --device cpu"
            )
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    initialise(device)
    return device


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around the model when several processes train."""
    if not active():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def agree(flag: bool) -> bool:
    """True on every rank when any rank says True (stop requests, budgets, NaN losses)."""
    if not active():
        return flag
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([1 if flag else 0], device=backend_device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def agree_max(values: list[float]) -> list[float]:
    """The maximum over ranks of each value (one collective for several numbers)."""
    if not active():
        return values
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.float64, device=backend_device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()
