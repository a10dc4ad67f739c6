"""Single use under real concurrency: 50 simultaneous finishes of one challenge against a real
uvicorn server on 127.0.0.1, on a real SQLite file and on a real PostgreSQL server; exactly
one may win, 20 rounds."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from keybound import protocol as p
from keybound.server.http import create_app
from keybound.server.runner import BackgroundServer
from keybound.server.service import Keybound
from tests.helpers import RawDevice, RelyingParty

pytestmark = pytest.mark.server

CONCURRENT = 50
ROUNDS = 20


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[BackgroundServer]:
    kb = Keybound.open(database_url, master_key_file=tmp_path / "master.key")
    # plaintext (development switch): this tests single use in the domain beneath the channel
    with BackgroundServer(kb, allow_plaintext=True) as running:
        yield running
    kb.db.dispose()


async def _race(url: str, path: str, bodies: list[dict[str, object]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CONCURRENT)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        return await asyncio.gather(*(client.post(path, json=b) for b in bodies))


def test_fifty_concurrent_finishes_exactly_one_wins(server: BackgroundServer) -> None:
    kb = server.kb
    kb.applications.create("race")
    token = kb.applications.create_api_key("race").token
    with TestClient(create_app(kb, allow_plaintext=True)) as local:
        rp = RelyingParty(local, "race", token)
        device = RawDevice(local, "race")
        assert device.activate(rp.activation_code()["activationCode"]).status_code == 200
        for round_no in range(ROUNDS):
            start = device.start_auth()
            # 50 distinct, individually valid finishes for the same challenge
            attempts = [device.auth_request(start) for _ in range(CONCURRENT)]
            responses = asyncio.run(_race(server.url, p.DevicePaths.AUTHENTICATION_FINISH,
                                          [req.to_wire() for req, _ in attempts]))
            statuses = Counter(r.status_code for r in responses)
            assert statuses == {200: 1, 409: CONCURRENT - 1}, (round_no, statuses)
            assert {r.json()["code"] for r in responses if r.status_code == 409} == \
                {"challenge_used"}
            winner = next(i for i, r in enumerate(responses) if r.status_code == 200)
            device.history.append(device.sw)
            device.sw = attempts[winner][1]
            assert rp.operation(start.operation_id)["state"] == "COMPLETED"
        assert rp.device(device.device_id)["state"] == "ACTIVE"


def test_concurrent_activation_code_use(server: BackgroundServer) -> None:
    kb = server.kb
    kb.applications.create("race2")
    token = kb.applications.create_api_key("race2").token
    with TestClient(create_app(kb, allow_plaintext=True)) as local:
        rp = RelyingParty(local, "race2", token)
        for _ in range(5):
            code = rp.activation_code()["activationCode"]
            body = {"applicationId": "race2", "activationCode": code}
            responses = asyncio.run(_race(server.url, p.DevicePaths.ACTIVATION_START,
                                          [body] * CONCURRENT))
            assert Counter(r.status_code for r in responses) == {200: 1, 401: CONCURRENT - 1}
