"""FCM HTTP v1 provider against a local receiver that speaks Google's OAuth token endpoint and
FCM's send endpoint (tests/server/notify/fcm_receiver.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keybound.errors import ConfigurationInvalid
from keybound.server.notify.base import EVENT_TYPE, OutcomeKind, PushHint
from keybound.server.notify.fcm import FcmConfig, FcmProvider, ServiceAccount
from tests.conftest import FakeClock
from tests.server.notify.fcm_receiver import Answer, FcmReceiver, Registration
from tests.server.notify.servers import ThreadedServer, free_port, frequent_thread_switches

pytestmark = pytest.mark.server

PROJECT = "keybound-test"
EMAIL = "push@keybound-test.iam.gserviceaccount.com"
KEY_ID = "5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ff"
HINT = PushHint(application_id="bank", device_id="3f2c6f1e-8a4b-4c2d-9e1f-0a1b2c3d4e5f")
TOKEN = "dGVzdC10b2tlbg:APA91bH" + "x" * 140
DEFAULT_RETRY = 45.0


@pytest.fixture(scope="module")
def account_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def service_account_json(key: rsa.RSAPrivateKey, token_uri: str) -> str:
    """A key file as the Google Cloud console issues it."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": KEY_ID,
            "private_key": pem,
            "client_email": EMAIL,
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "universe_domain": "googleapis.com",
        }
    )


@dataclass
class Fcm:
    receiver: FcmReceiver
    provider: FcmProvider
    url: str


@pytest.fixture
def fcm(clock: FakeClock, account_key: rsa.RSAPrivateKey) -> Iterator[Fcm]:
    receiver = FcmReceiver(
        project_id=PROJECT,
        client_email=EMAIL,
        private_key_id=KEY_ID,
        public_key=account_key.public_key(),
        clock=clock,
    )
    receiver.registrations[TOKEN] = Answer(registration=Registration.VALID)
    with ThreadedServer(receiver) as server:
        receiver.base_url = server.url
        provider = provider_for(
            service_account_json(account_key, receiver.token_uri), server.url, clock
        )
        try:
            yield Fcm(receiver, provider, server.url)
        finally:
            provider.close()


def provider_for(account_json: str, url: str, clock: FakeClock) -> FcmProvider:
    config = FcmConfig(
        service_account=ServiceAccount.from_json(account_json),
        api_base_url=url,
        default_retry_seconds=DEFAULT_RETRY,
    )
    return FcmProvider(config, clock=clock)


def test_delivers_a_data_only_hint(fcm: Fcm) -> None:
    outcome = fcm.provider.send(TOKEN, HINT)

    assert outcome.kind is OutcomeKind.DELIVERED
    assert outcome.message_id is not None
    assert outcome.message_id.startswith(f"projects/{PROJECT}/messages/")
    [(status, message)] = fcm.receiver.sends
    assert status == 200 and message is not None
    assert message["token"] == TOKEN
    assert message["data"] == {"type": EVENT_TYPE, "applicationId": "bank"}
    assert "notification" not in message  # data-only: the app decides what to show
    assert HINT.device_id not in json.dumps(message)
    assert message["android"]["priority"] == "HIGH"
    [claims] = fcm.receiver.token_requests
    assert claims["aud"] == fcm.receiver.token_uri
    assert claims["exp"] - claims["iat"] == 3600


def test_access_token_is_reused_until_it_expires(fcm: Fcm, clock: FakeClock) -> None:
    for _ in range(3):
        assert fcm.provider.send(TOKEN, HINT).kind is OutcomeKind.DELIVERED
        clock.advance(600)
    assert len(fcm.receiver.token_requests) == 1

    clock.advance(3599 - 1800 - 60)  # inside the refresh margin: replaced before use
    assert fcm.provider.send(TOKEN, HINT).kind is OutcomeKind.DELIVERED
    assert len(fcm.receiver.token_requests) == 2
    assert [status for status, _ in fcm.receiver.sends] == [200] * 4  # never a 401


def test_expired_access_token_is_refreshed(fcm: Fcm, clock: FakeClock) -> None:
    """Expired at Google before the provider expected it: 401, a new token, sent once more."""
    assert fcm.provider.send(TOKEN, HINT).kind is OutcomeKind.DELIVERED
    fcm.receiver.revoke_access_tokens()

    outcome = fcm.provider.send(TOKEN, HINT)

    assert outcome.kind is OutcomeKind.DELIVERED
    assert [status for status, _ in fcm.receiver.sends] == [200, 401, 200]
    assert len(fcm.receiver.token_requests) == 2


def test_expiry_after_advertised_lifetime_fetches_a_new_token_first(
    fcm: Fcm, clock: FakeClock
) -> None:
    fcm.receiver.access_token_lifetime = 300
    assert fcm.provider.send(TOKEN, HINT).kind is OutcomeKind.DELIVERED
    clock.advance(301)
    assert fcm.provider.send(TOKEN, HINT).kind is OutcomeKind.DELIVERED
    assert [status for status, _ in fcm.receiver.sends] == [200, 200]
    assert len(fcm.receiver.token_requests) == 2


