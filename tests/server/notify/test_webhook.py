"""Webhook provider against a real HTTP server standing in for the relying party's push
service."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import httpx
import pytest

from keybound.errors import ConfigurationInvalid
from keybound.server.notify.base import EVENT_TYPE, OutcomeKind, PushHint
from keybound.server.notify.webhook import WebhookConfig, WebhookProvider
from tests.conftest import FakeClock
from tests.server.notify.servers import (
    Receive,
    Scope,
    Send,
    ThreadedServer,
    lifespan,
    read_body,
    respond,
)

pytestmark = pytest.mark.server

HINT = PushHint(application_id="bank", device_id="3f2c6f1e-8a4b-4c2d-9e1f-0a1b2c3d4e5f")
TOKEN = "rp-app-install-42"
SECRET = b"push-service-secret"
DEFAULT_RETRY = 45.0


@dataclass
class PushService:
    """Answers by path: /ok 204, /gone 410, /busy 503 (Retry-After 7), /moved 302 to /ok,
    /bad 400, /slow 204 after two seconds."""

    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        body = await read_body(receive)
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        self.requests.append((scope["path"], headers, body))
        match scope["path"]:
            case "/ok":
                await respond(send, 204, b"")
            case "/gone":
                await respond(send, 410, b"")
            case "/busy":
                await respond(send, 503, b"", {"retry-after": "7"})
            case "/moved":
                await respond(send, 302, b"", {"location": "/ok"})
            case "/slow":
                await asyncio.sleep(2)
                await respond(send, 204, b"")
            case _:
                await respond(send, 400, b"")


@pytest.fixture
def service() -> Iterator[tuple[PushService, str]]:
    receiver = PushService()
    with ThreadedServer(receiver) as server:
        yield receiver, server.url


def sign(body: bytes) -> Mapping[str, str]:
    digest = hmac.new(SECRET, body, hashlib.sha256).digest()
    return {"x-test-signature": base64.b64encode(digest).decode()}


def send(url: str, clock: FakeClock, *, timeout: float = 5.0) -> tuple[OutcomeKind, float | None]:
    provider = WebhookProvider(
        WebhookConfig(url=url, timeout_seconds=timeout, default_retry_seconds=DEFAULT_RETRY),
        headers_for=sign,
        clock=clock,
    )
    try:
        outcome = provider.send(TOKEN, HINT)
    finally:
        provider.close()
    return outcome.kind, outcome.retry_after


def test_posts_the_hint_with_the_signers_headers(
    service: tuple[PushService, str], clock: FakeClock
) -> None:
    receiver, url = service
    assert send(f"{url}/ok", clock) == (OutcomeKind.DELIVERED, None)

    [(_, headers, body)] = receiver.requests
    assert headers["content-type"] == "application/json"
    assert hmac.compare_digest(headers["x-test-signature"], sign(body)["x-test-signature"])
    payload = json.loads(body)
    assert payload == {
        "type": EVENT_TYPE,
        "timestamp": payload["timestamp"],
        "data": {"applicationId": "bank", "deviceId": HINT.device_id, "pushToken": TOKEN},
    }
    assert payload["timestamp"].endswith("Z")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/gone", (OutcomeKind.TOKEN_INVALID, None)),
        ("/busy", (OutcomeKind.RETRY, 7.0)),
        ("/bad", (OutcomeKind.FAILED, None)),
    ],
)
def test_answers_map_to_outcomes(
    service: tuple[PushService, str],
    clock: FakeClock,
    path: str,
    expected: tuple[OutcomeKind, float | None],
) -> None:
    assert send(f"{service[1]}{path}", clock) == expected


def test_redirect_is_not_followed(service: tuple[PushService, str], clock: FakeClock) -> None:
    receiver, url = service
    assert send(f"{url}/moved", clock) == (OutcomeKind.FAILED, None)
    assert [path for path, _, _ in receiver.requests] == ["/moved"]


def test_slow_service_costs_at_most_the_timeout(
    service: tuple[PushService, str], clock: FakeClock
) -> None:
    assert send(f"{service[1]}/slow", clock, timeout=0.3) == (OutcomeKind.RETRY, DEFAULT_RETRY)


def test_redirect_following_client_is_refused() -> None:
    with httpx.Client(follow_redirects=True) as client, pytest.raises(ConfigurationInvalid):
        WebhookProvider(WebhookConfig(url="https://push.example"), client=client)
    with pytest.raises(ConfigurationInvalid):
        WebhookConfig(url="file:///etc/passwd")
    with pytest.raises(ConfigurationInvalid):
        WebhookConfig(url="http://[::1")
