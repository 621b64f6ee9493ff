"""Atomic file writes: a reader sees either the old complete file or the new complete file, never a part.

The bytes go to a temporary file in the *same directory* as the target (so that the rename cannot cross file
systems), which is flushed and ``fsync``-ed, then ``os.replace``-d over the target (atomic on POSIX), and the
directory is ``fsync``-ed so that the rename itself survives a crash. On an exception the temporary file is
removed and the target is left as it was. The file gets the mode a plain ``open(path, "w")`` would give
(``0o666`` less the process umask), not the ``0o600`` of the temporary file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "atomic_write_with"]

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask: from ``/proc/self/status`` where Linux gives it, else by setting it and setting it back
    (under a lock; another thread creating a file at that instant could see the momentary value)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_with(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a binary file object and atomically put what it wrote at ``path`` (module
    docstring); the parent directory is created if needed. Returns ``path`` as a :class:`~pathlib.Path`."""
    if not callable(write):
        raise TypeError(f"write must be callable(file) -> None, got {type(write).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path {path} is a directory, not a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Atomically write ``data`` to ``path`` (module docstring); ``str`` is encoded as UTF-8. Returns the path."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    elif not isinstance(data, bytes | bytearray):
        raise TypeError(f"data must be bytes or str, got {type(data).__name__}")
    payload = bytes(data)
    return atomic_write_with(path, lambda f: f.write(payload))
