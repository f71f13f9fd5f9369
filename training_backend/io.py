"""Read and write 3D volumes (NIfTI, TIFF) without losing their geometry.

Arrays are kept in the order the file stores them: NIfTI as nibabel gives them (no
reorientation), TIFF as tifffile gives them, i.e. (Z, Y, X). The :class:`Geometry` carries the
affine, the voxel sizes and, for NIfTI, the full source header, so that a label volume written
next to its image opens aligned in any viewer.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel
import nibabel.affines
import numpy as np
import tifffile
from nibabel.nifti1 import Nifti1Header, Nifti1Image
from nibabel.nifti2 import Nifti2Header, Nifti2Image

from training_backend.atomic import atomic_path
from training_backend.errors import VolumeError

SUPPORTED_SUFFIXES = (".nii", ".nii.gz", ".tif", ".tiff")

_ACCEPTED = (
    "accepted: a single-channel 3D volume (or a 2D image, read as one slice) "
    "in .nii, .nii.gz, .tif or .tiff"
)
_GZIP_MAGIC = b"\x1f\x8b"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG"
_JPEG_MAGIC = b"\xff\xd8\xff"
_NIFTI_UNITS_TO_IMAGEJ = {"mm": "mm", "micron": "micron", "meter": "m"}


@dataclass(eq=False)
class Geometry:
    """Where the voxels sit in the world.

    ``affine`` maps a voxel index in array order to world millimetres; ``zooms`` is the voxel
    size along each array axis; ``nifti_header`` is a copy of the source NIfTI header (None for
    TIFF) so that a written NIfTI keeps the source's codes, units and description.
    """

    affine: np.ndarray
    zooms: tuple[float, float, float]
    source_format: str
    nifti_header: Nifti1Header | None = None

    def __post_init__(self) -> None:
        affine = np.array(self.affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise VolumeError(
                f"Invalid geometry: the affine must be a finite 4x4 matrix, got shape "
                f"{affine.shape}."
            )
        zooms = tuple(float(z) for z in self.zooms)
        if len(zooms) != 3:
            raise VolumeError(f"Invalid geometry: expected 3 voxel sizes, got {zooms}.")
        if self.source_format not in ("nifti", "tiff"):
            raise VolumeError(
                f"Invalid geometry: source format {self.source_format!r} is not 'nifti' or 'tiff'."
            )
        self.affine = affine
        self.zooms = (zooms[0], zooms[1], zooms[2])

    def axis_codes(self) -> tuple[str, str, str]:
        """World direction of each array axis, e.g. ``('R', 'A', 'S')``."""
        codes = nibabel.aff2axcodes(self.affine)
        return (str(codes[0]), str(codes[1]), str(codes[2]))

    def to_json(self) -> dict[str, Any]:
        """Affine, zooms and source format as plain JSON types (the header is left out)."""
        return {
            "affine": self.affine.tolist(),
            "zooms": list(self.zooms),
            "source_format": self.source_format,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Geometry:
        """Rebuild a geometry written by :meth:`to_json` (without a NIfTI header)."""
        try:
            return cls(
                affine=np.asarray(d["affine"], dtype=np.float64),
                zooms=tuple(d["zooms"]),  # type: ignore[arg-type]
                source_format=str(d["source_format"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VolumeError(
                f"Invalid geometry record {d!r}: expected keys 'affine' (4x4), 'zooms' (3 numbers) "
                f"and 'source_format' ('nifti' or 'tiff')."
            ) from exc


@dataclass(eq=False)
class Volume:
    """A 3D array in stored order, its geometry and the file it came from."""

    array: np.ndarray
    geometry: Geometry
    path: Path | None = None


def format_for(path: str | os.PathLike[str]) -> str:
    """``"nifti"`` or ``"tiff"`` from the file name's suffix (case-insensitive)."""
    name = Path(os.fspath(path)).name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    raise VolumeError(
        f"'{path}' is not a supported volume file: its extension is not one of "
        f"{', '.join(SUPPORTED_SUFFIXES)}. Convert it to NIfTI or TIFF."
    )


