"""Single use under real concurrency: 50 simultaneous sealed finishes of one challenge against
a real uvicorn server on 127.0.0.1, on a real SQLite file and on a real PostgreSQL server;
exactly one may win, 20 rounds."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from keybound import protocol as p
from keybound.channel import SEALED_MEDIA_TYPE, ChannelPin, seal_request
from keybound.server.services import Keybound
from keybound.server.web.app import create_app
from keybound.server.web.runner import BackgroundServer
from tests.helpers import RawDevice, RelyingParty, SealedReply, SealingClient, start_body

pytestmark = pytest.mark.server

CONCURRENT = 50
ROUNDS = 20


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[BackgroundServer]:
    kb = Keybound.open(database_url, master_key_file=tmp_path / "master.key")
    with BackgroundServer(kb) as running:
        yield running
    kb.close()


def _local(kb: Keybound, app_id: str) -> tuple[TestClient, ChannelPin, str]:
    kb.admin.create_application(app_id)
    key = kb.admin.create_e2e_key(app_id)
    return (
        TestClient(create_app(kb)),
        kb.admin.e2e_pin(key.key_id, server_url="http://localhost"),
        kb.admin.create_api_key(app_id).token,
    )


async def _race(
    url: str, path: str, bodies: list[dict[str, object]], pin: ChannelPin
) -> list[SealedReply]:
    """Each body sealed on its own (distinct requests, not replays), all sent at once."""
    limits = httpx.Limits(max_connections=CONCURRENT)
    sealed = [
        seal_request(pin, "POST", path, json.dumps(b).encode(), now=int(time.time()))
        for b in bodies
    ]
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        outers = await asyncio.gather(
            *(
                client.post(path, content=wire, headers={"content-type": SEALED_MEDIA_TYPE})
                for wire, _ in sealed
            )
        )
    replies = []
    for outer, (_, opener) in zip(outers, sealed, strict=True):
        assert outer.status_code == 200, outer.text
        inner = opener.open(outer.content)
        replies.append(SealedReply(inner.status, inner.body))
    return replies


def test_fifty_concurrent_finishes_exactly_one_wins(server: BackgroundServer) -> None:
    kb = server.kb
    client, pin, token = _local(kb, "race")
    with client:
        local = SealingClient(client, kb.clock)
        local.pins["race"] = pin
        rp = RelyingParty(local, "race", token)
        device = RawDevice(local, "race")
        assert device.activate(rp.activation_code()).status_code == 200
        for round_no in range(ROUNDS):
            start = device.start_auth()
            # 50 distinct, individually valid finishes for the same challenge
            attempts = [device.auth_request(start) for _ in range(CONCURRENT)]
            responses = asyncio.run(
                _race(
                    server.url,
                    p.DevicePaths.AUTHENTICATION_FINISH,
                    [req.to_wire() for req, _ in attempts],
                    pin,
                )
            )
            statuses = Counter(r.status_code for r in responses)
            assert statuses == {200: 1, 409: CONCURRENT - 1}, (round_no, statuses)
            assert {r.json()["code"] for r in responses if r.status_code == 409} == {
                "challenge_used"
            }
            winner = next(i for i, r in enumerate(responses) if r.status_code == 200)
            device.history.append(device.sw)
            device.sw = attempts[winner][1]
            assert rp.operation(start.operation_id)["state"] == "COMPLETED"
        assert rp.device(device.device_id)["state"] == "ACTIVE"


def test_concurrent_activation_code_use(server: BackgroundServer) -> None:
    kb = server.kb
    client, pin, token = _local(kb, "race2")
    with client:
        local = SealingClient(client, kb.clock)
        local.pins["race2"] = pin
        rp = RelyingParty(local, "race2", token)
        for _ in range(5):
            code = rp.activation_code()  # its link and its typed code, at once
            bodies = [start_body("race2", code, typed=i % 2 == 1) for i in range(CONCURRENT)]
            responses = asyncio.run(_race(server.url, p.DevicePaths.ACTIVATION_START, bodies, pin))
            assert Counter(r.status_code for r in responses) == {200: 1, 401: CONCURRENT - 1}
