"""Shared fixtures: a real SQLite database per test, a controllable clock, the real ASGI app."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from keybound.server.appconfig import AppConfig
from keybound.server.http import create_app
from keybound.server.service import Keybound
from tests.helpers import RelyingParty


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


@pytest.fixture
def kb(tmp_path: Path, clock: FakeClock) -> Iterator[Keybound]:
    service = Keybound.open(f"sqlite:///{tmp_path / 'keybound.db'}", clock=clock)
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