def _canonical_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".nii.gz", ".nii", ".tiff", ".tif"):
        if name.endswith(suffix):
            return suffix
    raise AssertionError("format_for accepted an unknown suffix")  # pragma: no cover


# --------------------------------------------------------------------------------------- read


def read_volume(path: str | os.PathLike[str]) -> Volume:
    """Read a NIfTI or TIFF file as a 3D :class:`Volume`, keeping dtype, order and geometry.

    Raises :class:`VolumeError` for anything that is not a readable single-channel 3D (or 2D)
    volume: missing file, folder, unknown extension, wrong content, corrupt or truncated data,
    4D time series, colour images, empty arrays.
    """
    p = Path(os.fspath(path))
    _check_exists(p)
    fmt = format_for(p)
    head = _sniff(p)
    if fmt == "nifti":
        _check_nifti_magic(p, head)
        array, geometry = _read_nifti(p)
    else:
        _check_tiff_magic(p, head)
        array, geometry = _read_tiff(p)
    return Volume(array=array, geometry=geometry, path=p)


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise VolumeError(f"'{path}' does not exist. Check the file name and folder.")
    if path.is_dir():
        raise VolumeError(f"'{path}' is a folder, not a volume file. Choose a file inside it.")


def _sniff(path: Path) -> bytes:
    """The first bytes of ``path``; VolumeError for an unreadable or empty file."""
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise VolumeError(
            f"'{path}' cannot be opened ({exc.strerror or exc}). Check that you may read it."
        ) from exc
    if not head:
        raise VolumeError(f"'{path}' is empty (0 bytes). Re-export or copy the file again.")
    return head


def _check_nifti_magic(path: Path, head: bytes) -> None:
    compressed = path.name.lower().endswith(".gz")
    if head.startswith(_TIFF_MAGICS):
        raise VolumeError(
            f"'{path}' is named like a NIfTI file but holds TIFF data. Rename it to .tif."
        )
    if head.startswith((_PNG_MAGIC, _JPEG_MAGIC)):
        raise VolumeError(
            f"'{path}' is named like a NIfTI file but holds a PNG/JPEG picture; {_ACCEPTED}."
        )
    if compressed and not head.startswith(_GZIP_MAGIC):
        raise VolumeError(
            f"'{path}' ends in .gz but is not gzip-compressed. If it is an uncompressed NIfTI, "
            "rename it to .nii."
        )
    if not compressed and head.startswith(_GZIP_MAGIC):
        raise VolumeError(f"'{path}' is gzip-compressed but named .nii. Rename it to .nii.gz.")


def _check_tiff_magic(path: Path, head: bytes) -> None:
    if head.startswith(_TIFF_MAGICS):
        return
    what = "gzip-compressed (NIfTI?) data" if head.startswith(_GZIP_MAGIC) else "no TIFF data"
    raise VolumeError(
        f"'{path}' is named like a TIFF file but holds {what}; {_ACCEPTED}. "
        "Check the file or give it its proper extension."
    )


def _corrupt(path: Path, kind: str, detail: BaseException | str) -> VolumeError:
    if isinstance(detail, BaseException):
        detail = f"{type(detail).__name__}: {detail}".strip().rstrip(":")
    return VolumeError(
        f"'{path}' could not be read as {kind}: the file is truncated or corrupt ({detail}). "
        "Re-export it or copy it again."
    )


