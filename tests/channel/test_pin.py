"""Channel pins (keybound.channel.pin)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from keybound import channel
from keybound.channel import (
    ChannelPin,
    ChannelSuite,
    E2EKey,
    InvalidPin,
)
from keybound.errors import ErrorCode
from tests.channel.support import (
    APP,
    key_for,
    pin_for,
)

# --------------------------------------------------------------------------- pins


def test_pin_string_is_canonical_json(key: E2EKey) -> None:
    pin = pin_for(key)
    text = pin.to_string()
    data = json.loads(text)
    assert text == json.dumps(data, sort_keys=True, separators=(",", ":"))
    assert data["v"] == 1 and data["suite"] == key.suite.value and data["keyId"] == key.key_id
    assert ChannelPin.from_string(text) == pin


def _pin_json(**changes: Any) -> str:
    data = json.loads(pin_for(key_for(ChannelSuite.X25519_SHA256_AES128GCM)).to_string())
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not None})


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        _pin_json(v=2),
        _pin_json(v=True),
        _pin_json(v="1"),
        _pin_json(extra="x"),
        _pin_json(keyId=None),
        _pin_json(suite="X25519_SHA256_AES256GCM"),
        _pin_json(publicKey="AAAA"),
        _pin_json(publicKey="not base64!"),
        _pin_json(publicKey="A" * 43 + "="),
        _pin_json(keyId="has space"),
        _pin_json(keyId=""),
        _pin_json(applicationId="Upper"),
        _pin_json(applicationId=5),
        _pin_json(serverUrl="http://keybound.example.com"),
        _pin_json(serverUrl="ftp://keybound.example.com"),
        _pin_json(serverUrl="https://user:pw@keybound.example.com"),
        _pin_json(serverUrl="https://keybound.example.com/?q=1"),
        _pin_json(serverUrl="https://"),
        _pin_json(serverUrl="https://[::1"),
        _pin_json(serverUrl="https://keybound.example.com:99999"),
        _pin_json(publicKey="A" * 43),  # all-zero X25519 key: low order, refused by the probe
        _pin_json(publicKey="4Ot6fDtBuK4WVuP68Z_EatoJjeucMrH9hmIFFl9JuAA"),  # order-8 point
    ],
)
def test_bad_pins_are_refused(text: str) -> None:
    with pytest.raises(InvalidPin) as info:
        ChannelPin.from_string(text)
    assert info.value.code is ErrorCode.CLIENT_CONFIGURATION


def test_pin_allows_plain_http_only_for_localhost() -> None:
    key = key_for(ChannelSuite.X25519_SHA256_AES128GCM)
    pin = channel.export_pin(key, application_id=APP, server_url="http://127.0.0.1:8000")
    assert ChannelPin.from_string(pin.to_string()) == pin


def test_pq_pin_rejects_malformed_mlkem_key() -> None:
    key = key_for(ChannelSuite.MLKEM768X25519_SHA256_AES128GCM)
    bad = b"\xff" * 1184 + key.public_key[1184:]  # coefficients >= q: not an ML-KEM key
    with pytest.raises(InvalidPin):
        replace(pin_for(key), public_key=bad)
