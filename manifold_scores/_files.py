"""Atomic file writes shared by checkpoints and the CLI's JSON results."""

from __future__ import annotations

import contextlib
import os
import secrets

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that a failure at any point leaves the old file intact.

    A temporary file in the same folder (so that ``os.replace`` is a rename on one file
    system) is written, flushed and fsync-ed, then renamed over ``path``; the folder is
    fsync-ed so the rename survives a power loss. ``os.open`` with mode ``0o666`` lets the umask
    set the permissions, as a plain ``open(path, "w")`` would (tempfile's files are private).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # not every platform can open a folder
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
