"""A private PostgreSQL server for the tests: initdb into a temporary directory, listen on a
free 127.0.0.1 port, stop by PID afterwards. One migrated template database; each test gets a
fresh copy (CREATE DATABASE ... TEMPLATE), so tests never share state."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from keybound.server.web.runner import free_port
from keybound.storage.db import Database

TEMPLATE = "keybound_template"


class PostgresUnavailable(RuntimeError):
    pass


def _bindir() -> Path:
    found = shutil.which("initdb")
    if found and "postgresql" in os.path.realpath(found):
        return Path(os.path.realpath(found)).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if not versions:
        raise PostgresUnavailable("PostgreSQL server binaries not found (apt package postgresql)")
    return versions[0].parent


def _as_postgres(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: drop to the postgres user when root."""
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresUnavailable("running as root without runuser")
    return [runuser, "-u", "postgres", "--", *argv]


@dataclass(kw_only=True)
class PostgresServer:
    directory: Path
    port: int
    process: subprocess.Popen[bytes]
    _names: itertools.count[int] = field(default_factory=itertools.count)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://keybound@127.0.0.1:{self.port}/{database}"

    def fresh_database(self) -> str:
        """A new database cloned from the migrated template; returns its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        admin = Database(self.url("postgres"))
        with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE}')
        admin.dispose()
        return self.url(name)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


#: Tests trade durability for speed; a benchmark keeps PostgreSQL's defaults (every commit
#: flushed, like the embedded SQLite default), so the two backends are compared fairly.
FAST_UNSAFE = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def start_postgres(directory: Path, *, durable: bool = False) -> PostgresServer:
    bindir = _bindir()
    data = directory / "data"
    data.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
        shutil.chown(data, "postgres")
    init = subprocess.run(
        _as_postgres(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "keybound",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        ),
        capture_output=True,
        check=False,
    )
    if init.returncode != 0:
        raise PostgresUnavailable(f"initdb failed: {init.stderr.decode()[-500:]}")
    port = free_port()
    process = subprocess.Popen(
        _as_postgres(
            [
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-k",
                str(directory),
                "-c",
                "listen_addresses=127.0.0.1",
                "-p",
                str(port),
                *(() if durable else (arg for v in FAST_UNSAFE for arg in ("-c", v))),
                "-c",
                "max_connections=200",
            ]
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = PostgresServer(directory=directory, port=port, process=process)
    deadline = time.monotonic() + 30
    while True:
        try:
            admin = Database(server.url("postgres"))
            with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {TEMPLATE}")
            admin.dispose()
            break
        except Exception as exc:  # server still starting
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise PostgresUnavailable(f"postgres did not start: {exc}") from exc
            time.sleep(0.1)
    template = Database(server.url(TEMPLATE))
    template.migrate()
    template.dispose()
    return server
