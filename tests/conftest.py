"""Shared fixtures: a real database per test (SQLite, and PostgreSQL for the modules in
POSTGRES_MODULES), a controllable clock, the real ASGI app."""

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

from keybound.server.appconfig import AppConfig
from keybound.server.http import create_app
from keybound.server.service import Keybound
from tests.helpers import RelyingParty
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
POSTGRES_MODULES = {"test_authentication", "test_activation", "test_http", "test_concurrency",
                    "test_prepared", "test_retention",
                    "test_secure_channel_http", "test_e2ekeys"}
ALLOW_SKIP_POSTGRES = "KEYBOUND_ALLOW_SKIP_POSTGRES"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames and \
            metafunc.module.__name__.rsplit(".", 1)[-1] in POSTGRES_MODULES:
        metafunc.parametrize("backend", ["sqlite", pytest.param(
            "postgres", marks=pytest.mark.postgres)], indirect=True)


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
def kb(database_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[Keybound]:
    service = Keybound.open(database_url, clock=clock,
                            master_key_file=tmp_path / "master.key")
    yield service
    service.db.dispose()


@pytest.fixture
def http(kb: Keybound) -> Iterator[TestClient]:
    # The domain tests (activation, authentication, HTTP edge) speak plaintext JSON through
    # the development switch: they test the logic beneath the secure channel, with requests
    # an attacker holding a pin could equally seal. The channel itself is tested with the
    # switch off (tests/test_secure_channel_http.py), and the SDK tests go through it.
    with TestClient(create_app(kb, allow_plaintext=True)) as client:
        yield client


#: TestClient talks to ``http://testserver``; a pin's URL must be https or localhost.
PIN_SERVER_URL = "http://localhost"


_app_ids = itertools.count()


@pytest.fixture
def make_rp(kb: Keybound, http: TestClient):  # type: ignore[no-untyped-def]
    """make_rp(**settings) -> a RelyingParty for a fresh application with those settings."""

    def make(**settings: object) -> RelyingParty:
        app_id = f"app{next(_app_ids)}"
        kb.applications.create(app_id, AppConfig().updated(settings))
        token = kb.applications.create_api_key(app_id).token
        key = kb.e2e_keys.create(app_id)  # every application has an E2E key, as in production
        pin = kb.e2e_keys.pin(key.key_id, server_url=PIN_SERVER_URL)
        return RelyingParty(http, app_id, token, pin=pin)

    return make


@pytest.fixture
def rp(make_rp) -> RelyingParty:  # type: ignore[no-untyped-def]
    return make_rp()  # type: ignore[no-any-return]
