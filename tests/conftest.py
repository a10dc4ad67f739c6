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
    with TestClient(create_app(kb)) as client:
        yield client


_app_ids = itertools.count()


@pytest.fixture
def make_rp(kb: Keybound, http: TestClient):  # type: ignore[no-untyped-def]
    """make_rp(**settings) -> a RelyingParty for a fresh application with those settings."""

    def make(**settings: object) -> RelyingParty:
        app_id = f"app{next(_app_ids)}"
        kb.applications.create(app_id, AppConfig().updated(settings))
        token = kb.applications.create_api_key(app_id).token
        return RelyingParty(http, app_id, token)

    return make


@pytest.fixture
def rp(make_rp) -> RelyingParty:  # type: ignore[no-untyped-def]
    return make_rp()  # type: ignore[no-any-return]
