"""The embedded SQLite database file: its engine (WAL mode, pragmas), one writer at a time
across threads and processes, and the WAL's durability.

Writers queue on a lock file beside the database (``<database>-lock``), never on SQLite's busy
handler. Every commit is synced -- one by one (``PRAGMA synchronous=FULL``), or, in the
server, by group commit (:meth:`SqliteFile.defer_sync`, keybound.server.web.durable): commits
stop syncing the WAL themselves, and the server holds every response until a WAL fsync that
began after its commits has finished (:meth:`SqliteFile.sync`).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

from keybound.errors import ConfigurationInvalid


class _SqliteSync:
    """The ``PRAGMA synchronous`` new connections get (see :meth:`SqliteFile.defer_sync`)."""

    mode = "FULL"


def _sqlite_engine(url: str, sync: _SqliteSync) -> Engine:
    parsed = make_url(url)
    if not parsed.database or parsed.database == ":memory:":
        # WAL, the writer lock file and group commit all need a file; so does durability
        raise ConfigurationInvalid("SQLite needs a database file (sqlite:///path/keybound.db)")
    _private_file(Path(parsed.database))
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=8,
        max_overflow=32,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before the caller hears of it. With NORMAL, WAL mode may
        # lose the last commits on power loss -- e.g. an acknowledged software-key rotation,
        # after which the device (which deleted its old key) could never authenticate again
        # -- unless, as the server does, the WAL is synced before any answer (defer_sync).
        cur.execute(f"PRAGMA synchronous={sync.mode}")
        if sync.mode != "FULL":  # the server checkpoints in the background (checkpoint())
            cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # on the driver's connection: the full execution path costs more than BEGIN itself.
        # Inside Database.read()/write() the transaction is open already: join it.
        raw = conn.connection.dbapi_connection
        if not raw.in_transaction:  # type: ignore[union-attr]
            raw.execute("BEGIN")  # type: ignore[union-attr]

    return engine


def _private_file(path: Path) -> None:
    """The database file exists and is 0600 whatever the umask: SQLite gives its -wal and
    -shm files the database file's mode, so those follow."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)
        except FileNotFoundError:
            continue


class SqliteWriter:
    """One SQLite writer at a time: across the threads of this process (a lock) and across
    the processes of ``keybound serve --workers N`` (``flock`` on ``<database>-lock``).

    Waiters queue in the kernel and wake the moment the writer is done. Without it they meet
    SQLite's busy handler, whose sleeps (up to 100 ms each) dominate tail latency and leave
    cores idle.

    The lock file also holds two counters shared through mmap: the write transactions every
    process has committed (changed only under the lock), since group commit needs to know
    about other processes' commits too (SqliteFile.committed); and how many of them a WAL
    fsync by any process has covered (changed only under :meth:`syncing`), so a worker never
    repeats an fsync another worker's has made unnecessary (SqliteFile.sync).
    """

    def __init__(self, path: str) -> None:
        self._lock = threading.RLock()
        self._opening = threading.Lock()
        self._syncing = threading.Lock()
        self._path = path
        self._fd = -1
        self._pid = 0
        self._depth = 0  # changed only by the thread holding _lock
        self._shared: mmap.mmap | None = None

    def _file(self) -> int:
        if self._pid == _process.pid:
            return self._fd
        with self._opening:
            if self._pid != _process.pid:  # first use, or a forked child: its own open file
                self._fd = os.open(f"{self._path}-lock", os.O_RDWR | os.O_CREAT, 0o600)
                if os.fstat(self._fd).st_size < _LOCK_FILE_SIZE:
                    os.ftruncate(self._fd, _LOCK_FILE_SIZE)  # zeros: nothing counted yet
                self._shared = mmap.mmap(self._fd, _LOCK_FILE_SIZE)
                self._pid = _process.pid
            return self._fd

    @property
    def commits(self) -> int:
        """Write transactions committed by every process on this database file."""
        self._file()
        assert self._shared is not None
        count: int = _COUNTER.unpack_from(self._shared)[0]
        return count

    def count_commit(self) -> None:
        """Called while holding the lock, just before COMMIT: a reader that can see the
        commit's rows will find it counted."""
        assert self._shared is not None
        _COUNTER.pack_into(self._shared, 0, _COUNTER.unpack_from(self._shared)[0] + 1)

    @property
    def synced(self) -> int:
        """Commits a WAL fsync by any process has covered (read without the lock: the count
        only grows, and only after its fsync has returned)."""
        self._file()
        assert self._shared is not None
        return _SyncedCounter(self._shared).value

    @contextmanager
    def syncing(self, *, wait: bool = True) -> Iterator[_SyncedCounter | None]:
        """One WAL fsync at a time across threads and processes (a lock and a POSIX record
        lock on the second counter's bytes: independent of the writer's flock), with the
        shared count of commits the fsyncs have covered. ``wait=False``: None at once if
        another thread or process holds it."""
        if not self._syncing.acquire(blocking=wait):
            yield None
            return
        try:
            fd = self._file()
            try:
                fcntl.lockf(
                    fd,
                    fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB,
                    _COUNTER.size,
                    _COUNTER.size,
                )
            except OSError as exc:
                if wait or exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                yield None
                return
            try:
                assert self._shared is not None
                yield _SyncedCounter(self._shared)
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN, _COUNTER.size, _COUNTER.size)
        finally:
            self._syncing.release()

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            if self._depth == 0:
                fcntl.flock(self._file(), fcntl.LOCK_EX)
        except BaseException:
            self._lock.release()
            raise
        self._depth += 1

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        try:
            if self._depth == 0:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()


