"""Build hook: ship the repository-root ``napari.yaml`` as ``napari_crii/napari.yaml``.

The manifest is kept once, at the repository root. A wheel gets a real copy of it inside the
package; an editable install gets ``napari_crii/napari.yaml`` (git-ignored) as a link to the
root file (a copy where links are not allowed), so edits show without reinstalling.
Everything else is configured in pyproject.toml.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
MANIFEST = "napari.yaml"
PACKAGE = "napari_crii"


class BuildPyWithManifest(build_py):
    """``build_py`` that also places the root napari.yaml inside the package."""

    def run(self) -> None:
        super().run()
        source = ROOT / MANIFEST
        if not source.is_file():
            raise FileNotFoundError(f"{source} is missing: the napari manifest cannot be packaged.")
        if self.editable_mode:
            _link_or_copy(source, ROOT / PACKAGE / MANIFEST)
        else:
            target = Path(self.build_lib) / PACKAGE / MANIFEST
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)  # never write through a stale link
            shutil.copyfile(source, target)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if not self.editable_mode:
            outputs.append(str(Path(self.build_lib) / PACKAGE / MANIFEST))
        return outputs


def _link_or_copy(source: Path, target: Path) -> None:
    if target.is_symlink() or target.exists():
        target.unlink()
    try:
        os.symlink(os.path.relpath(source, target.parent), target)
    except OSError:
        shutil.copyfile(source, target)


setup(cmdclass={"build_py": BuildPyWithManifest})
