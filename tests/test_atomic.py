"""The one atomic-write mechanism: the target is the old file or the new one, never half."""

from __future__ import annotations

import os
import stat

import pytest

from training_backend.atomic import atomic_path, copy_file, write_text


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_a_finished_block_replaces_the_target(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")
    with atomic_path(target, suffix=".json") as temporary:
        assert temporary.parent == tmp_path and temporary.name.endswith(".json")
        assert temporary.exists() and temporary.stat().st_size == 0
        temporary.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the block ends
    assert target.read_text() == "new"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_an_error_leaves_the_target_and_no_temporary(tmp_path, error):
    target = tmp_path / "model.pt"
    target.write_bytes(b"good")
    with pytest.raises(type(error)), atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        raise error
    assert target.read_bytes() == b"good"
    assert _leftovers(tmp_path) == []


def test_two_writers_get_different_temporary_files(tmp_path):
    target = tmp_path / "x"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second
        first.write_text("1")
        second.write_text("2")
    assert target.read_text() == "1"  # the outer block ends last and wins
    assert _leftovers(tmp_path) == []


def test_permissions_follow_the_umask_like_a_direct_write(tmp_path):
    previous = os.umask(0o027)
    try:
        path = write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_copy_and_text_helpers(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"\x00\x01payload")
    assert copy_file(source, tmp_path / "dst.bin").read_bytes() == b"\x00\x01payload"
    assert write_text(tmp_path / "t.txt", "héllo\n").read_text(encoding="utf-8") == "héllo\n"
    with pytest.raises(FileNotFoundError):
        copy_file(tmp_path / "missing", tmp_path / "dst.bin")
    assert (tmp_path / "dst.bin").read_bytes() == b"\x00\x01payload"
    assert _leftovers(tmp_path) == []
