"""Estimate the memory a volume needs before training on it or predicting it, and refuse early.

A volume that does not fit is refused with the amount needed and what to do; it is not split
into chunks (a model sees whole planes, and a cropped region of interest is the better fix).
The estimate is made once the volume is read (reading holds one copy of it), before the
buffers that grow with the class count are allocated.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from training_backend.errors import VolumeError

GIB = 1024**3
SAFETY = 1.25
"""Head-room on top of the arrays counted below (torch, temporaries, the network)."""


def prediction_bytes(shape: Sequence[int], num_classes: int, orientations: int = 1) -> int:
    """Bytes held while a volume is predicted: a float32 normalised copy, coarse and refined
    float32 probabilities per class (per orientation), hardness, and two uint8 label maps."""
    voxels = math.prod(int(n) for n in shape)
    per_voxel = 4 + 2 * 4 * num_classes * (2 if orientations > 1 else 1) + 4 + 2
    return int(SAFETY * voxels * per_voxel)


def training_bytes(shape: Sequence[int], num_classes: int) -> int:
    """Bytes held while training on a volume: normalised image, labels, the shape prior (per
    class) and its weight, plus the prior's distance maps (about two float64 per class)."""
    voxels = math.prod(int(n) for n in shape)
    per_voxel = 4 + 1 + 4 * num_classes + 4 + 16 * num_classes
    return int(SAFETY * voxels * per_voxel)


def available_bytes() -> int | None:
    """Memory the system can still give this process (Linux MemAvailable), or None if unknown."""
    meminfo = Path("/proc/meminfo")
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def check_fits(needed: int, what: str, name: str, shape: Sequence[int]) -> None:
    """Raise VolumeError when ``needed`` bytes exceed the memory available now."""
    free = available_bytes()
    if free is None or needed <= free:
        return
    raise VolumeError(
        f"{what} {name} (shape {tuple(int(n) for n in shape)}) needs about "
        f"{needed / GIB:.1f} GiB of memory but only {free / GIB:.1f} GiB is free. Crop the "
        "volume to the region of interest or resample it to larger voxels, close other "
        "programs, or use a machine with more memory."
    )
