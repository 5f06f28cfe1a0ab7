"""Atomic file writing: a file is either its old self or complete, never half-written, even when
the process is killed mid-write (checkpoints, exported policies, videos, results)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


def commit(tmp: str, path: str) -> None:
    """Make the finished file ``tmp`` durable and rename it over ``path`` (same folder), then
    make the rename durable too."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over ``path``.

    The temporary name keeps the extension, so writers that dispatch on it (imageio, torch,
    SB3's ``save`` which appends ``.zip``) behave as for the final name.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(path)
    stem, ext = os.path.splitext(base)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{ext}", dir=directory)
    os.close(fd)
    # mkstemp makes the file private (0600); give it the mode an ordinary open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        commit(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
