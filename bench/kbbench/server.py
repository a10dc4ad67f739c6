"""A real ``keybound serve`` subprocess, set up through the CLI, on a fresh embedded SQLite file
(default) or on a given database URL (a fresh PostgreSQL database: ``kbbench.pg``).

Secure channel ON (no ``--allow-plaintext``): one application, one RP API key, one E2E key
whose pin names ``http://127.0.0.1:<port>``. Listens on 127.0.0.1 only. Stopped by its own
PID (SIGTERM, then SIGKILL of the PIDs it started if it does not exit).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from kbbench import procs
from keybound.server.web.runner import free_port

APP = "bench"


class KeyboundServer:
    def __init__(
        self,
        workdir: Path,
        *,
        workers: int = 1,
        port: int | None = None,
        app: str = APP,
        db_url: str = "",
        backend: str = "sqlite",
        database: Any = None,
        serve_args: tuple[str, ...] = (),
    ) -> None:
        """``db_url``: the database (default: ``workdir/keybound.db``, SQLite). ``database``:
        the database server's handle when it runs in its own processes (``pids()`` and
        ``cpu_seconds()``, e.g. :class:`kbbench.pg.BenchPostgres`), for its CPU time.
        ``serve_args``: more ``keybound serve`` options (e.g. the edge limits)."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_url = db_url or f"sqlite:///{self.workdir / 'keybound.db'}"
        self.backend = backend
        self.database = database
        self.workers = workers
        self.serve_args = serve_args
        self.port = port or free_port()
        self.app = app
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.pin = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "serve.log"
        # the environment is cleared of anything that would switch the channel off
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in ("KEYBOUND_ALLOW_PLAINTEXT", "KEYBOUND_DATABASE_URL", "KEYBOUND_MASTER_KEY_FILE")
        }
        # the master key in the work dir (for SQLite it is beside the database anyway; for a
        # server database it would otherwise be ~/.keybound/master.key)
        self.env["KEYBOUND_MASTER_KEY_FILE"] = str(self.workdir / "master.key")

    # ------------------------------------------------------------------ setup via the CLI
    def cli(self, *args: str) -> str:
        cmd = [sys.executable, "-m", "keybound.cli", "--database-url", self.db_url, *args]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"keybound {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def setup(self) -> None:
        """Application, API key and E2E key (pin) through the ``keybound`` CLI."""
        if not self.token:
            self.cli("app", "create", self.app)
            self.token = self.cli("api-key", "create", self.app, "--label", "bench").splitlines()[
                -1
            ]
            self.pin = self.cli(
                "e2e-key", "create", self.app, "--server-url", self.url
            ).splitlines()[-1]

    # ------------------------------------------------------------------ run
    def start(self, timeout: float = 60.0) -> None:
        assert self.proc is None
        cmd = [
            sys.executable,
            "-m",
            "keybound.cli",
            "--database-url",
            self.db_url,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--log-level",
            "warning",
            *self.serve_args,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"keybound serve exited ({self.proc.returncode}); see "
                    f"{self.log_path}:\n{self.log_path.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200 and self._workers_up():
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("keybound serve did not come up")
            time.sleep(0.1)

    def _workers_up(self) -> bool:
        if self.workers <= 1:
            return True
        workers = [
            p
            for p in self.pids()[1:]
            if "multiprocessing" in procs.cmdline(p) and "resource_tracker" not in procs.cmdline(p)
        ]
        return len(workers) >= self.workers

    def pids(self) -> list[int]:
        return procs.tree(self.proc.pid) if self.proc else []

    def cpu_seconds(self) -> float:
        return sum(procs.proc_cpu(p) for p in self.pids())

    def db_cpu_seconds(self) -> float | None:
        """CPU of the database server's processes; None for embedded SQLite (its work is
        inside the server processes, in ``cpu_seconds``)."""
        return None if self.database is None else float(self.database.cpu_seconds())

    def peak_rss_kib(self) -> dict[int, int]:
        """VmHWM (peak resident set) of every server process, KiB."""
        return {p: procs.status_kib(p, "VmHWM") for p in self.pids()}

    def stop(self) -> None:
        if self.proc is None:
            return
        pids = self.pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                for p in pids:  # only the PIDs this server started
                    with contextlib.suppress(OSError):
                        os.kill(p, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> KeyboundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