def _shape_to_3d(path: Path, shape: tuple[int, ...], fmt: str) -> tuple[int, ...]:
    """Validate the stored shape; return the 3D shape the array will get."""
    if any(n == 0 for n in shape):
        raise VolumeError(f"'{path}' is empty: shape {shape} has a zero-size axis; {_ACCEPTED}.")
    ndim = len(shape)
    if ndim == 4 and shape[3] == 1:
        return shape[:3]
    if ndim == 3:
        return shape
    if ndim == 2:
        return (*shape, 1) if fmt == "nifti" else (1, *shape)
    if ndim == 4:
        raise VolumeError(
            f"'{path}' is 4D with shape {shape} (a time series or several channels); "
            f"{_ACCEPTED}. Save a single 3D volume (one time point / one channel)."
        )
    raise VolumeError(f"'{path}' has {ndim} dimensions (shape {shape}); {_ACCEPTED}.")


def _to_native(array: np.ndarray) -> np.ndarray:
    """The same values in native byte order (torch rejects byte-swapped arrays)."""
    if array.dtype.byteorder not in ("=", "|"):
        return array.astype(array.dtype.newbyteorder("="))
    return array


def _read_nifti(path: Path) -> tuple[np.ndarray, Geometry]:
    try:
        img = nibabel.load(path, mmap=False)
    except Exception as exc:
        raise _corrupt(path, "NIfTI", exc) from exc
    if not isinstance(img, Nifti1Image):
        raise VolumeError(f"'{path}' is not a NIfTI-1/NIfTI-2 image ({type(img).__name__}).")
    header = img.header
    stored = header.get_data_dtype()
    if stored.fields is not None:
        raise VolumeError(
            f"'{path}' is a colour (RGB/RGBA) NIfTI with data type {stored}; {_ACCEPTED}. "
            "Convert it to a grey-level volume."
        )
    if stored.kind == "c":
        raise VolumeError(f"'{path}' holds complex values ({stored}); {_ACCEPTED}.")
    shape = tuple(int(n) for n in img.shape)
    shape3 = _shape_to_3d(path, shape, "nifti")
    # nibabel moves scl_slope/scl_inter from the header into the array proxy on load.
    proxy = img.dataobj
    slope = float(getattr(proxy, "slope", 1.0))
    inter = float(getattr(proxy, "inter", 0.0))
    try:
        if slope != 1.0 or inter != 0.0:
            data = np.asarray(img.get_fdata(dtype=np.float32))
        elif hasattr(proxy, "get_unscaled"):
            data = np.asarray(proxy.get_unscaled())
        else:
            data = np.asarray(np.asanyarray(proxy))
        data = _to_native(data.reshape(shape3))
    except Exception as exc:
        raise _corrupt(path, "NIfTI", exc) from exc
    try:
        zooms = [float(z) for z in header.get_zooms()[:3]]
        zooms += [1.0] * (3 - len(zooms))
        geometry = Geometry(
            affine=np.array(img.affine, dtype=np.float64),
            zooms=(zooms[0], zooms[1], zooms[2]),
            source_format="nifti",
            nifti_header=header.copy(),
        )
    except Exception as exc:
        raise VolumeError(
            f"'{path}' has an unusable orientation in its header (affine, sform/qform or voxel "
            f"sizes: {exc}). Fix the header or re-export the file."
        ) from exc
    return data, geometry


def _rational(value: Any) -> float | None:
    """A TIFF RATIONAL tag value as a float (None when unusable)."""
    try:
        if isinstance(value, tuple | list):
            num, den = float(value[0]), float(value[1])
            result = num / den if den else float("nan")
        else:
            result = float(value)
    except (TypeError, ValueError, IndexError):
        return None
    return result if np.isfinite(result) and result > 0 else None


def _size_from_resolution(page: Any, tag: str, honour: bool) -> float:
    res = _rational(page.tags[tag].value) if honour and tag in page.tags else None
    return 1.0 / res if res else 1.0


