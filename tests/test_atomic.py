"""``m2ae.atomic``: the output-location checks every command runs before it computes, and
the removal of the temporary files that killed runs leave behind."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from m2ae import atomic
from m2ae.atomic import atomic_path, check_output_dir, check_output_file, remove_stale_temps, write_text
from m2ae.errors import UserError


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def temp_name(dest: str, pid: int | None) -> str:
    """A temporary name as ``atomic_path`` makes it (``pid=None``: the form before pids were recorded)."""
    middle = "" if pid is None else f"{pid}-"
    return f".{dest}.{middle}{uuid.uuid4().hex}.tmp"


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (pids are not reused this quickly)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of another process that is still running."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


# ---- check_output_dir ------------------------------------------------------------------------


def test_output_dir_accepts_existing_and_future_folders_and_creates_nothing(tmp_path: Path) -> None:
    assert check_output_dir(tmp_path) == tmp_path
    assert check_output_dir(tmp_path / "a" / "b", "--out") == tmp_path / "a" / "b"
    assert tree(tmp_path) == []


def test_output_dir_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "report"
    target.write_text("x")
    with pytest.raises(UserError, match=r"^--out .*report: is a file, not a folder$"):
        check_output_dir(target, "--out")
    assert target.read_text() == "x"


def test_output_dir_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(UserError) as info:
        check_output_dir(tmp_path / "blocker" / "sub" / "deeper", "--models")
    message = str(info.value)
    assert message.startswith(f"--models {tmp_path / 'blocker' / 'sub' / 'deeper'}:")
    assert f"cannot create a folder under {tmp_path / 'blocker'}, which is a file" in message
    assert tree(tmp_path) == ["blocker"]


@pytest.mark.parametrize(
    "code, reason",
    [(errno.EROFS, "read-only filesystem"), (errno.EACCES, "permission denied"), (errno.EPERM, "permission denied"),
     (errno.ENOSPC, "the disk is full"), (errno.EIO, "Input/output error")],
)
def test_output_dir_probe_failures_say_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int,
                                           reason: str) -> None:
    # Root passes every permission check, so the probe's failures are simulated.
    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code), str(self))

    monkeypatch.setattr(Path, "touch", refuse)
    with pytest.raises(UserError, match=reason) as info:
        check_output_dir(tmp_path / "new", "--out")
    assert f"(its nearest existing folder {tmp_path})" in str(info.value)
    with pytest.raises(UserError, match=f"^--out {tmp_path}: cannot write there: .*{reason}$"):
        check_output_dir(tmp_path, "--out")


def test_output_dir_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    for _ in range(3):
        check_output_dir(tmp_path / "x")
        check_output_file(tmp_path / "y.json")
    assert tree(tmp_path) == []


# ---- check_output_file -----------------------------------------------------------------------


def test_output_file_accepts_new_and_existing_files(tmp_path: Path) -> None:
    existing = tmp_path / "old.json"
    existing.write_text("{}")
    assert check_output_file(existing, "--json") == existing
    assert check_output_file(tmp_path / "new" / "dir" / "r.json", "--json") == tmp_path / "new" / "dir" / "r.json"
    assert tree(tmp_path) == ["old.json"]
    assert existing.read_text() == "{}"


def test_output_file_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^--json .*: is a folder; give a file name$"):
        check_output_file(tmp_path, "--json")


def test_output_file_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(UserError, match="which is a file"):
        check_output_file(tmp_path / "blocker" / "r.json", "--json")
    with pytest.raises(UserError, match="which is a file"):
        check_output_file(tmp_path / "blocker" / "a" / "r.json", "--json")
    assert tree(tmp_path) == ["blocker"]


def test_output_file_on_a_read_only_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic, "_probe_writable", lambda folder: "it is on a read-only filesystem")
    with pytest.raises(UserError, match=f"^--out {tmp_path / 'e.engine'}: cannot write there .*read-only"):
        check_output_file(tmp_path / "e.engine")


# ---- remove_stale_temps ----------------------------------------------------------------------


def test_stale_temps_of_dead_writers_are_removed(tmp_path: Path, dead_pid: int) -> None:
    stale = [tmp_path / temp_name("model.onnx", dead_pid), tmp_path / temp_name("results.json", None)]
    for path in stale:
        path.write_bytes(b"half a file")
    (tmp_path / "model.onnx").write_bytes(b"whole")
    assert sorted(remove_stale_temps(tmp_path)) == sorted(stale)
    assert tree(tmp_path) == ["model.onnx"]


def test_temps_of_running_writers_are_kept(tmp_path: Path, live_pid: int) -> None:
    mine = tmp_path / temp_name("a.json", os.getpid())
    theirs = tmp_path / temp_name("b.json", live_pid)
    for path in (mine, theirs):
        path.write_text("in progress")
    assert remove_stale_temps(tmp_path) == []
    assert mine.exists() and theirs.exists()


def test_other_files_are_never_removed(tmp_path: Path, dead_pid: int) -> None:
    keep = ["notes.tmp", ".hidden.tmp", f".x.{dead_pid}-abc.tmp", "report.md", f"x.{dead_pid}-{uuid.uuid4().hex}.tmp"]
    for name in keep:
        (tmp_path / name).write_text("user data")
    folder_like_a_temp = tmp_path / temp_name("sub", dead_pid)
    folder_like_a_temp.mkdir()
    assert remove_stale_temps(tmp_path) == []
    assert tree(tmp_path) == sorted([*keep, folder_like_a_temp.name])


def test_missing_folder_or_a_file_is_nothing_to_clean(tmp_path: Path) -> None:
    assert remove_stale_temps(tmp_path / "absent") == []
    (tmp_path / "f").write_text("x")
    assert remove_stale_temps(tmp_path / "f") == []


def test_atomic_writes_use_names_the_cleaner_knows(tmp_path: Path) -> None:
    dest = tmp_path / "r.json"
    with atomic_path(dest) as tmp:
        tmp.write_text("{}")
        assert atomic._TEMP_NAME.match(tmp.name)
        # A live writer's temp file survives a cleaner running meanwhile.
        assert remove_stale_temps(tmp_path) == []
    assert dest.read_text() == "{}"
    write_text(dest, "[]")
    assert tree(tmp_path) == ["r.json"]
