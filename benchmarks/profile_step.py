"""Where a training iteration's time goes, phase by phase, on one hippocampus volume.

    python -m benchmarks.profile_step --device cuda --out benchmarks/results/gpu/profile.json

Builds what a training round builds (the product's defaults, 3 annotated slices) and runs the
loop's phases one by one: drawing the batch, augmenting it (and moving it to the device), the
losses (forward passes, and the finiteness check the loop makes, which waits for the device),
backward, the optimiser step and the method's after-step (the EMA teacher). Each phase is
timed with the device synchronised before and after it, so a phase's figure is its own cost
and their sum a little above an unsynchronised iteration (also given). Then the torch
profiler's operator table for a few more iterations. Medians after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import runs
from benchmarks.cases import AXIAL, data_available, load_case, painted, split_names
from benchmarks.real_data import machine
from training_backend.devices import autocast_for, needs_grad_scaler
from training_backend.methods import build_method
from training_backend.model import build_model
from training_backend.simulate import spread_slices
from training_backend.trainer import (
    TrainingJob,
    TrainingVolume,
    build_optimizer,
    build_sampler,
    learning_rate_at,
    prepare_volumes,
)
from training_backend.volumes import augment

PHASES = ("sample", "augment", "losses", "backward", "step", "after_step")


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile(method_name: str, device: torch.device, iterations: int, warmup: int, ops: int):
    """Per-phase medians in milliseconds, and the profiler's top operators."""
    case = load_case(split_names("train")[0])
    _, annotation = painted(case, spread_slices(case.truth, AXIAL, 3))
    config = runs.make_config(method_name, iterations, 0)
    tc = config.train
    job = TrainingJob(config, [TrainingVolume(case.image, annotation, case.spacing, case.name)],
                      Path("unused"))  # fmt: skip
    volumes = prepare_volumes(job, AXIAL)
    model = build_model(config.model, device)
    generator = torch.Generator().manual_seed(0)
    method = build_method(config, model, generator)
    optimizer = build_optimizer(model, tc)
    autocast = autocast_for(device, tc.mixed_precision)
    scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(device, tc.mixed_precision))
    sampler = build_sampler(volumes, method, tc, model.size_multiple, seed=0)
    model.train()
    state: dict[str, Any] = {}
    total_iterations = warmup + 2 * iterations + ops

    def losses(progress: float) -> dict[str, torch.Tensor]:
        named = method.losses(model, state["batch"], progress, autocast)
        bool(torch.isfinite(named["total"].detach()))  # as the loop does, every step
        return named

    def one(iteration: int, timings: dict[str, list[float]] | None) -> None:
        def phase(name, action):
            if timings is not None:
                _synchronise(device)
                start = time.perf_counter()
            result = action()
            if timings is not None:
                _synchronise(device)
                timings[name].append(1000 * (time.perf_counter() - start))
            return result

        progress = min(1.0, iteration / total_iterations)
        batch = phase("sample", sampler.sample)
        state["batch"] = phase("augment", lambda: augment(batch, tc.augment, generator, device))
        optimizer.param_groups[0]["lr"] = learning_rate_at(tc, progress)
        state["named"] = phase("losses", lambda: losses(progress))
        optimizer.zero_grad(set_to_none=True)
        phase("backward", lambda: scaler.scale(state["named"]["total"]).backward())
        phase("step", lambda: (scaler.step(optimizer), scaler.update()))
        phase("after_step", lambda: method.after_step(model, iteration + 1))
        for value in state["named"].values():  # the loop reads every loss (one sync each)
            float(value.detach())

    for iteration in range(warmup):
        one(iteration, None)
    timings: dict[str, list[float]] = {name: [] for name in PHASES}
    _synchronise(device)
    start = time.perf_counter()
    for iteration in range(warmup, warmup + iterations):
        one(iteration, timings)
    timed_rate = iterations / (time.perf_counter() - start)
    start = time.perf_counter()
    for iteration in range(warmup + iterations, warmup + 2 * iterations):
        one(iteration, None)
    _synchronise(device)
    free_rate = iterations / (time.perf_counter() - start)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        for iteration in range(ops):
            one(warmup + 2 * iterations + iteration, None)
        _synchronise(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = profiler.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=50)
    cpu_sorted = profiler.key_averages().table(
        sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=50
    )
    launches = sum(e.count for e in profiler.key_averages() if "LaunchKernel" in e.key)
    return {
        "method": method_name,
        "device": str(device),
        "mixed_precision": tc.mixed_precision,
        "batch_size": tc.batch_size,
        "median_ms": {name: round(statistics.median(v), 2) for name, v in timings.items()},
        "iterations_per_second_synchronised_phases": round(timed_rate, 2),
        "iterations_per_second_free": round(free_rate, 2),
        "kernel_launches_per_iteration": round(launches / max(ops, 1), 1),
        "profiler_table": table,
        "profiler_table_by_cpu": cpu_sorted,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="+", default=["crii", "supervised", "mean-teacher"])
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--profiled", type=int, default=10, help="iterations under the profiler")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not data_available():
        print("the hippocampus data is not beside the repository", file=sys.stderr)
        return 2
    runs.DEVICE = args.device
    device = torch.device(args.device)
    rows = []
    for method in args.methods:
        row = profile(method, device, args.iterations, args.warmup, args.profiled)
        row["machine"] = machine()
        print(json.dumps({k: v for k, v in row.items() if not k.startswith("profiler")}),
              flush=True)  # fmt: skip
        print(row["profiler_table"], flush=True)
        rows.append(row)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
