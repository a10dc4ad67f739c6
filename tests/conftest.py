"""Shared fixtures: a real database per test (SQLite, and PostgreSQL for the modules in
POSTGRES_MODULES), a controllable clock, the real ASGI app with device requests sealed as in
production."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from keybound.server.core.appconfig import AppConfig
from keybound.server.events.ssrf import EndpointPolicy
from keybound.server.services import Keybound
from keybound.server.web.app import create_app
from tests.helpers import RelyingParty, SealingClient
from tests.live import Server
from tests.live import live_server as _live_server
from tests.pgserver import PostgresServer, PostgresUnavailable, start_postgres


class FakeClock:
    """Wall time that only moves when a test says so (no sleeping in tests)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


#: Test modules whose every database test also runs on a real PostgreSQL server.
POSTGRES_MODULES = {
    "tests.server.services.test_activation",
    "tests.server.services.test_authentication",
    "tests.server.services.test_activation_guessing",
    "tests.server.services.test_concurrency",
    "tests.server.services.test_e2ekeys",
    "tests.server.services.test_retention",
    "tests.server.web.test_rp",
    "tests.server.web.test_device",
    "tests.server.test_unit",
    "tests.storage.test_prepared",
    "tests.server.services.test_events",
    "tests.server.services.test_outbox",
    "tests.server.web.test_webhooks",
    "tests.server.services.test_resultkeys",
    "tests.server.services.test_signature",
    "tests.server.services.test_audit",
    "tests.server.services.test_attestation",
}
ALLOW_SKIP_POSTGRES = "KEYBOUND_ALLOW_SKIP_POSTGRES"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames and metafunc.module.__name__ in POSTGRES_MODULES:
        metafunc.parametrize(
            "backend",
            ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
            indirect=True,
        )


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server for this test process (fails, never skips, when absent,
    unless KEYBOUND_ALLOW_SKIP_POSTGRES=1)."""
    directory = Path(tempfile.mkdtemp(prefix="keybound-pg-"))
    try:
        server = start_postgres(directory)
    except PostgresUnavailable as exc:
        if os.environ.get(ALLOW_SKIP_POSTGRES) == "1":
            pytest.skip(str(exc))
        pytest.fail(f"{exc}; install it, or set {ALLOW_SKIP_POSTGRES}=1", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, migrated database: an SQLite file, or a new PostgreSQL database."""
    if backend == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres")
        return server.fresh_database()
    return f"sqlite:///{tmp_path / 'keybound.db'}"


@pytest.fixture
def endpoint_policy() -> EndpointPolicy:
    """Where webhooks may go: public https only, as in production. A module that runs local
    receivers overrides this fixture to allow loopback, as an operator would."""
    return EndpointPolicy()


@pytest.fixture
def kb(
    database_url: str, tmp_path: Path, clock: FakeClock, endpoint_policy: EndpointPolicy
) -> Iterator[Keybound]:
    service = Keybound.open(
        database_url,
        clock=clock,
        master_key_file=tmp_path / "master.key",
        endpoint_policy=endpoint_policy,
    )
    yield service
    service.close()


@pytest.fixture
def http(kb: Keybound) -> Iterator[SealingClient]:
    """The app as production runs it (no plaintext switch): device requests are sealed with
    the pin of the application they name, as an app would (tests/helpers.py)."""
    with TestClient(create_app(kb)) as client:
        yield SealingClient(client, kb.clock)


#: TestClient talks to ``http://testserver``; a pin's URL must be https or localhost.
PIN_SERVER_URL = "http://localhost"


_app_ids = itertools.count()


@pytest.fixture
def make_rp(kb: Keybound, http: SealingClient):  # type: ignore[no-untyped-def]
    """make_rp(**settings) -> a RelyingParty for a fresh application with those settings."""

    def make(**settings: object) -> RelyingParty:
        app_id = f"app{next(_app_ids)}"
        kb.admin.create_application(app_id, AppConfig().updated(settings))
        token = kb.admin.create_api_key(app_id).token
        key = kb.admin.create_e2e_key(app_id)  # every application has one, as in production
        pin = kb.admin.e2e_pin(key.key_id, server_url=PIN_SERVER_URL)
        http.pins[app_id] = pin
        return RelyingParty(http, app_id, token, pin=pin)

    return make


@pytest.fixture
def rp(make_rp) -> RelyingParty:  # type: ignore[no-untyped-def]
    return make_rp()  # type: ignore[no-any-return]


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[Server]:
    """A real keybound server on 127.0.0.1 with its own SQLite file (tests/live.py)."""
    with _live_server(tmp_path) as server:
        yield server
