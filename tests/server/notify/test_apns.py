"""APNs provider against a local receiver that speaks the provider API over real HTTP/2 and
TLS (tests/server/notify/apns_receiver.py)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keybound.errors import ConfigurationInvalid
from keybound.server.notify.apns import ApnsConfig, ApnsProvider, ApnsPushType, load_p8
from keybound.server.notify.base import EVENT_TYPE, OutcomeKind, PushHint
from tests.conftest import FakeClock
from tests.server.notify.apns_receiver import Answer, ApnsReceiver, Device
from tests.server.notify.servers import ThreadedServer, Tls, frequent_thread_switches, make_tls

pytestmark = pytest.mark.server

TEAM, KEY_ID, TOPIC = "TEAM123456", "KEY1234567", "com.example.bank"
HINT = PushHint(application_id="bank", device_id="3f2c6f1e-8a4b-4c2d-9e1f-0a1b2c3d4e5f")
TOKEN = "a1" * 32  # 32 bytes, hex, as iOS hands it over today
DEFAULT_RETRY = 45.0


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("apns-tls"))


@pytest.fixture(scope="module")
def p8() -> bytes:
    """An AuthKey_<key id>.p8 as Apple issues it: PKCS#8 PEM, P-256."""
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class Apns:
    receiver: ApnsReceiver
    provider: ApnsProvider
    config: ApnsConfig
    url: str


def config_for(p8: bytes, url: str, **overrides: object) -> ApnsConfig:
    values: dict[str, object] = {
        "team_id": TEAM,
        "key_id": KEY_ID,
        "signing_key": load_p8(p8),
        "topic": TOPIC,
        "base_url": url,
        "default_retry_seconds": DEFAULT_RETRY,
    }
    values.update(overrides)
    return ApnsConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def apns(clock: FakeClock, tls: Tls, p8: bytes) -> Iterator[Apns]:
    receiver = ApnsReceiver(
        team_id=TEAM, key_id=KEY_ID, topic=TOPIC, clock=clock, public_key=load_p8(p8).public_key()
    )
    receiver.devices[TOKEN] = Answer(device=Device.ACTIVE)
    with ThreadedServer(receiver, tls=tls) as server:
        config = config_for(p8, server.url)
        provider = ApnsProvider(config, clock=clock, verify=tls.client_context())
        try:
            yield Apns(receiver, provider, config, server.url)
        finally:
            provider.close()


def other_provider(apns: Apns, tls: Tls, clock: FakeClock, **overrides: Any) -> ApnsProvider:
    return ApnsProvider(
        dataclasses.replace(apns.config, **overrides), clock=clock, verify=tls.client_context()
    )


def test_delivers_a_background_hint_over_http2(apns: Apns, clock: FakeClock) -> None:
    outcome = apns.provider.send(TOKEN, HINT)

    assert outcome.kind is OutcomeKind.DELIVERED
    assert outcome.message_id is not None
    uuid.UUID(outcome.message_id)
    [seen] = apns.receiver.seen
    assert (seen.status, seen.http_version, seen.path) == (200, "2", f"/3/device/{TOKEN}")
    assert seen.headers["apns-topic"] == TOPIC
    assert seen.headers["apns-push-type"] == "background"
    assert seen.headers["apns-priority"] == "5"
    assert seen.headers["apns-expiration"] == str(int(clock()) + 300)
    assert seen.payload == {
        "aps": {"content-available": 1},
        "keybound": {"type": EVENT_TYPE, "applicationId": "bank"},
    }
    assert HINT.device_id not in json.dumps(seen.payload)
    assert seen.token_header == {"alg": "ES256", "kid": KEY_ID}
    assert seen.token_claims == {"iss": TEAM, "iat": int(clock())}