class _Process:
    """This process's id, kept current across fork (os.getpid is a system call)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.pid = os.getpid()


class _SyncedCounter:
    """The shared count of commits known to be on disk (the lock file's second counter)."""

    def __init__(self, shared: mmap.mmap) -> None:
        self._shared = shared

    @property
    def value(self) -> int:
        count: int = _COUNTER.unpack_from(self._shared, _COUNTER.size)[0]
        return count

    def advance(self, to: int) -> None:
        _COUNTER.pack_into(self._shared, _COUNTER.size, max(self.value, to))


_process = _Process()
#: SQLite page cache per connection, KiB (SQLite's default: 2000). With a million
#: registrations and every authentication reading a different one, 2000 KiB let the random
#: leaf pages push out the B-trees' interior pages: server CPU per flow 11 % above that with
#: 10 thousand registrations (bench/loadgen.py scale runs), 1 % with 16 MiB. It costs the
#: server about 12 MiB of RSS (107 -> 119-122 MiB at a million registrations).
CACHE_KIB = 16384
#: the lock file holds two of these: commits counted, then commits synced
_COUNTER = struct.Struct("<Q")
_LOCK_FILE_SIZE = 2 * _COUNTER.size


class SqliteFile:
    """One SQLite database file: the engine, its writer lock and the WAL's durability."""

    def __init__(self, url: str) -> None:
        self._sync = _SqliteSync()
        self.engine = _sqlite_engine(url, self._sync)
        file = str(self.engine.url.database)  # _sqlite_engine: always a file
        self.path = file
        self.writer = SqliteWriter(file)
        self.wal_path = f"{file}-wal"
        #: with deferred sync, the commits up to this number are known to be on disk
        self.synced = 0
        self._wal_inode = 0  # the WAL file whose directory entry was last synced

    @property
    def committed(self) -> int:
        """Write transactions committed so far by every process using the file (``keybound
        serve --workers N``), counted just before each COMMIT."""
        return self.writer.commits

    @property
    def sync_deferred(self) -> bool:
        return self._sync.mode != "FULL"

    def defer_sync(self) -> None:
        """Group commit: commits stop syncing the WAL one by one; the caller must call
        :meth:`sync` and see ``synced`` reach a commit's number before it tells anyone about
        that commit (the server does, for every response: keybound.server.web.durable). One
        fsync then covers every commit made before it began: the WAL holds each commit's
        frames, so once the WAL is on disk, so are they. Connections opened before must be
        closed by the caller (they keep the pragma they were opened with)."""
        self._sync.mode = "NORMAL"
        self.engine.dispose()  # pooled connections reopen with it

    def sync(self, *, wait: bool = True) -> bool:
        """fsync the WAL: every commit counted before the call, by any process, is durable
        after it. The count is read under the writer lock, so no counted commit is still
        being written; a WAL file new since the last call has its directory synced too.

        Processes on one file (``keybound serve --workers N``) take turns, and an fsync that
        another process started after the counted commits covers them: then there is none
        to do (two workers would otherwise sync the same WAL twice as often as one).
        ``wait=False`` (the server's event loop, which must not stall behind another
        thread's or process's fsync): False at once, nothing done, when another thread or
        process is syncing and has not yet covered the counted commits; call again later."""
        with self.writer:
            target = self.committed
        if self.writer.synced < target:
            with self.writer.syncing(wait=wait) as synced:
                if synced is None:
                    return False
                if synced.value < target:
                    self._fsync_wal()
                    synced.advance(target)
        self.synced = max(self.synced, target)
        return True

    def _fsync_wal(self) -> None:
        try:
            fd = os.open(self.wal_path, os.O_RDONLY)
        except FileNotFoundError:  # no WAL (yet, or checkpointed away): nothing pending
            return
        try:
            os.fsync(fd)
            inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        if inode != self._wal_inode:  # its name must survive a power loss too
            directory = os.open(os.path.dirname(self.wal_path) or ".", os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
            self._wal_inode = inode

    def checkpoint(self) -> None:
        """Copy the WAL into the database file (PASSIVE: never waits for readers or
        writers). With deferred sync, commits no longer checkpoint by themselves -- the one
        that crossed SQLite's 1000-page mark would carry the whole copy and its two fsyncs
        -- so the server runs this off the request path (keybound.server.web.durable)."""
        with self.engine.connect() as conn:
            conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
                "PRAGMA wal_checkpoint(PASSIVE)"
            ).fetchall()
