"""The napari manifest: valid, as the issue specifies, installed, and packaged in the wheel."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

npe2 = pytest.importorskip("npe2", reason="npe2 comes with the [test] extra")

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "napari.yaml"
# What a package build needs; tests, benchmarks and build outputs stay behind.
SOURCES = (
    "pyproject.toml",
    "setup.py",
    "MANIFEST.in",
    "README.md",
    "napari.yaml",
    "napari_crii",
    "training_backend",
)


def load_manifest(path: Path = MANIFEST):
    return npe2.PluginManifest.from_file(path)


def test_manifest_is_valid_and_complete() -> None:
    manifest = load_manifest()
    assert manifest.name == "napari-crii"
    assert manifest.display_name == "CRII-Net segmentation"
    contributions = manifest.contributions
    commands = {c.id: c.python_name for c in contributions.commands}
    assert commands == {
        "napari-crii.make_widget": "napari_crii._widget:CriiWidget",
        "napari-crii.get_reader": "napari_crii._reader:get_reader",
        "napari-crii.write_labels": "napari_crii._writer:write_labels",
        "napari-crii.make_sample_data": "napari_crii._sample_data:make_sample_data",
    }
    [widget] = contributions.widgets
    assert widget.command == "napari-crii.make_widget"
    assert widget.display_name == "CRII-Net: train from a few slices"
    [reader] = contributions.readers
    assert reader.command == "napari-crii.get_reader"
    assert sorted(reader.filename_patterns) == ["*.nii", "*.nii.gz", "*.tif", "*.tiff"]
    [writer] = contributions.writers
    assert writer.command == "napari-crii.write_labels"
    assert [str(t) for t in writer.layer_types] == ["labels"]
    assert writer.filename_extensions == [".nii.gz", ".nii", ".tif", ".tiff"]
    [sample] = contributions.sample_data
    assert (sample.key, sample.display_name) == ("phantom", "CRII phantom (4% annotated)")
    assert sample.command == "napari-crii.make_sample_data"


def test_manifest_python_names_resolve() -> None:
    """Every command imports; the widget only once its module exists (built in parallel)."""
    from npe2.manifest.utils import import_python_name

    for command in load_manifest().contributions.commands:
        module = command.python_name.partition(":")[0]
        if importlib.util.find_spec(module) is None and command.id.endswith("make_widget"):
            continue
        assert callable(import_python_name(command.python_name)), command.python_name


def test_installed_distribution_provides_the_root_manifest() -> None:
    [entry] = [
        ep
        for ep in metadata.distribution("napari-crii").entry_points
        if ep.group == "napari.manifest"
    ]
    assert entry.value == "napari_crii:napari.yaml"
    installed = Path(importlib.util.find_spec("napari_crii").origin).parent / "napari.yaml"
    assert installed.is_file(), f"{installed} is missing: run `bash scripts/setup.sh` again"
    assert installed.read_bytes() == MANIFEST.read_bytes(), (
        f"{installed} differs from {MANIFEST}: run `bash scripts/setup.sh` again"
    )
    manager = npe2.PluginManager()
    manager.discover()
    assert manager.get_manifest("napari-crii").display_name == "CRII-Net segmentation"


def test_npe2_validate_command_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-crii"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def run(args: list[str], cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_sdist_and_wheel_ship_the_root_manifest(tmp_path: Path) -> None:
    """From a clean copy: sdist, then a wheel from the unpacked sdist, offline."""
    source = tmp_path / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "napari.yaml")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    assert not (source / "napari_crii" / "napari.yaml").exists()
    code = "import setuptools.build_meta as b, sys; print(b.build_sdist(sys.argv[1]))"
    output = run([sys.executable, "-c", code, str(tmp_path / "sdist")], source)
    sdist = tmp_path / "sdist" / output.strip().splitlines()[-1]
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "unpacked", **safe)
    [unpacked] = (tmp_path / "unpacked").iterdir()
    assert (unpacked / "napari.yaml").read_bytes() == MANIFEST.read_bytes()
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    run([*pip, "-w", str(wheels), str(unpacked)], tmp_path)
    [wheel] = wheels.glob("napari_crii-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert zf.read("napari_crii/napari.yaml") == MANIFEST.read_bytes()
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = zf.read(entry_points).decode()
        zf.extract("napari_crii/napari.yaml", tmp_path / "extracted")
    assert "[napari.manifest]\nnapari-crii = napari_crii:napari.yaml" in text
    assert load_manifest(tmp_path / "extracted" / "napari_crii" / "napari.yaml").name == (
        "napari-crii"
    )
