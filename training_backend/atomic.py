"""Write a file so that readers see the old one or the new one, never half of it.

One mechanism for every file this project writes in place (models, masks, previews, session
state, requests between processes): write a unique temporary file beside the target, flush it
to disk, then rename it over the target. On any error, Ctrl-C included, the temporary file is
removed and the target is untouched. Torch-free, so the napari plugin uses it too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a new, empty temporary file beside ``path`` (ending in ``suffix``, for writers
    that choose the format by extension); when the block ends without error the file is
    synced and moved over ``path``. It is created with the usual permissions (0666 less the
    umask), as a direct write would be."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield temporary
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def copy_file(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Replace ``target`` with a copy of ``source`` atomically."""
    with atomic_path(target) as temporary:
        shutil.copyfile(source, temporary)
    return Path(target)
