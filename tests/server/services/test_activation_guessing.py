"""Issue 14, defect 1: the activation-code guessing attack, run against a real uvicorn server
on 127.0.0.1 from several source addresses at once, on SQLite and on PostgreSQL.

The bound of docs/protocol.md §10: whatever the number of requests and addresses, a typed
code is compared at most its budget of times (MAX_CODE_ATTEMPTS for the default 6 digits)
and then burnt, so an attacker activates against any one code with probability at most
budget / 10^6; the link's 256-bit token is not guessable; and neither attack stops the
genuine user from activating through the link, nor any other user at all."""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from keybound import protocol as p
from keybound.channel import SEALED_MEDIA_TYPE, ChannelPin, seal_request
from keybound.server.core.codes import HINT_ALPHABET, MAX_CODE_ATTEMPTS
from keybound.server.services import Keybound
from keybound.server.web.runner import BackgroundServer
from keybound.storage import tables as t
from tests.helpers import RawDevice, RelyingParty, SealedReply, SealingClient, start_body
from tests.server.services.test_activation import code_failures, wrong_code
from tests.server.services.test_concurrency import _local

pytestmark = pytest.mark.server

#: the attacker's source addresses (all of 127/8 is loopback)
ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
VICTIMS = 8
#: per victim's hint: three times the budget, all at once
GUESSES = 3 * MAX_CODE_ATTEMPTS
#: guesses at hints and tokens nobody was given
SPRAY = 120


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[BackgroundServer]:
    kb = Keybound.open(database_url, master_key_file=tmp_path / "master.key")
    with BackgroundServer(kb) as running:
        yield running
    kb.close()


async def _attack(url: str, pin: ChannelPin, bodies: list[dict[str, Any]]) -> list[SealedReply]:
    """Every body sealed on its own and sent at once, spread over ADDRESSES."""
    path = p.DevicePaths.ACTIVATION_START
    sealed = [
        seal_request(pin, "POST", path, json.dumps(b).encode(), now=int(time.time()))
        for b in bodies
    ]
    clients = [
        httpx.AsyncClient(
            base_url=url,
            timeout=60,
            transport=httpx.AsyncHTTPTransport(
                local_address=address, limits=httpx.Limits(max_connections=16)
            ),
        )
        for address in ADDRESSES
    ]
    try:
        outers = await asyncio.gather(
            *(
                clients[i % len(clients)].post(
                    path, content=wire, headers={"content-type": SEALED_MEDIA_TYPE}
                )
                for i, (wire, _) in enumerate(sealed)
            )
        )
    finally:
        for client in clients:
            await client.aclose()
    replies = []
    for outer, (_, opener) in zip(outers, sealed, strict=True):
        assert outer.status_code == 200, outer.text
        inner = opener.open(outer.content)
        replies.append(SealedReply(inner.status, inner.body))
    return replies


def _random_hint() -> str:
    return "".join(secrets.choice(HINT_ALPHABET) for _ in range(8))  # longer: never issued


def test_guessing_from_many_addresses_activates_nothing_and_locks_nobody_out(
    server: BackgroundServer,
) -> None:
    kb = server.kb
    client, pin, token = _local(kb, "bank")
    with client:
        local = SealingClient(client, kb.clock)
        local.pins["bank"] = pin
        rp = RelyingParty(local, "bank", token)
        victims = [rp.activation_code() for _ in range(VICTIMS)]
        bystander = rp.activation_code()

        # 1. spray: hints and tokens nobody was given, any codes
        spray: list[dict[str, Any]] = []
        for i in range(SPRAY):
            spray.append(
                {
                    "applicationId": "bank",
                    "activationHint": _random_hint(),
                    "activationCode": f"{random.randrange(10**6):06d}",
                }
                if i % 2
                else {
                    "applicationId": "bank",
                    "activationToken": p.b64u_encode(secrets.token_bytes(32)),
                }
            )
        # 2. targeted: every victim's hint is known; GUESSES wrong codes each, all at once
        targeted = [
            {
                "applicationId": "bank",
                "activationHint": v["activationHint"],
                "activationCode": wrong_code(v["activationCode"]),
            }
            for v in victims
            for _ in range(GUESSES)
        ]
        replies = asyncio.run(_attack(server.url, pin, spray + targeted))
        assert Counter(r.status_code for r in replies) == {401: len(spray) + len(targeted)}
        assert {r.json()["code"] for r in replies} == {"activation_code_invalid"}
        assert len({r.content for r in replies}) == 1  # one answer, whatever was hit

        # 3. the luckiest attacker: the right code, once the budget is spent
        lucky = asyncio.run(
            _attack(server.url, pin, [start_body("bank", v, typed=True) for v in victims])
        )
        assert Counter(r.status_code for r in lucky) == {401: VICTIMS}

        # each code was compared exactly its budget of times, concurrency notwithstanding,
        # and burnt; nothing else was touched
        for victim in victims:
            failures = code_failures(kb, victim["operationId"])
            assert [f["attemptsLeft"] for f in failures] == list(
                range(MAX_CODE_ATTEMPTS - 1, -1, -1)
            )
        with kb.db.read() as conn:
            rows = {r.operation_id: r for r in conn.execute(select(t.activation_secrets))}
        assert all(rows[v["operationId"]].hint is None for v in victims)
        assert rows[bystander["operationId"]].attempts_left == MAX_CODE_ATTEMPTS

        # 4. the genuine users: every victim through the link, the bystander by typing
        for victim in victims:
            assert RawDevice(rp.http, "bank").activate(victim).status_code == 200
        assert RawDevice(rp.http, "bank").activate(bystander, typed=True).status_code == 200
        assert {rp.operation(v["operationId"])["state"] for v in [*victims, bystander]} == {
            "COMPLETED"
        }


def test_concurrent_guesses_are_compared_at_most_the_budget(server: BackgroundServer) -> None:
    """Counting happens before comparing, in one conditional statement: however many
    guesses arrive at once, at most the budget is compared, so the right code among 30
    concurrent guesses wins only if it is among the first MAX_CODE_ATTEMPTS served."""
    kb = server.kb
    client, pin, token = _local(kb, "burst")
    with client:
        local = SealingClient(client, kb.clock)
        local.pins["burst"] = pin
        rp = RelyingParty(local, "burst", token)
        for _ in range(6):
            code = rp.activation_code()
            bodies = [
                {
                    "applicationId": "burst",
                    "activationHint": code["activationHint"],
                    "activationCode": wrong_code(code["activationCode"]),
                }
                for _ in range(29)
            ]
            bodies.insert(random.randrange(30), start_body("burst", code, typed=True))
            replies = asyncio.run(_attack(server.url, pin, bodies))
            wins = sum(r.status_code == 200 for r in replies)
            failures = code_failures(kb, code["operationId"])
            assert wins + len(failures) <= MAX_CODE_ATTEMPTS
            assert wins <= 1
            if not wins:  # burnt: the link is what is left, and it works
                assert len(failures) == MAX_CODE_ATTEMPTS
                assert RawDevice(rp.http, "burst").activate(code).status_code == 200
