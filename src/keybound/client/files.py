"""Atomic, private files for the SDK's state: readable by the owner only, replaced in one
step, so a crash leaves the old content or the new, never a torn file.

A file the operating system refuses (a path through a regular file, a directory where the
file should be, missing permissions) is the caller's configuration: :func:`file_error` turns
the OSError into ClientError(CLIENT_CONFIGURATION) naming the path."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from keybound.errors import ClientError, ErrorCode


def file_error(action: str, path: Path, exc: OSError) -> ClientError:
    """ClientError(CLIENT_CONFIGURATION) for an OSError while ``action``-ing ``path``."""
    reason = exc.strerror or type(exc).__name__
    return ClientError(f"cannot {action} {path}: {reason}", code=ErrorCode.CLIENT_CONFIGURATION)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600, parent directory 0700) atomically and durably.

    Raises ClientError(CLIENT_CONFIGURATION) naming ``path`` when the OS refuses."""
    try:
        _write_private(path, data)
    except OSError as exc:
        raise file_error("write", path, exc) from exc


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def remove_private(path: Path) -> None:
    """Delete ``path`` if it exists, durably. Raises ClientError(CLIENT_CONFIGURATION)
    naming ``path`` when the OS refuses."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise file_error("delete", path, exc) from exc
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (best effort where unsupported)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