def test_alert_push_shows_the_operators_text(apns: Apns, tls: Tls, clock: FakeClock) -> None:
    provider = other_provider(
        apns,
        tls,
        clock,
        push_type=ApnsPushType.ALERT,
        alert_title="Bank",
        alert_body="A request is waiting",
    )
    try:
        assert provider.send(TOKEN, HINT).kind is OutcomeKind.DELIVERED
    finally:
        provider.close()
    [seen] = apns.receiver.seen
    assert (seen.headers["apns-push-type"], seen.headers["apns-priority"]) == ("alert", "10")
    assert seen.payload["aps"] == {"alert": {"title": "Bank", "body": "A request is waiting"}}


def test_provider_token_reused_then_renewed_before_the_hour(apns: Apns, clock: FakeClock) -> None:
    first = int(clock())
    assert apns.provider.send(TOKEN, HINT).kind is OutcomeKind.DELIVERED
    clock.advance(49 * 60)
    assert apns.provider.send(TOKEN, HINT).kind is OutcomeKind.DELIVERED
    clock.advance(2 * 60)
    assert apns.provider.send(TOKEN, HINT).kind is OutcomeKind.DELIVERED

    assert [seen.token_claims["iat"] for seen in apns.receiver.seen] == [
        first,
        first,
        first + 51 * 60,
    ]
    assert [seen.status for seen in apns.receiver.seen] == [200, 200, 200]


def test_expired_provider_token_is_re_signed_and_retried(apns: Apns, clock: FakeClock) -> None:
    """APNs finds the token too old before the provider meant to renew it."""
    apns.receiver.max_token_age = 30 * 60
    assert apns.provider.send(TOKEN, HINT).kind is OutcomeKind.DELIVERED
    clock.advance(31 * 60)

    outcome = apns.provider.send(TOKEN, HINT)

    assert outcome.kind is OutcomeKind.DELIVERED
    seen = apns.receiver.seen
    assert [(s.status, s.reason) for s in seen] == [
        (200, "delivered"),
        (403, "ExpiredProviderToken"),
        (200, "delivered"),
    ]
    assert seen[2].token_claims["iat"] == int(clock())
    assert seen[1].headers["authorization"] == seen[0].headers["authorization"]
    assert seen[2].headers["authorization"] != seen[1].headers["authorization"]


def test_expired_twice_fails_without_looping(apns: Apns) -> None:
    apns.receiver.max_token_age = -1  # no token is young enough
    outcome = apns.provider.send(TOKEN, HINT)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.FAILED, "ExpiredProviderToken")
    assert len(apns.receiver.seen) == 2


def test_token_signed_with_another_key_fails(apns: Apns, tls: Tls, clock: FakeClock) -> None:
    provider = other_provider(apns, tls, clock, signing_key=ec.generate_private_key(ec.SECP256R1()))
    try:
        outcome = provider.send(TOKEN, HINT)
    finally:
        provider.close()
    assert (outcome.kind, outcome.reason) == (OutcomeKind.FAILED, "InvalidProviderToken")
    assert len(apns.receiver.seen) == 1


def test_unregistered_token_is_dropped_with_its_timestamp(apns: Apns, clock: FakeClock) -> None:
    since_ms = int(clock() * 1000) - 86_400_000
    apns.receiver.devices[TOKEN] = Answer(device=Device.UNREGISTERED, unregistered_at_ms=since_ms)
    outcome = apns.provider.send(TOKEN, HINT)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.TOKEN_INVALID, "Unregistered")
    assert outcome.invalid_since == since_ms / 1000


@pytest.mark.parametrize(
    ("device", "reason"),
    [(Device.BAD_TOKEN, "BadDeviceToken"), (Device.NOT_FOR_TOPIC, "DeviceTokenNotForTopic")],
)
def test_bad_device_token_is_dropped(apns: Apns, device: Device, reason: str) -> None:
    apns.receiver.devices[TOKEN] = Answer(device=device)
    outcome = apns.provider.send(TOKEN, HINT)
    assert (outcome.kind, outcome.reason, outcome.invalid_since) == (
        OutcomeKind.TOKEN_INVALID,
        reason,
        None,
    )


