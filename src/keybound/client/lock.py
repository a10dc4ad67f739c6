"""One ceremony at a time per state directory, across threads and processes.

Two ceremonies of one device that overlap (two app processes, two threads, two taps) would
both sign with the software key that is current when they begin; the first finish rotates it
and the second is refused (docs/protocol.md §4.5, ``software_key_superseded``), and worse,
each saves the state it read before the other's rotation, so a key the server considers
current can be overwritten by a superseded one, which the *next* login then uses: the server
must take that for a copy and lock the device. So every ceremony holds the directory's lock
from before it reads the state until after it saved the outcome.

The lock is ``flock(2)`` on ``<state_dir>/device.lock`` (never deleted: removing a lock file
races with its next user). ``flock`` belongs to an open file description, so two threads of
one process exclude each other too, and the kernel drops it when its process dies, so a
crashed ceremony never leaves the directory locked. Within a process, every user of one
directory shares one :class:`StateLock` (:func:`state_lock`): reentrant for the thread that
holds it, so a ceremony may call another (deactivate, then forget). A lock file on a
filesystem without ``flock`` (some network filesystems) does not serialise processes; the
server's overlap rule then still keeps the device from being locked by its own race.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from keybound.client.files import file_error

LOCK_FILE = "device.lock"

_registry: dict[Path, StateLock] = {}
_registry_mutex = threading.Lock()


class StateLock:
    """The exclusive lock of one state directory; use :func:`state_lock` to get it."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        self._mutex = threading.RLock()  # threads of this process, and reentrancy
        self._depth = 0
        self._fd: int | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the ``with`` block, waiting as long as another holds it.

        Raises ClientError(CLIENT_CONFIGURATION) naming the lock file when it cannot be
        created or locked (a file where the directory should be, no permission)."""
        with self._mutex:
            if self._depth == 0:
                self._fd = self._acquire()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    fd, self._fd = self._fd, None
                    os.close(fd)  # closing the only descriptor releases the flock

    def _acquire(self) -> int:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise file_error("lock", self.path, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # blocks; interrupted waits are retried (PEP 475)
        except OSError as exc:
            os.close(fd)
            raise file_error("lock", self.path, exc) from exc
        return fd


def state_lock(directory: Path | str) -> StateLock:
    """The lock of ``directory`` shared by everything in this process that uses it."""
    key = Path(directory).expanduser().resolve()  # one lock object per directory
    with _registry_mutex:
        lock = _registry.get(key)
        if lock is None:
            lock = _registry[key] = StateLock(key)
        return lock
