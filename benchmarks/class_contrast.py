"""How far apart the two hippocampus classes look on the annotated slices, beside the phantom.

    python -m benchmarks.class_contrast

The product splits the foreground between two classes by the annotated outlines only when
their intensities on the annotated slices lie less than ``predict.prior_class_max_contrast``
pooled standard deviations apart (:func:`training_backend.postprocess.class_contrast`). This
prints that contrast over every ``train`` and ``test`` case at k = 2, 3 and 5 evenly spread
slices, and for the phantom's organ and lesion, and how many cases the limit would leave to
the network's border; writes ``benchmarks/results/class-contrast.txt``.
"""

from __future__ import annotations

import numpy as np

from benchmarks.cases import AXIAL, Case, data_available, load_case, painted, split_names
from benchmarks.class_split_lesion import phantom_case
from benchmarks.real_data import RESULTS
from training_backend.config import PredictConfig
from training_backend.postprocess import class_contrast
from training_backend.simulate import spread_slices

SLICE_COUNTS = (2, 3, 5)


def contrast_of(case: Case, k: int) -> float:
    _, annotation = painted(case, spread_slices(case.truth, AXIAL, k))
    return float(class_contrast(case.image, annotation)[0, 1])


def summary_line(name: str, values: np.ndarray, limit: float) -> str:
    undefined = int(np.isnan(values).sum())
    known = values[~np.isnan(values)]
    if known.size == 0:
        return f"{name}: {len(values)} cases, none with enough voxels of both classes"
    return (
        f"{name}: {len(values)} cases, median {np.median(known):.2f}, 95th percentile "
        f"{np.percentile(known, 95):.2f}, max {known.max():.2f}; at or above {limit:g}: "
        f"{int((known >= limit).sum())}; too few voxels to compare: {undefined}"
    )


def main() -> int:
    limit = PredictConfig().prior_class_max_contrast
    assert limit is not None
    lines = [f"Contrast between classes 1 and 2 on the annotated slices (limit {limit:g})", ""]
    if data_available():
        for split in ("train", "test"):
            cases = [load_case(name) for name in split_names(split)]
            for k in SLICE_COUNTS:
                values = np.array([contrast_of(case, k) for case in cases])
                lines.append(summary_line(f"hippocampus {split}, k = {k}", values, limit))
    else:
        lines.append("hippocampus: data not found (../shared/data/hippocampus)")
    for seed in (0, 1, 2):
        case = phantom_case(seed)
        values = ", ".join(f"k = {k}: {contrast_of(case, k):.2f}" for k in SLICE_COUNTS)
        lines.append(f"phantom seed {seed} (organ, lesion): {values}")
    text = "\n".join(lines) + "\n"
    (RESULTS / "class-contrast.txt").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
