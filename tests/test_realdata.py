"""On a real hippocampus MRI: 3 annotated axial slices, `crii train`, then `crii predict`.

The refined mask must sit in the image's exact geometry and beat shape-based interpolation
between the same 3 slices (the tool a clinician would otherwise use).
"""

import nibabel as nib
import numpy as np
import pytest

from training_backend.annotations import SparseAnnotation
from training_backend.cli import main
from training_backend.metrics import mean_dice
from training_backend.prior import interpolate_labels
from training_backend.simulate import sparse_labels, spread_slices

CASE = "hippocampus_001"
AXIAL = 2


@pytest.mark.realdata
@pytest.mark.slow
def test_crii_beats_interpolation_on_a_real_case(hippocampus, tmp_path, capsys):
    image = hippocampus / "images" / f"{CASE}.nii.gz"
    truth_image = nib.load(str(hippocampus / "labels" / f"{CASE}.nii.gz"))
    truth = np.asarray(truth_image.dataobj).astype(np.int64)
    slices = spread_slices(truth, AXIAL, 3)
    painted = sparse_labels(truth, AXIAL, slices).astype(np.uint8)
    labels = tmp_path / "painted.nii.gz"
    nib.save(nib.Nifti1Image(painted, truth_image.affine, truth_image.header), str(labels))

    code = main(["train", "--image", str(image), "--labels", str(labels), "--out",
                 str(tmp_path / "run"), "--iterations", "300", "--device", "cpu", "--seed", "0",
                 "--set", "train.preview_seconds=0"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    mask_path = tmp_path / "mask.nii.gz"
    code = main(["predict", "--model", str(tmp_path / "run" / "model.pt"), "--image",
                 str(image), "--out", str(mask_path), "--device", "cpu"])  # fmt: skip
    assert code == 0

    source, mask = nib.load(str(image)), nib.load(str(mask_path))
    assert mask.shape == source.shape
    np.testing.assert_array_equal(mask.affine, source.affine)
    annotated = SparseAnnotation.from_labels(painted, truth.shape, AXIAL).annotated
    interpolated = interpolate_labels(painted, annotated, AXIAL, 3, extrapolate=True)
    refined_dice = mean_dice(np.asarray(mask.dataobj), truth, 3)
    interpolation_dice = mean_dice(interpolated, truth, 3)
    print(f"{CASE}: slices {slices}, refined Dice {refined_dice:.3f}, "
          f"interpolation Dice {interpolation_dice:.3f}")  # fmt: skip
    assert refined_dice > interpolation_dice
