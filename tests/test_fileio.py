"""Atomic output: the user's permissions, and an old file or folder kept until the new one
is complete."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from sum_jax import fileio


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_and_folders_get_the_umask_permissions(tmp_path, umask_027):
    fileio.atomic_write(tmp_path / "a.txt", "x")
    with fileio.atomic_dir(tmp_path / "model") as tmp:
        (tmp / "f").write_text("y")
    assert _mode(tmp_path / "a.txt") == 0o640  # 0666 & ~027, as open() would give
    assert _mode(tmp_path / "model") == 0o750  # 0777 & ~027, as mkdir() would give


def test_failed_write_keeps_the_old_folder(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "params").write_text("old")
    with pytest.raises(RuntimeError), fileio.atomic_dir(target) as tmp:
        (tmp / "params").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (target / "params").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no leftovers
    with fileio.atomic_dir(target) as tmp:
        (tmp / "params").write_text("new")
    assert (target / "params").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_refusals_name_the_path(tmp_path):
    (tmp_path / "model").mkdir()
    with (
        pytest.raises(FileExistsError, match="model already exists"),
        fileio.atomic_dir(tmp_path / "model", overwrite=False),
    ):
        pass
    (tmp_path / "file").write_text("x")
    with (
        pytest.raises(NotADirectoryError, match="file is a file"),
        fileio.atomic_dir(tmp_path / "file"),
    ):
        pass
    with pytest.raises(NotADirectoryError, match=r"--out=.*file/sub: .*file is a file"):
        fileio.check_output_dir(tmp_path / "file" / "sub", "--out")
    with pytest.raises(IsADirectoryError, match="model is a folder"):
        fileio.atomic_write(tmp_path / "model", "x")
    assert (tmp_path / "file").read_text() == "x"


def test_swap_in_replaces_the_folder_and_removes_the_old_copy(tmp_path):
    final, new = tmp_path / "model", tmp_path / ".model.partial"
    final.mkdir()
    (final / "params").write_text("old")
    new.mkdir()
    (new / "params").write_text("new")
    fileio.swap_in(new, final)
    assert (final / "params").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_swap_in_puts_the_old_copy_back_when_the_new_one_cannot_move_in(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "params").write_text("old")
    with pytest.raises(FileNotFoundError):
        fileio.swap_in(tmp_path / "never_written", final)
    assert (final / "params").read_text() == "old"
    assert not fileio.aside_path(final).exists()


def test_atomic_files_moves_a_result_in_whole(tmp_path):
    out = tmp_path / "out"
    with fileio.atomic_files(out, replaces=["a.txt", "b.txt", "c.txt"]) as staging:
        for name in ("a.txt", "b.txt", "c.txt"):
            (staging / name).write_text(f"old {name}")
    (out / "mine.txt").write_text("kept")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(OSError), fileio.atomic_files(out, replaces=["a.txt", "b.txt"]) as staging:
        (staging / "a.txt").write_text("new a")
        (staging / "b.txt").write_text("new b")
        raise OSError(errno.ENOSPC, "No space left on device")  # the third write
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging left
    with fileio.atomic_files(out, replaces=["a.txt", "b.txt", "c.txt"]) as staging:
        (staging / "a.txt").write_text("new a")
        (staging / "b.txt").write_text("new b")
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        "a.txt": "new a",
        "b.txt": "new b",  # c.txt, not written this time, is gone
        "mine.txt": "kept",
    }


def test_a_full_disk_names_the_file_being_written(tmp_path, monkeypatch):
    (tmp_path / "r.json").write_text("old")

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(tmp_path), "write_text", full)
    with pytest.raises(OSError) as e:
        fileio.atomic_write(tmp_path / "r.json", "new")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "r.json")
    monkeypatch.undo()
    assert (tmp_path / "r.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
