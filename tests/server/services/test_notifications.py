"""Device notifications end to end: the operator configures a provider, the device registers
its push token (signed, sealed), the relying party creates an operation, the sender wakes the
device through local receivers that speak FCM HTTP v1, APNs (HTTP/2, TLS) and a Standard
Webhooks push service -- including their refusals, after which the token is dropped and the
operation carries on untouched."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import select

from keybound import crypto
from keybound import protocol as p
from keybound.server.events.ssrf import EndpointPolicy
from keybound.server.notify.base import ProviderKind
from keybound.server.secrets import Purpose
from keybound.server.services import Keybound
from keybound.storage import tables as t
from tests.conftest import FakeClock
from tests.helpers import RawDevice, RelyingParty, problem_code
from tests.server.events.receiver import Receiver, Reply
from tests.server.notify.apns_receiver import Answer as ApnsAnswer
from tests.server.notify.apns_receiver import ApnsReceiver, Device
from tests.server.notify.fcm_receiver import Answer as FcmAnswer
from tests.server.notify.fcm_receiver import FcmReceiver, Registration
from tests.server.notify.servers import ThreadedServer, Tls, make_tls
from tests.server.notify.test_fcm import EMAIL, KEY_ID, PROJECT, service_account_json
from tests.server.services.outbox_driver import LOOPBACK, deliver

pytestmark = pytest.mark.server

FCM_TOKEN = "ZmNtLXRva2Vu:APA91bH" + "y" * 140
APNS_TOKEN = "b2" * 32
TEAM, APNS_KEY, TOPIC = "TEAM123456", "KEY1234567", "com.example.bank"


@pytest.fixture
def endpoint_policy() -> EndpointPolicy:
    return LOOPBACK


@pytest.fixture(scope="module")
def account_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def p8() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("apns-tls"))


@pytest.fixture
def fcm(clock: FakeClock, account_key: rsa.RSAPrivateKey) -> Iterator[FcmReceiver]:
    receiver = FcmReceiver(
        project_id=PROJECT,
        client_email=EMAIL,
        private_key_id=KEY_ID,
        public_key=account_key.public_key(),
        clock=clock,
    )
    receiver.registrations[FCM_TOKEN] = FcmAnswer(registration=Registration.VALID)
    with ThreadedServer(receiver) as server:
        receiver.base_url = server.url
        yield receiver


@pytest.fixture
def apns(clock: FakeClock, tls: Tls, p8: bytes) -> Iterator[tuple[ApnsReceiver, str]]:
    key = serialization.load_pem_private_key(p8, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    receiver = ApnsReceiver(
        team_id=TEAM, key_id=APNS_KEY, topic=TOPIC, clock=clock, public_key=key.public_key()
    )
    receiver.devices[APNS_TOKEN] = ApnsAnswer(device=Device.ACTIVE)
    with ThreadedServer(receiver, tls=tls) as server:
        yield receiver, server.url


def with_fcm(
    kb: Keybound, rp: RelyingParty, fcm: FcmReceiver, account_key: rsa.RSAPrivateKey
) -> None:
    kb.admin.set_push_provider(
        rp.app_id,
        ProviderKind.FCM,
        {"apiBaseUrl": fcm.base_url},
        service_account_json(account_key, fcm.token_uri).encode(),
    )


def with_apns(
    kb: Keybound, rp: RelyingParty, url: str, tls: Tls, p8: bytes, tmp_path: Path
) -> None:
    ca = tmp_path / "apns-ca.pem"
    ca.write_bytes(tls.ca_pem)
    kb.admin.set_push_provider(
        rp.app_id,
        ProviderKind.APNS,
        {"teamId": TEAM, "keyId": APNS_KEY, "topic": TOPIC, "baseUrl": url, "caFile": str(ca)},
        p8,
    )


def activated(rp: RelyingParty, token: p.PushToken | None = None) -> RawDevice:
    device = RawDevice(rp.http, rp.app_id)
    start = device.start_activation(rp.activation_code())
    request = device.activation_request(start).model_copy(update={"push_token": token})
    assert device.post(p.DevicePaths.ACTIVATION_FINISH, request).status_code == 200
    return device


def push_token_request(
    device: RawDevice, token: p.PushToken | None, *, key: Any = None
) -> p.PushTokenRequest:
    key = key or device.sw
    tbs = p.transcript(
        p.Purpose.PUSH_TOKEN,
        application_id=device.app_id,
        device_id=device.device_id,
        operation_id="",
        challenge=b"",
        context_digest=p.push_token_hash(token),
        software_public_key=crypto.public_der(key),
    )
    return p.PushTokenRequest(
        application_id=device.app_id,
        device_id=device.device_id,
        software_key_id=crypto.key_id(crypto.public_der(key)),
        push_token=token,
        software_signature=crypto.sign_p256(key, tbs),
    )


def stored_token(kb: Keybound, device_id: str) -> tuple[str, str] | None:
    with kb.db.read() as conn:
        row = conn.execute(
            select(t.push_tokens.c.provider, t.push_tokens.c.token).where(
                t.push_tokens.c.device_id == device_id
            )
        ).first()
    return None if row is None else (row.provider, row.token)


def notifications(kb: Keybound) -> list[Any]:
    with kb.db.read() as conn:
        return list(conn.execute(select(t.push_notifications).order_by(t.push_notifications.c.id)))


# -- the push token: at activation, and the signed device endpoint -----------------------------


def test_the_push_token_is_registered_updated_and_removed_by_signed_requests(
    rp: RelyingParty, kb: Keybound
) -> None:
    fcm_token = p.PushToken(provider=p.PushProvider.FCM, token=FCM_TOKEN)
    device = activated(rp, fcm_token)
    assert stored_token(kb, device.device_id) == ("fcm", FCM_TOKEN)
    apns_token = p.PushToken(provider=p.PushProvider.APNS, token=APNS_TOKEN)
    answer = device.post(p.DevicePaths.PUSH_TOKEN, push_token_request(device, apns_token))
    assert answer.status_code == 200 and answer.json()["pushProvider"] == "apns"
    assert stored_token(kb, device.device_id) == ("apns", APNS_TOKEN)
    assert (
        device.post(p.DevicePaths.PUSH_TOKEN, push_token_request(device, None)).status_code == 200
    )
    assert stored_token(kb, device.device_id) is None


def test_a_push_token_change_needs_the_current_key_and_a_valid_signature(
    rp: RelyingParty, kb: Keybound
) -> None:
    device = activated(rp, p.PushToken(provider=p.PushProvider.FCM, token=FCM_TOKEN))
    old_key = device.sw
    assert device.authenticate().status_code == 200  # the software key rotates
    hijack = p.PushToken(provider=p.PushProvider.FCM, token="attacker:" + "z" * 40)
    stale = push_token_request(device, hijack, key=old_key)
    assert problem_code(device.post(p.DevicePaths.PUSH_TOKEN, stale)) == "authentication_failed"
    forged = push_token_request(device, hijack).model_copy(
        update={"push_token": p.PushToken(provider=p.PushProvider.FCM, token="other:" + "q" * 40)}
    )
    assert (
        problem_code(device.post(p.DevicePaths.PUSH_TOKEN, forged)) == "authentication_failed"
    )  # the signature binds the token it was made for
    assert stored_token(kb, device.device_id) == ("fcm", FCM_TOKEN)


def test_malformed_tokens_and_deactivated_devices_are_refused(
    rp: RelyingParty, kb: Keybound
) -> None:
    device = RawDevice(rp.http, rp.app_id)
    start = device.start_activation(rp.activation_code())
    not_hex = p.PushToken(provider=p.PushProvider.APNS, token="not-a-hex-token")
    bad = device.activation_request(start).model_copy(update={"push_token": not_hex})
    assert problem_code(device.post(p.DevicePaths.ACTIVATION_FINISH, bad)) == "malformed_request"
    # nothing was consumed: the same ceremony completes with a good token
    good = device.activation_request(start).model_copy(
        update={"push_token": p.PushToken(provider=p.PushProvider.APNS, token=APNS_TOKEN)}
    )
    assert device.post(p.DevicePaths.ACTIVATION_FINISH, good).status_code == 200
    refused = device.post(p.DevicePaths.PUSH_TOKEN, push_token_request(device, not_hex))
    assert problem_code(refused) == "malformed_request"
    rp.call("POST", f"/rp/v1/devices/{device.device_id}/deactivate", expect=200)
    again = device.post(
        p.DevicePaths.PUSH_TOKEN,
        push_token_request(device, p.PushToken(provider=p.PushProvider.APNS, token=APNS_TOKEN)),
    )
    assert problem_code(again) == "device_inactive"


# -- FCM HTTP v1 ------------------------------------------------------------------------------


def test_fcm_wakes_the_device_with_a_hint_and_nothing_more(
    rp: RelyingParty,
    kb: Keybound,
    clock: FakeClock,
    fcm: FcmReceiver,
    account_key: rsa.RSAPrivateKey,
) -> None:
    with_fcm(kb, rp, fcm, account_key)
    device = activated(rp, p.PushToken(provider=p.PushProvider.FCM, token=FCM_TOKEN))
    operation = rp.start_operation(
        device.device_id,
        preOperationContext={"content": "Pay 100 EUR to ACME", "mimeType": "text/plain"},
    )
    deliver(kb, clock)
    ((status, message),) = fcm.sends
    assert status == 200 and message is not None
    assert message["token"] == FCM_TOKEN
    assert message["data"] == {"type": "device.operation_pending", "applicationId": rp.app_id}
    assert operation["operationId"] not in json.dumps(message)  # no content through Google
    assert device.device_id not in json.dumps(message)
    assert [n.state for n in notifications(kb)] == ["delivered"]
    # the device then learns what waits by polling, over the secure channel
    pending = device.post(
        p.DevicePaths.PENDING_OPERATIONS,
        p.PendingOperationsRequest(application_id=rp.app_id, device_id=device.device_id),
    ).json()
    assert [o["operationId"] for o in pending["operations"]] == [operation["operationId"]]


def test_a_signature_operation_wakes_the_device_as_an_authentication_does(
    rp: RelyingParty,
    kb: Keybound,
    clock: FakeClock,
    fcm: FcmReceiver,
    account_key: rsa.RSAPrivateKey,
) -> None:
    """A signature (docs/protocol.md §3.2.6) is backend-initiated too: the same
    device.operation_pending event, the same wake-up, and nothing of the data to sign."""
    with_fcm(kb, rp, fcm, account_key)
    device = activated(rp, p.PushToken(provider=p.PushProvider.FCM, token=FCM_TOKEN))
    contract = "I, Alice, agree to the loan contract #4711"
    signature = rp.start_signature(device.device_id, contract)
    authentication = rp.start_operation(device.device_id)
    deliver(kb, clock)
    assert len(fcm.sends) == 2  # one wake-up each
    for status, message in fcm.sends:
        assert status == 200 and message is not None
        assert message["token"] == FCM_TOKEN
        assert message["data"] == {"type": "device.operation_pending", "applicationId": rp.app_id}
        assert contract not in json.dumps(message)
    assert [(n.operation_id, n.state) for n in notifications(kb)] == [
        (signature["operationId"], "delivered"),
        (authentication["operationId"], "delivered"),
    ]
    pending = rp.call("GET", "/rp/v1/events?type=device.operation_pending", expect=200)["events"]
    assert [(e["data"]["operationId"], e["data"]["operationType"]) for e in pending] == [
        (signature["operationId"], "SIGNATURE"),
        (authentication["operationId"], "AUTHENTICATION"),
    ]
    assert contract not in json.dumps(pending)
    listed = device.post(
        p.DevicePaths.PENDING_OPERATIONS,
        p.PendingOperationsRequest(application_id=rp.app_id, device_id=device.device_id),
    ).json()["operations"]
    assert [o["operationId"] for o in listed] == [
        signature["operationId"],
        authentication["operationId"],
    ]


def test_fcm_access_token_is_renewed_when_it_expires(
    rp: RelyingParty,
    kb: Keybound,
    clock: FakeClock,
    fcm: FcmReceiver,
    account_key: rsa.RSAPrivateKey,
) -> None:
    with_fcm(kb, rp, fcm, account_key)
    device = activated(rp, p.PushToken(provider=p.PushProvider.FCM, token=FCM_TOKEN))
    rp.start_operation(device.device_id)
    deliver(kb, clock)
    clock.advance(2 * 3600)  # the access token (an hour) has expired
    rp.start_operation(device.device_id)
    deliver(kb, clock)
    fcm.revoke_access_tokens()  # Google invalidated it early: 401, a new one, sent once more
    rp.start_operation(device.device_id)
    deliver(kb, clock)
    assert len(fcm.token_requests) == 3
    assert [status for status, _m in fcm.sends] == [200, 200, 401, 200]
    assert [n.state for n in notifications(kb)] == ["delivered"] * 3


@pytest.mark.parametrize(
    "registration", [Registration.UNREGISTERED, Registration.SENDER_ID_MISMATCH]
)
def test_fcm_unregistered_drops_the_token_and_the_operation_carries_on(
    rp: RelyingParty,
    kb: Keybound,
    clock: FakeClock,
    fcm: FcmReceiver,
    account_key: rsa.RSAPrivateKey,
    registration: Registration,
) -> None:
    with_fcm(kb, rp, fcm, account_key)
    device = activated(rp, p.PushToken(provider=p.PushProvider.FCM, token=FCM_TOKEN))
    fcm.registrations[FCM_TOKEN] = FcmAnswer(registration=registration)
    operation = rp.start_operation(device.device_id)
    deliver(kb, clock)
    assert stored_token(kb, device.device_id) is None
    assert [n.state for n in notifications(kb)] == ["dropped"]
    assert rp.operation(operation["operationId"])["state"] == "PENDING"
    assert device.authenticate(operation_id=operation["operationId"]).status_code == 200
    rp.start_operation(device.device_id)  # no token now: nothing is queued
    assert len(notifications(kb)) == 1


def test_fcm_unavailable_is_retried_and_never_fails_the_operation(
    rp: RelyingParty,
    kb: Keybound,
    clock: FakeClock,
    fcm: FcmReceiver,
    account_key: rsa.RSAPrivateKey,
) -> None:
    with_fcm(kb, rp, fcm, account_key)
    device = activated(rp, p.PushToken(provider=p.PushProvider.FCM, token=FCM_TOKEN))
    fcm.registrations[FCM_TOKEN] = FcmAnswer(
        registration=Registration.UNAVAILABLE, retry_after="30"
    )
    operation = rp.start_operation(device.device_id)
    deliver(kb, clock, until=lambda: len(fcm.sends) >= 2)
    fcm.registrations[FCM_TOKEN] = FcmAnswer(registration=Registration.VALID)
    deliver(kb, clock)
    assert [s for s, _m in fcm.sends][-1] == 200
    (row,) = notifications(kb)
    assert row.state == "delivered" and row.attempts >= 3
    assert rp.operation(operation["operationId"])["state"] == "PENDING"


# -- APNs ------------------------------------------------------------------------------------


def test_apns_wakes_the_device_over_http2_with_a_provider_token(
    rp: RelyingParty,
    kb: Keybound,
    clock: FakeClock,
    apns: tuple[ApnsReceiver, str],
    tls: Tls,
    p8: bytes,
    tmp_path: Path,
) -> None:
    receiver, url = apns
    with_apns(kb, rp, url, tls, p8, tmp_path)
    device = activated(rp, p.PushToken(provider=p.PushProvider.APNS, token=APNS_TOKEN))
    rp.start_operation(device.device_id)
    deliver(kb, clock)
    (seen,) = receiver.seen
    assert seen.status == 200 and seen.http_version == "2"
    assert seen.path == f"/3/device/{APNS_TOKEN}"
    assert seen.token_header["kid"] == APNS_KEY and seen.token_claims["iss"] == TEAM
    assert seen.payload["keybound"] == {
        "type": "device.operation_pending",
        "applicationId": rp.app_id,
    }
    assert [n.state for n in notifications(kb)] == ["delivered"]


@pytest.mark.parametrize("answer", [Device.BAD_TOKEN, Device.NOT_FOR_TOPIC, Device.UNREGISTERED])
def test_apns_dead_tokens_are_dropped(
    rp: RelyingParty,
    kb: Keybound,
    clock: FakeClock,
    apns: tuple[ApnsReceiver, str],
    tls: Tls,
    p8: bytes,
    tmp_path: Path,
    answer: Device,
) -> None:
    receiver, url = apns
    with_apns(kb, rp, url, tls, p8, tmp_path)
    device = activated(rp, p.PushToken(provider=p.PushProvider.APNS, token=APNS_TOKEN))
    receiver.devices[APNS_TOKEN] = ApnsAnswer(
        device=answer, unregistered_at_ms=int((clock.now + 1) * 1000)
    )
    operation = rp.start_operation(device.device_id)
    deliver(kb, clock)
    assert stored_token(kb, device.device_id) is None
    assert [n.state for n in notifications(kb)] == ["dropped"]
    assert rp.operation(operation["operationId"])["state"] == "PENDING"


def test_apns_unregistered_before_a_new_registration_keeps_the_new_token(
    rp: RelyingParty,
    kb: Keybound,
    clock: FakeClock,
    apns: tuple[ApnsReceiver, str],
    tls: Tls,
    p8: bytes,
    tmp_path: Path,
) -> None:
    receiver, url = apns
    with_apns(kb, rp, url, tls, p8, tmp_path)
    device = activated(rp, p.PushToken(provider=p.PushProvider.APNS, token=APNS_TOKEN))
    # Apple found the token invalid an hour before the device (re)registered it
    receiver.devices[APNS_TOKEN] = ApnsAnswer(
        device=Device.UNREGISTERED, unregistered_at_ms=int((clock.now - 3600) * 1000)
    )
    rp.start_operation(device.device_id)
    deliver(kb, clock)
    assert stored_token(kb, device.device_id) == ("apns", APNS_TOKEN)
    assert [n.state for n in notifications(kb)] == ["dropped"]


def test_apns_provider_token_is_re_signed_after_it_expires(
    rp: RelyingParty,
    kb: Keybound,
    clock: FakeClock,
    apns: tuple[ApnsReceiver, str],
    tls: Tls,
    p8: bytes,
    tmp_path: Path,
) -> None:
    receiver, url = apns
    with_apns(kb, rp, url, tls, p8, tmp_path)
    device = activated(rp, p.PushToken(provider=p.PushProvider.APNS, token=APNS_TOKEN))
    rp.start_operation(device.device_id)
    deliver(kb, clock)
    clock.advance(3 * 3600)
    rp.start_operation(device.device_id)
    deliver(kb, clock)
    issued = [s.token_claims["iat"] for s in receiver.seen]
    assert len(set(issued)) == 2 and all(s.status == 200 for s in receiver.seen)


# -- the relying party's own push service (webhook provider) ---------------------------------


def test_the_webhook_provider_posts_a_signed_wake_up_with_the_push_token(
    rp: RelyingParty, kb: Keybound, clock: FakeClock
) -> None:
    receiver = Receiver().start()
    try:
        info = kb.admin.set_push_provider(
            rp.app_id, ProviderKind.WEBHOOK, {"url": receiver.url("/push")}
        )
        assert info.secret is not None and info.secret.startswith("whsec_")
        receiver.secrets = (info.secret,)
        token = p.PushToken(provider=p.PushProvider.WEBHOOK, token="rp-push-token-1")
        device = activated(rp, token)
        rp.start_operation(device.device_id)
        deliver(kb, clock)
        (got,) = receiver.received
        assert got.verified  # the reference standardwebhooks package
        body = json.loads(got.body)
        assert body["type"] == "device.operation_pending"
        assert body["data"] == {
            "applicationId": rp.app_id,
            "deviceId": device.device_id,
            "pushToken": "rp-push-token-1",
        }
        receiver.default = Reply(status=410)  # the push service says: that token is gone
        rp.start_operation(device.device_id)
        deliver(kb, clock)
        assert stored_token(kb, device.device_id) is None
        with kb.db.read() as conn:
            (row,) = conn.execute(select(t.push_providers)).all()
        assert info.secret.encode() not in row.wrapped_credentials
        assert (
            info.secret
            in kb.box.unwrap(
                Purpose.PUSH_CREDENTIALS,
                row.wrapped_credentials,
                binding=_binding(rp.app_id, "webhook"),
            ).decode()
        )
        assert info.secret not in json.dumps(
            [i.settings for i in kb.admin.push_providers(rp.app_id)]
        )
    finally:
        receiver.stop()


def test_the_push_service_address_is_checked_at_connect_time(
    rp: RelyingParty, kb: Keybound, clock: FakeClock
) -> None:
    """The push-service webhook is an endpoint like any other (docs/webhooks.md §4): the
    address it connects to is checked then, not only at registration. Here loopback was
    allowed when the operator registered it and is withdrawn before the wake-up."""
    receiver = Receiver().start()
    try:
        kb.admin.set_push_provider(rp.app_id, ProviderKind.WEBHOOK, {"url": receiver.url("/push")})
        kb.notifications.policy = EndpointPolicy(allow_http=True)  # loopback no longer allowed
        token = p.PushToken(provider=p.PushProvider.WEBHOOK, token="rp-push-token-1")
        device = activated(rp, token)
        rp.start_operation(device.device_id)
        deliver(kb, clock)
        assert receiver.received == []
        assert stored_token(kb, device.device_id) == ("webhook", "rp-push-token-1")  # kept
    finally:
        receiver.stop()


def test_provider_credentials_are_checked_and_kept_wrapped(
    rp: RelyingParty, kb: Keybound, p8: bytes
) -> None:
    from keybound.errors import ConfigurationInvalid

    with pytest.raises(ConfigurationInvalid):
        kb.admin.set_push_provider(rp.app_id, ProviderKind.FCM, {}, b"{not a key file")
    with pytest.raises(ConfigurationInvalid):
        kb.admin.set_push_provider(rp.app_id, ProviderKind.APNS, {"teamId": TEAM}, p8)
    kb.admin.set_push_provider(
        rp.app_id, ProviderKind.APNS, {"teamId": TEAM, "keyId": APNS_KEY, "topic": TOPIC}, p8
    )
    with kb.db.read() as conn:
        (row,) = conn.execute(select(t.push_providers)).all()
    assert b"PRIVATE KEY" not in row.wrapped_credentials
    assert b"PRIVATE KEY" not in row.settings.encode()


def _binding(application_id: str, kind: str) -> bytes:
    from keybound.server.services.notifications import _binding as binding

    return binding(application_id, kind)
