"""A private PostgreSQL server for the load runs (``loadgen.py --backend postgresql``).

The server itself is started by the tests' own starter, ``tests/pgserver.py`` (imported, not
copied): ``initdb`` into a temporary directory (as the ``postgres`` user when run as root),
``postgres`` listening on a free 127.0.0.1 port (and a Unix socket in that directory) with
PostgreSQL's durable defaults (``start_postgres(durable=True)``: fsync and synchronous commit
on, unlike the tests) and ``max_connections=200``,
one migrated template database, each :meth:`BenchPostgres.fresh_database` a new copy of it.

What a benchmark needs on top, here:

- stop by PID: fast shutdown (SIGINT) of the postmaster named in ``postmaster.pid`` -- only if
  that PID is one of the processes this run started --, then SIGQUIT, then SIGKILL of exactly
  the PIDs it started; the data directory is removed afterwards;
- a bounded lifetime: a watchdog process (own session, so a Ctrl-C of the run does not kill it
  first) stops the server the same way, and removes its data directory, when the deadline
  passes or when the process that started it is gone (killed, crashed); it exits by itself
  once the server is gone;
- CPU accounting of the server's processes (postmaster, backends, background workers), which
  are not descendants of ``keybound serve``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kbbench import procs

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # after bench/ and the venv: only for ``tests.pgserver``

from tests.pgserver import (  # noqa: E402
    PostgresServer,
    PostgresUnavailable,
    start_postgres,
)

__all__ = ["BenchPostgres", "PostgresUnavailable"]

#: The settings tests/pgserver.py starts the server with (for the results' metadata).
SETTINGS = (
    "listen_addresses=127.0.0.1",
    "fsync=on",
    "synchronous_commit=on",
    "max_connections=200",
)

# The watchdog: argv = parent pid, started pid, postmaster pid, deadline (epoch seconds),
# data directory (removed once the server is gone). It never signals a PID whose command
# line does not name postgres.
_WATCHDOG = r"""
import os, shutil, signal, sys, time
parent, root, pm, deadline = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                              float(sys.argv[4]))
def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
def is_postgres(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"postgres" in fh.read()
    except OSError:
        return False
while alive(root) and os.getppid() == parent and time.time() < deadline:
    time.sleep(1)
if not alive(root):
    shutil.rmtree(sys.argv[5], ignore_errors=True)
    sys.exit(0)
why = "deadline passed" if time.time() >= deadline else "its starter is gone"
print(f"[pg-watchdog] stopping the private PostgreSQL (pid {pm}): {why}", file=sys.stderr)
for sig, wait in ((signal.SIGINT, 20), (signal.SIGQUIT, 5), (signal.SIGKILL, 5)):
    if not (alive(pm) and is_postgres(pm)):
        break
    os.kill(pm, sig)
    end = time.time() + wait
    while alive(pm) and time.time() < end:
        time.sleep(0.2)
if not alive(pm):
    shutil.rmtree(sys.argv[5], ignore_errors=True)
"""


class BenchPostgres:
    """A private PostgreSQL server for at most ``lifetime`` seconds; a context manager."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self.directory = Path(tempfile.mkdtemp(prefix="kb-load-pg-"))
        self.server: PostgresServer | None = None
        self.watchdog: subprocess.Popen[bytes] | None = None
        self.version = ""

    def start(self) -> BenchPostgres:
        try:
            self.server = start_postgres(self.directory, durable=True)
        except BaseException:
            self._stop_strays()
            # an interrupted initdb may outlive its killed runuser for a moment: retry
            end = time.monotonic() + 5
            while True:
                shutil.rmtree(self.directory, ignore_errors=True)
                if not self.directory.exists() or time.monotonic() > end:
                    break
                time.sleep(0.2)
            raise
        try:
            self.watchdog = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _WATCHDOG,
                    str(os.getpid()),
                    str(self.server.process.pid),
                    str(self.postmaster_pid()),
                    str(time.time() + self.lifetime),
                    str(self.directory),
                ],
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
            self.version = self._server_version()
        except BaseException:
            self.stop()
            raise
        return self

    def _stop_strays(self) -> None:
        """After a failed or interrupted start (no handle came back): our own child processes
        started for this data directory, and their descendants, by PID."""
        for child in procs.children(os.getpid()):
            if str(self.directory) not in procs.cmdline(child):
                continue
            started = procs.tree(child)
            for p in started:  # runuser (when root) and the postmaster: immediate shutdown
                if str(self.directory) in procs.cmdline(p):
                    with contextlib.suppress(OSError):
                        os.kill(p, signal.SIGQUIT)
            end = time.monotonic() + 5
            with contextlib.suppress(ChildProcessError):
                while time.monotonic() < end and os.waitpid(child, os.WNOHANG) == (0, 0):
                    time.sleep(0.1)
            for p in started:
                if procs.cmdline(p):  # still there
                    with contextlib.suppress(OSError):
                        os.kill(p, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child, 0)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def fresh_database(self) -> str:
        """A new, migrated database (a copy of the template); its SQLAlchemy URL."""
        assert self.server is not None
        return self.server.fresh_database()

    def _server_version(self) -> str:
        from keybound.storage.db import Database

        assert self.server is not None
        db = Database(self.server.url("postgres"))
        try:
            with db.engine.connect() as conn:
                return str(conn.exec_driver_sql("SHOW server_version").scalar_one())
        finally:
            db.dispose()

    def postmaster_pid(self) -> int:
        """The postmaster's PID from ``postmaster.pid``, if it is one this run started."""
        if self.server is None:
            return 0
        try:
            pid = int((self.directory / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0
        return pid if pid in self.pids() else 0

    def pids(self) -> list[int]:
        """The started process and all its descendants (with root: runuser, postmaster...)."""
        if self.server is None or self.server.process.poll() is not None:
            return []
        return procs.tree(self.server.process.pid)

    def cpu_seconds(self) -> float:
        """CPU (user + system) of the server's processes, including backends that have exited
        since (counted in the postmaster's reaped-children time)."""
        return sum(procs.proc_cpu(p, reaped=True) for p in self.pids())

    def stop(self) -> None:
        if self.server is not None:
            process = self.server.process
            started = self.pids()
            # the postmaster if we started it, else (still running) the process we started
            pm = self.postmaster_pid() or (process.pid if started else 0)
            self.server = None
            for sig, wait in ((signal.SIGINT, 20.0), (signal.SIGQUIT, 5.0)):
                if process.poll() is not None:
                    break
                if pm:
                    with contextlib.suppress(OSError):
                        os.kill(pm, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(wait)
            if process.poll() is None:
                for p in started:  # exactly the PIDs this run started
                    with contextlib.suppress(OSError):
                        os.kill(p, signal.SIGKILL)
                process.wait(10)
        if self.watchdog is not None:
            if self.watchdog.poll() is None:
                self.watchdog.terminate()  # our own child, by its handle
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.watchdog.wait(5)
            self.watchdog = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> BenchPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
