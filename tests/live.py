"""A real keybound server on 127.0.0.1 for tests that drive the SDK or the ``keybound
device`` command as a user would: uvicorn in a thread (plaintext switch OFF, every device
request through the secure channel) on a fresh SQLite file, applications made through the
operator's door, and the pin file an app ships. The ``live_server`` fixture (tests/conftest.py)
yields a :class:`Server`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx

from keybound.cli.device import PIN_ENV
from keybound.server.core.appconfig import AppConfig
from keybound.server.services import Keybound
from keybound.server.web.runner import BackgroundServer
from tests.helpers import RelyingParty

#: the token user PIN's variable in the CLI tests (never inherited from the environment)
TOKEN_PIN_ENV = "KB_TEST_TOKEN_PIN"


@dataclass
class App:
    """An application on the running server: its relying party and its pin file."""

    kb: Keybound
    rp: RelyingParty
    key_id: str
    pin_file: Path

    def code(self) -> str:
        """What the user scans: the activation link."""
        return str(self.rp.activation_code()["activationLink"])

    def typed(self) -> tuple[str, str]:
        """What the user types instead: the code, and its hint."""
        issued = self.rp.activation_code()
        return str(issued["activationCode"]), str(issued["activationHint"])

    def risk(self, operation_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.rp.operation(operation_id)["riskData"])


@dataclass
class Server:
    kb: Keybound
    url: str
    directory: Path
    clients: list[httpx.Client]

    def app(self, name: str = "bank", **settings: object) -> App:
        self.kb.admin.create_application(name, AppConfig().updated(settings))
        token = self.kb.admin.create_api_key(name).token
        key = self.kb.admin.create_e2e_key(name)
        return App(
            kb=self.kb,
            rp=self.rp(name, token),
            key_id=key.key_id,
            pin_file=self.pin_file(key.key_id),
        )

    def rp(self, name: str, token: str) -> RelyingParty:
        client = httpx.Client(base_url=self.url, timeout=30)
        self.clients.append(client)
        return RelyingParty(cast(Any, client), name, token)

    def pin_file(self, key_id: str) -> Path:
        """The pin string an app ships, exported for this server's URL, in a file."""
        path = self.directory / f"{key_id}.pin"
        path.write_text(
            self.kb.admin.e2e_pin(key_id, server_url=self.url).to_string() + "\n", encoding="utf-8"
        )
        return path


@contextmanager
def live_server(directory: Path) -> Iterator[Server]:
    kb = Keybound.open(
        f"sqlite:///{directory / 'keybound.db'}", master_key_file=directory / "master.key"
    )
    clients: list[httpx.Client] = []
    try:
        with BackgroundServer(kb) as running:  # allow_plaintext off
            yield Server(kb=kb, url=running.url, directory=directory, clients=clients)
    finally:
        for client in clients:
            client.close()
        kb.close()


def device_env(env: dict[str, str] | None = None, unset: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment of a ``keybound device`` process: this one's, without an inherited
    device PIN or token PIN (nor the variables in ``unset``), plus ``env``."""
    base = {k: v for k, v in os.environ.items() if k not in (PIN_ENV, TOKEN_PIN_ENV, *unset)}
    return {**base, **(env or {})}


def device_command(state_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "keybound.cli", "device", "--state-dir", str(state_dir), *args]


def device(
    state_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str = "",
    unset: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """``keybound device --state-dir STATE_DIR ARGS...`` in a fresh process, detached from any
    terminal (so a PIN prompt reads stdin)."""
    return subprocess.run(
        device_command(state_dir, *args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=device_env(env, unset),
        start_new_session=True,
    )


def ok(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    return cast(dict[str, Any], json.loads(done.stdout))


def fails(done: subprocess.CompletedProcess[str], code: str) -> str:
    """Exit 2 with ``code`` on stderr, nothing on stdout, and no traceback."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"keybound device: {code}: " in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    return done.stderr