def test_second_401_fails_without_looping(fcm: Fcm) -> None:
    fcm.receiver.accept_access_tokens = False

    outcome = fcm.provider.send(TOKEN, HINT)

    assert (outcome.kind, outcome.reason) == (OutcomeKind.FAILED, "UNAUTHENTICATED")
    assert [status for status, _ in fcm.receiver.sends] == [401, 401]
    assert len(fcm.receiver.token_requests) == 2


@pytest.mark.parametrize(
    ("registration", "reason"),
    [
        (Registration.UNREGISTERED, "UNREGISTERED"),
        (Registration.INVALID, "INVALID_ARGUMENT"),
        (Registration.SENDER_ID_MISMATCH, "SENDER_ID_MISMATCH"),
    ],
)
def test_dead_registration_token_is_dropped(
    fcm: Fcm, registration: Registration, reason: str
) -> None:
    fcm.receiver.registrations[TOKEN] = Answer(registration=registration)
    outcome = fcm.provider.send(TOKEN, HINT)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.TOKEN_INVALID, reason)


def test_invalid_argument_about_another_field_keeps_the_token(fcm: Fcm) -> None:
    fcm.receiver.registrations[TOKEN] = Answer(registration=Registration.BAD_PACKAGE)
    outcome = fcm.provider.send(TOKEN, HINT)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.FAILED, "INVALID_ARGUMENT")


def test_quota_exceeded_retries_after_retry_after(fcm: Fcm) -> None:
    fcm.receiver.registrations[TOKEN] = Answer(registration=Registration.QUOTA, retry_after="120")
    outcome = fcm.provider.send(TOKEN, HINT)
    assert (outcome.kind, outcome.retry_after, outcome.reason) == (
        OutcomeKind.RETRY,
        120.0,
        "QUOTA_EXCEEDED",
    )


def test_unavailable_retries_at_an_http_date(fcm: Fcm, clock: FakeClock) -> None:
    at = datetime.fromtimestamp(int(clock()) + 90, tz=UTC)
    fcm.receiver.registrations[TOKEN] = Answer(
        registration=Registration.UNAVAILABLE, retry_after=format_datetime(at, usegmt=True)
    )
    outcome = fcm.provider.send(TOKEN, HINT)
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.retry_after == pytest.approx(90, abs=1)


def test_internal_without_retry_after_uses_the_default(fcm: Fcm) -> None:
    fcm.receiver.registrations[TOKEN] = Answer(registration=Registration.INTERNAL)
    outcome = fcm.provider.send(TOKEN, HINT)
    assert (outcome.kind, outcome.retry_after, outcome.reason) == (
        OutcomeKind.RETRY,
        DEFAULT_RETRY,
        "INTERNAL",
    )


def test_assertion_signed_with_another_key_is_refused(fcm: Fcm, clock: FakeClock) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    provider = provider_for(service_account_json(other, fcm.receiver.token_uri), fcm.url, clock)
    try:
        outcome = provider.send(TOKEN, HINT)
    finally:
        provider.close()
    assert (outcome.kind, outcome.reason) == (OutcomeKind.FAILED, "token endpoint: invalid_grant")
    assert fcm.receiver.token_refusals == ["invalid_grant"]
    assert fcm.receiver.sends == []


def test_malformed_registration_token_never_leaves(fcm: Fcm) -> None:
    for token in ("", "short", "a" * 20 + "/../../x", "x" * 5000, "tok en" * 5):
        assert fcm.provider.send(token, HINT).kind is OutcomeKind.TOKEN_INVALID
    assert fcm.receiver.sends == [] and fcm.receiver.token_requests == []


def test_unreachable_service_is_retried(account_key: rsa.RSAPrivateKey, clock: FakeClock) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    provider = provider_for(service_account_json(account_key, f"{url}/token"), url, clock)
    try:
        outcome = provider.send(TOKEN, HINT)
    finally:
        provider.close()
    assert (outcome.kind, outcome.retry_after) == (OutcomeKind.RETRY, DEFAULT_RETRY)


def test_service_account_file_is_checked(account_key: rsa.RSAPrivateKey) -> None:
    good = json.loads(service_account_json(account_key, "https://oauth2.googleapis.com/token"))
    assert ServiceAccount.from_json(json.dumps(good)).project_id == PROJECT
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    for bad in (
        {**good, "type": "authorized_user"},
        {**good, "private_key": ec_pem},
        {**good, "private_key": "nope"},
        {**good, "project_id": "../etc"},
        {k: v for k, v in good.items() if k != "token_uri"},
    ):
        with pytest.raises(ConfigurationInvalid):
            ServiceAccount.from_json(json.dumps(bad))
    assert "PRIVATE" not in repr(ServiceAccount.from_json(json.dumps(good)))


def test_concurrent_401s_fetch_one_new_token(fcm: Fcm) -> None:
    """Senders that all hit the revoked token share the one replacement."""
    assert fcm.provider.send(TOKEN, HINT).kind is OutcomeKind.DELIVERED
    fcm.receiver.revoke_access_tokens()
    with frequent_thread_switches(), ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda _: fcm.provider.send(TOKEN, HINT), range(24)))
    assert {(outcome.kind, outcome.reason) for outcome in outcomes} == {(OutcomeKind.DELIVERED, "")}
    assert len(fcm.receiver.token_requests) == 2