def test_unknown_token_is_a_bad_device_token(apns: Apns) -> None:
    outcome = apns.provider.send("b2" * 32, HINT)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.TOKEN_INVALID, "BadDeviceToken")


@pytest.mark.parametrize(
    ("answer", "delay", "reason"),
    [
        (Answer(device=Device.TOO_MANY), DEFAULT_RETRY, "TooManyRequests"),
        (Answer(device=Device.UNAVAILABLE, retry_after="30"), 30.0, "ServiceUnavailable"),
    ],
)
def test_throttled_or_unavailable_retries(
    apns: Apns, answer: Answer, delay: float, reason: str
) -> None:
    apns.receiver.devices[TOKEN] = answer
    outcome = apns.provider.send(TOKEN, HINT)
    assert (outcome.kind, outcome.retry_after, outcome.reason) == (OutcomeKind.RETRY, delay, reason)


def test_malformed_device_token_never_reaches_a_path(apns: Apns) -> None:
    for token in (
        "",
        "a1" * 7,
        "../../3/device/" + "a1" * 32,
        "zz" * 32,
        "a1" * 32 + "?x=1",
        "a" * 63,
    ):
        assert apns.provider.send(token, HINT).kind is OutcomeKind.TOKEN_INVALID
    assert apns.receiver.seen == []


def test_untrusted_certificate_is_refused(
    apns: Apns, p8: bytes, clock: FakeClock, tmp_path: Path
) -> None:
    """Verification is on: a client that trusts another CA does not talk to the receiver."""
    stranger = make_tls(tmp_path)
    provider = ApnsProvider(apns.config, clock=clock, verify=stranger.client_context())
    try:
        outcome = provider.send(TOKEN, HINT)
    finally:
        provider.close()
    assert (outcome.kind, outcome.reason) == (OutcomeKind.RETRY, "ConnectError")
    assert apns.receiver.seen == []


def test_receiver_refuses_http1(apns: Apns, tls: Tls) -> None:
    """The receiver's HTTP/2 check is real, so the provider's HTTP/2 is proven above."""
    with httpx.Client(verify=tls.client_context()) as client:
        response = client.post(f"{apns.url}/3/device/{TOKEN}", content=b"{}")
    assert (response.status_code, response.http_version) == (505, "HTTP/1.1")


def test_config_is_checked(p8: bytes) -> None:
    with pytest.raises(ConfigurationInvalid):
        config_for(p8, "https://x", team_id="short")
    with pytest.raises(ConfigurationInvalid):
        config_for(p8, "https://x", token_refresh_seconds=3600)
    with pytest.raises(ConfigurationInvalid):
        config_for(p8, "https://x", token_refresh_seconds=60)
    with pytest.raises(ConfigurationInvalid):
        config_for(p8, "https://x", push_type=ApnsPushType.ALERT)
    with pytest.raises(ConfigurationInvalid):
        load_p8(
            ec.generate_private_key(ec.SECP384R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with pytest.raises(ConfigurationInvalid):
        load_p8(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    assert "PRIVATE" not in repr(config_for(p8, "https://x"))


def test_concurrent_expiries_re_sign_once(apns: Apns, clock: FakeClock) -> None:
    """Senders on many threads that all get ExpiredProviderToken share one new token (APNs
    frowns on more than one new token per 20 minutes), and none breaks another's HTTP/2
    stream (a client shared between threads did: PROTOCOL_ERROR from the server)."""
    apns.receiver.max_token_age = 30 * 60
    assert apns.provider.send(TOKEN, HINT).kind is OutcomeKind.DELIVERED
    clock.advance(31 * 60)
    with frequent_thread_switches(), ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(lambda _: apns.provider.send(TOKEN, HINT), range(48)))
    assert {(outcome.kind, outcome.reason) for outcome in outcomes} == {(OutcomeKind.DELIVERED, "")}
    assert len({seen.headers["authorization"] for seen in apns.receiver.seen}) == 2
    assert len({seen.peer for seen in apns.receiver.seen}) <= apns.config.connections
