"""The notification interface: what a hint may say, push targets, Retry-After, the registry."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from keybound.errors import ConfigurationInvalid, ErrorCode, MalformedRequest
from keybound.server.notify.base import (
    EVENT_TYPE,
    MAX_RETRY_AFTER_SECONDS,
    Outcome,
    OutcomeKind,
    ProviderKind,
    PushHint,
    PushTarget,
    retry_delay,
)
from keybound.server.notify.registry import Notifier

HINT = PushHint(application_id="bank", device_id="3f2c6f1e-8a4b-4c2d-9e1f-0a1b2c3d4e5f")
NOW = 1_750_000_000.0


def test_device_payload_names_no_device_and_no_operation() -> None:
    """Through Google or Apple goes only "poll now": an application id and a device id would
    be enough to list the device's pending operations with their contexts."""
    assert HINT.for_device() == {"type": EVENT_TYPE, "applicationId": "bank"}
    assert HINT.device_id not in json.dumps(HINT.for_device())
    assert HINT.for_relying_party() == {"applicationId": "bank", "deviceId": HINT.device_id}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 60.0),
        ("", 60.0),
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        ("-5", 60.0),
        ("soon", 60.0),
        ("1e3", 60.0),
        ("\u00b2", 60.0),  # a digit to str.isdigit, not to float(); latin-1 header byte 0xb2
        ("99999999", MAX_RETRY_AFTER_SECONDS),
        (format_datetime(datetime.fromtimestamp(NOW + 90, tz=UTC), usegmt=True), 90.0),
        (format_datetime(datetime.fromtimestamp(NOW - 90, tz=UTC), usegmt=True), 0.0),
        ("Wed, 21 Oct 2015 07:28:00 -0000", 60.0),  # not an RFC 9110 (GMT) date
    ],
)
def test_retry_delay(value: str | None, expected: float) -> None:
    assert retry_delay(value, now=NOW, default=60.0) == expected


@pytest.mark.parametrize(
    ("provider", "token", "ok"),
    [
        (ProviderKind.APNS, "a1" * 32, True),
        (ProviderKind.APNS, "A1" * 50, True),
        (ProviderKind.APNS, "a1" * 32 + "/x", False),
        (ProviderKind.APNS, "a" * 65, False),
        (ProviderKind.FCM, "dGVzdA:APA91bH" + "x" * 140, True),
        (ProviderKind.FCM, "x" * 15, False),
        (ProviderKind.FCM, "x" * 20 + "\n", False),
        (ProviderKind.WEBHOOK, "install-42", True),
        (ProviderKind.WEBHOOK, "has space", False),
        (ProviderKind.WEBHOOK, "", False),
    ],
)
def test_push_target_checks_token_shape(provider: ProviderKind, token: str, ok: bool) -> None:
    if ok:
        assert PushTarget(provider=provider, token=token).token == token
        return
    with pytest.raises(MalformedRequest) as info:
        PushTarget(provider=provider, token=token)
    assert info.value.code is ErrorCode.MALFORMED_REQUEST


class Recorder:
    def __init__(self, kind: ProviderKind) -> None:
        self.kind = kind
        self.sent: list[tuple[str, PushHint]] = []
        self.closed = False

    def send(self, push_token: str, hint: PushHint) -> Outcome:
        self.sent.append((push_token, hint))
        return Outcome.delivered(f"{self.kind.value}-1")

    def close(self) -> None:
        self.closed = True


def test_notifier_routes_by_provider_kind() -> None:
    fcm, apns = Recorder(ProviderKind.FCM), Recorder(ProviderKind.APNS)
    notifier = Notifier([fcm, apns])

    outcome = notifier.send(PushTarget(provider=ProviderKind.APNS, token="a1" * 32), HINT)

    assert outcome.message_id == "apns-1"
    assert (fcm.sent, apns.sent) == ([], [("a1" * 32, HINT)])
    missing = notifier.send(PushTarget(provider=ProviderKind.WEBHOOK, token="x"), HINT)
    assert missing.kind is OutcomeKind.FAILED
    notifier.close()
    assert fcm.closed and apns.closed
    with pytest.raises(ConfigurationInvalid):
        Notifier([fcm, Recorder(ProviderKind.FCM)])
