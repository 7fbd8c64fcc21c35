"""Atomic file writes: a reader sees the old file or the whole new one, never half.

Also the checks every command runs on its output locations before it computes
(``check_output_dir``/``check_output_file``), and the removal of temporary files a
killed run left behind (``remove_stale_temps``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import uuid
from pathlib import Path
from typing import Callable, Iterator

from m2ae.errors import UserError

# ".NAME.PID-HEX.tmp"; the writer's pid tells a later run whether the writer is gone.
_TEMP_NAME = re.compile(r"^\..+\.(?:(?P<pid>\d+)-)?[0-9a-f]{32}\.tmp$")


def _temp_path(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp"


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` on success.

    The temporary file lives in the destination folder so the final ``os.replace``
    is a same-filesystem rename. On any exception the temporary file is removed and
    ``dest`` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A fresh unique name (not mkstemp) so the writer creates the file with the
    # user's umask instead of mkstemp's owner-only mode.
    tmp_path = _temp_path(dest)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(dest: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text(dest: str | os.PathLike, text: str) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)


def write_with(dest: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        writer(tmp)
    return Path(dest)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of writers that no longer run; returns what it removed.

    Temporary names carry the writer's pid, so a run sharing the folder keeps its
    files; names without a pid come from versions before pids were recorded.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = _TEMP_NAME.match(path.name)
        if not match or not path.is_file():
            continue
        pid = match.group("pid")
        if pid is not None and (int(pid) == os.getpid() or _pid_alive(int(pid))):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(".")


def _probe_writable(folder: Path) -> str | None:
    """Why nothing can be created in ``folder``, or None when a file can be.

    Creates and removes one probe file: ``os.access`` says yes to root on a
    read-only bind mount, and CI runs as root.
    """
    probe = _temp_path(folder / "probe")
    try:
        probe.touch(exist_ok=False)
    except OSError as exc:
        if exc.errno == errno.EROFS:
            return "it is on a read-only filesystem"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return "permission denied"
        if exc.errno == errno.ENOSPC:
            return "the disk is full"
        return exc.strerror or str(exc)
    probe.unlink()
    return None


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Raise ``UserError`` unless ``path`` is, or can become, a writable folder.

    Creates nothing: the folder is made by the first write. ``option`` names the
    command-line option in the message.
    """
    path = Path(path)
    existing = _nearest_existing(path)
    if not existing.is_dir():
        if existing == path:
            raise UserError(f"{option} {path}: is a file, not a folder")
        raise UserError(f"{option} {path}: cannot create a folder under {existing}, which is a file")
    reason = _probe_writable(existing)
    if reason is not None:
        where = "" if existing == path else f" (its nearest existing folder {existing})"
        raise UserError(f"{option} {path}: cannot write there{where}: {reason}")
    return path


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """Raise ``UserError`` unless a file can be written atomically at ``path``."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder; give a file name")
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise UserError(f"{option} {path}: cannot create a folder under {existing}, which is a file")
    reason = _probe_writable(existing)
    if reason is not None:
        raise UserError(f"{option} {path}: cannot write there ({existing}): {reason}")
    return path