def _tiff_zooms(tf: tifffile.TiffFile) -> tuple[float, float, float]:
    """(z, y, x) voxel sizes from ImageJ ``spacing`` and the X/YResolution tags, else 1.0."""
    page = tf.pages[0]
    meta: dict[str, Any] = dict(tf.imagej_metadata or {})
    if not meta and tf.shaped_metadata:
        meta = dict(tf.shaped_metadata[0])
    spacing = _rational(meta.get("spacing"))
    unit_tag = page.tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2  # TIFF default: inch
    # Resolution in dots per inch outside ImageJ files is a print setting (72 dpi...), not a
    # voxel size: ignore it rather than make the volume look wildly anisotropic.
    honour = tf.imagej_metadata is not None or unit != 2
    y = _size_from_resolution(page, "YResolution", honour)
    x = _size_from_resolution(page, "XResolution", honour)
    return (spacing or 1.0, y, x)


class _ErrorLog(logging.Filter):
    """Collects (and silences) the errors tifffile logs while it recovers from damaged files."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self.errors.append(record.getMessage())
            return False
        if record.levelno >= logging.WARNING:
            self.warnings.append(record.getMessage())
        return True


@contextlib.contextmanager
def _tifffile_errors() -> Iterator[_ErrorLog]:
    logger = logging.getLogger("tifffile")
    log = _ErrorLog()
    logger.addFilter(log)
    try:
        yield log
    finally:
        logger.removeFilter(log)


def _read_tiff(path: Path) -> tuple[np.ndarray, Geometry]:
    # tifffile logs an error and returns what it could read from a damaged file: a truncated
    # stack would silently lose slices, so any logged error is treated as corruption.
    try:
        with _tifffile_errors() as log, tifffile.TiffFile(path) as tf:
            try:
                data, shape3, zooms = _read_tiff_content(path, tf)
            except VolumeError as exc:
                if log.errors or (not tf.series and log.warnings):
                    raise _corrupt(path, "TIFF", (log.errors or log.warnings)[0]) from exc
                raise
            if log.errors:
                raise _corrupt(path, "TIFF", log.errors[0])
            data = _to_native(data.reshape(shape3))
    except VolumeError:
        raise
    except Exception as exc:
        raise _corrupt(path, "TIFF", exc) from exc
    affine = np.diag([zooms[0], zooms[1], zooms[2], 1.0])
    return data, Geometry(affine=affine, zooms=zooms, source_format="tiff")


def _read_tiff_content(
    path: Path, tf: tifffile.TiffFile
) -> tuple[np.ndarray, tuple[int, ...], tuple[float, float, float]]:
    if not tf.series:
        raise VolumeError(f"'{path}' holds no image; {_ACCEPTED}.")
    series = tf.series[0]
    page = tf.pages[0]
    samples = int(getattr(page, "samplesperpixel", 1))
    shape = tuple(int(n) for n in series.shape)
    if samples > 1 or page.photometric == tifffile.PHOTOMETRIC.RGB:
        raise VolumeError(
            f"'{path}' is a colour (RGB/RGBA) or multi-sample TIFF with shape {shape} "
            f"(axes {series.axes}); {_ACCEPTED}. Convert it to grey levels (in Fiji: "
            "Image > Type > 8-bit or 16-bit); a 3-slice stack saved as RGB must be "
            "re-saved as a grey-level stack."
        )
    shape3 = _shape_to_3d(path, shape, "tiff")
    data = np.asarray(series.asarray())
    return data, shape3, _tiff_zooms(tf)


# -------------------------------------------------------------------------------------- write


def _output_dtype(path: Path, array: np.ndarray) -> np.dtype[Any]:
    """uint8 / int16 / int32 for integer (label) arrays by value range, float32 for floats."""
    if array.dtype == np.bool_:
        return np.dtype(np.uint8)
    if array.dtype.kind in "iu":
        lo, hi = int(array.min()), int(array.max())
        if lo >= 0 and hi <= 255:
            return np.dtype(np.uint8)
        for candidate in (np.int16, np.int32):
            info = np.iinfo(candidate)
            if lo >= info.min and hi <= info.max:
                return np.dtype(candidate)
        raise VolumeError(
            f"Cannot write '{path}': integer values {lo}..{hi} do not fit in 32-bit integers."
        )
    if array.dtype.kind == "f":
        return np.dtype(np.float32)
    raise VolumeError(
        f"Cannot write '{path}': data type {array.dtype} is not supported "
        "(accepted: integer, boolean or floating-point arrays)."
    )


def write_volume(path: str | os.PathLike[str], array: np.ndarray, geometry: Geometry) -> Path:
    """Write ``array`` with ``geometry`` to ``path`` atomically; the format follows the suffix.

    Integer arrays are stored as uint8 (0..255), else int16/int32; floats as float32. NIfTI
    output keeps the source header (codes, units, description) and reads back with exactly
    ``geometry.affine``. TIFF output carries ImageJ spacing and resolution. The folder must
    exist and be writable; on any failure no partial or temporary file is left.
    """
    p = Path(os.fspath(path))
    fmt = format_for(p)
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise VolumeError(
            f"Cannot write '{p}': expected a 3D array, got shape {arr.shape} ({arr.ndim}D)."
        )
    if arr.size == 0:
        raise VolumeError(f"Cannot write '{p}': the array is empty (shape {arr.shape}).")
    parent = p.parent
    if not parent.is_dir():
        raise VolumeError(
            f"Cannot write '{p}': the export folder '{parent}' does not exist. "
            "Choose an existing folder."
        )
    if p.is_dir():
        raise VolumeError(f"Cannot write '{p}': a folder with that name already exists.")
    out = arr.astype(_output_dtype(p, arr), copy=False)
    if fmt == "nifti":
        _atomic_write(p, lambda tmp: _write_nifti(tmp, out, geometry))
    else:
        _atomic_write(p, lambda tmp: _write_tiff(tmp, out, geometry))
    return p


def _atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    """Run ``writer`` on a temporary file next to ``path``, then move it into place."""
    created = False
    try:
        with atomic_path(path, suffix=_canonical_suffix(path)) as temporary:
            created = True
            writer(temporary)
    except VolumeError:
        raise
    except Exception as exc:
        if not created and isinstance(exc, OSError):
            raise VolumeError(
                f"Cannot write '{path}': the export folder '{path.parent}' is not writable "
                f"({exc.strerror or exc}). Choose a folder you may write to."
            ) from exc
        raise VolumeError(
            f"Cannot write '{path}': {type(exc).__name__}: {exc}. Nothing was written; check "
            "the free disk space and that the folder is writable."
        ) from exc


def _write_nifti(tmp: Path, data: np.ndarray, geometry: Geometry) -> None:
    affine = geometry.affine
    source = geometry.nifti_header
    if source is None:
        img = Nifti1Image(data, affine)
        img.header.set_data_dtype(data.dtype)
        img.header.set_slope_inter(1.0, 0.0)
        img.header.set_sform(affine, code=1)
        img.header.set_qform(affine, code=1)
        nibabel.save(img, tmp)
        return
    hdr = source.copy()
    image_class = Nifti2Image if isinstance(hdr, Nifti2Header) else Nifti1Image
    hdr.set_data_shape(data.shape)
    hdr.set_data_dtype(data.dtype)
    hdr.set_slope_inter(1.0, 0.0)
    _set_forms(hdr, source, affine, geometry.zooms)
    # affine=None: nibabel must not rewrite the forms we just set.
    img = image_class(data, None, header=hdr)
    nibabel.save(img, tmp)


def _set_forms(
    hdr: Nifti1Header, source: Nifti1Header, affine: np.ndarray, zooms: tuple[float, ...]
) -> None:
    """Set pixdim, sform and qform so that nibabel's best affine is ``affine``.

    The source's codes are kept. When the affine is the source's own, the source's sform,
    qform and pixdim are left exactly as they were.
    """
    q_code = int(source["qform_code"])
    s_code = int(source["sform_code"])
    unchanged = np.allclose(affine, source.get_best_affine(), rtol=0, atol=1e-9)
    if unchanged and (q_code > 0 or s_code > 0):
        return
    hdr.set_zooms(zooms)
    if s_code > 0:
        hdr.set_sform(affine, code=s_code)
        if q_code > 0:
            hdr.set_qform(affine, code=q_code)
    elif q_code > 0:
        hdr.set_qform(affine, code=q_code)
        if not np.allclose(hdr.get_qform(), affine, rtol=0, atol=1e-5):
            # A shear the quaternion cannot hold: the sform must carry the affine.
            hdr.set_sform(affine, code=2)
    elif not np.allclose(hdr.get_base_affine(), affine, rtol=0, atol=1e-6):
        # No code in the source but a real affine to keep: store it as "aligned".
        hdr.set_sform(affine, code=2)


def _write_tiff(tmp: Path, data: np.ndarray, geometry: Geometry) -> None:
    z, y, x = geometry.zooms
    resolution = (1.0 / x, 1.0 / y)
    # ImageJ files cannot hold planes one pixel wide (tifffile squeezes such an axis away).
    if data.dtype in (np.uint8, np.int16, np.float32) and min(data.shape[1:]) > 1:
        metadata: dict[str, Any] = {"axes": "ZYX", "spacing": z}
        header = geometry.nifti_header
        if header is not None:
            unit = _NIFTI_UNITS_TO_IMAGEJ.get(str(header.get_xyzt_units()[0]))
            if unit:
                metadata["unit"] = unit
        tifffile.imwrite(
            tmp,
            data,
            imagej=True,
            photometric="minisblack",
            resolution=resolution,
            metadata=metadata,
        )
    else:
        # int32 (or planes one pixel wide) is beyond ImageJ: a plain TIFF whose JSON description
        # carries the shape and the spacing.
        tifffile.imwrite(
            tmp,
            data,
            photometric="minisblack",
            resolution=resolution,
            resolutionunit="NONE",
            metadata={"axes": "ZYX", "spacing": z},
        )


# ----------------------------------------------------------------------------- orientation

OBLIQUE_TOLERANCE_DEGREES = 0.1
"""Voxel axes further than this from the nearest world axis make a volume oblique."""


def obliquity_degrees(geometry: Geometry) -> float:
    """The largest angle, in degrees, between a voxel axis and its nearest world axis."""
    angles = nibabel.affines.obliquity(geometry.affine)
    return float(np.degrees(np.max(np.abs(angles)))) if np.all(np.isfinite(angles)) else 0.0


def oblique_warning(volume: Volume) -> str | None:
    """A warning for a volume whose voxel grid is rotated against the world axes, else None.

    Oblique volumes are read, trained on and exported in their own voxel grid, and exports
    carry the source's affine, so they stay aligned in any viewer that applies the affine;
    napari (and anything else that ignores rotations) shows them unrotated.
    """
    angle = obliquity_degrees(volume.geometry)
    if angle <= OBLIQUE_TOLERANCE_DEGREES:
        return None
    name = volume.path.name if volume.path is not None else "the volume"
    return (
        f"{name} is oblique: its voxel axes are up to {angle:.1f} degrees off the world axes. "
        "It is shown and segmented in its own voxel grid (napari does not rotate it); "
        "exports keep its exact affine, so they stay aligned with it in other viewers."
    )


def default_slice_axis(geometry: Geometry) -> int:
    """The array axis to slice along: closest to superior-inferior for NIfTI, 0 for TIFF."""
    if geometry.source_format == "tiff":
        return 0
    ornt = nibabel.orientations.io_orientation(geometry.affine)
    for axis in range(3):
        if ornt[axis, 0] == 2:
            return axis
    # Degenerate affine: fall back to the largest S component per array axis.
    columns = geometry.affine[:3, :3]
    norms = np.linalg.norm(columns, axis=0)
    scores = np.divide(np.abs(columns[2]), norms, out=np.zeros(3), where=norms > 0)
    return int(np.argmax(scores)) if np.any(scores > 0) else 2
