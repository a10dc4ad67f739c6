"""What the channel tests share: constants, bytes built from docs/channel.md by hand
(struct, not keybound.channel, so the tests check the code against the document), keys."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyhpke
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keybound import channel
from keybound.channel import (
    ChannelPin,
    ChannelSuite,
    DecryptionFailed,
    E2EKey,
    OpenedRequest,
    ResponseOpener,
)
from keybound.errors import ErrorCode, KeyboundError

VECTORS = Path(__file__).parent.parent / "vectors"
APP = "demo-app"
URL = "https://keybound.example.com"
METHOD = "POST"
PATH = "/device/v1/authentication/start"
NOW = 1_767_225_600
BODY = b'{"deviceId":"dev-1"}'
SUITES = list(ChannelSuite)
X25519_SUITES = [s for s in ChannelSuite if s.value.startswith("X25519_")]
PYHPKE_AEAD = {
    ChannelSuite.X25519_SHA256_AES128GCM: pyhpke.AEADId.AES128_GCM,
    ChannelSuite.X25519_SHA256_CHACHA20POLY1305: pyhpke.AEADId.CHACHA20_POLY1305,
}
SUITE_IDS = {  # docs/channel.md §2
    ChannelSuite.X25519_SHA256_AES128GCM: (0x0020, 0x0001, 0x0001),
    ChannelSuite.X25519_SHA256_CHACHA20POLY1305: (0x0020, 0x0001, 0x0003),
    ChannelSuite.MLKEM768X25519_SHA256_AES128GCM: (0x647A, 0x0001, 0x0001),
}
ENC_SIZE = {s: 1120 if s.value.startswith("MLKEM") else 32 for s in ChannelSuite}


# --------------------------------------------------------------------------- doc-built bytes


def lp(*fields: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(f)) + f for f in fields)


def doc_suite_id(suite: ChannelSuite) -> bytes:
    return struct.pack(">HHH", *SUITE_IDS[suite])


def doc_info(suite: ChannelSuite, key_id: str, app: str, method: str, path: str) -> bytes:
    return lp(
        b"keybound/channel/v1/request",
        b"\x01",
        doc_suite_id(suite),
        key_id.encode(),
        app.encode(),
        method.encode(),
        path.encode(),
    )


def doc_header(suite: ChannelSuite, key_id: str) -> bytes:
    return b"\x01" + doc_suite_id(suite) + bytes([len(key_id)]) + key_id.encode()


def doc_plaintext(request_id: bytes, timestamp: int, response_key: bytes, body: bytes) -> bytes:
    return request_id + struct.pack(">Q", timestamp) + response_key + lp(body)


def doc_response_key_and_aad(opener: ResponseOpener) -> tuple[bytes, bytes]:
    nk = 32 if opener.suite is ChannelSuite.X25519_SHA256_CHACHA20POLY1305 else 16
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=nk,
        salt=opener.request_id,
        info=lp(b"keybound/channel/v1/response-key", doc_suite_id(opener.suite)),
    ).derive(opener.response_key)
    aad = lp(
        b"keybound/channel/v1/response",
        b"\x01",
        doc_suite_id(opener.suite),
        opener.key_id.encode(),
        opener.application_id.encode(),
        opener.method.encode(),
        opener.path.encode(),
        opener.request_id,
    )
    return key, aad


# --------------------------------------------------------------------------- fixtures

_KEYS: dict[ChannelSuite, E2EKey] = {}


def key_for(suite: ChannelSuite) -> E2EKey:
    if suite not in _KEYS:  # ML-KEM key generation is cheap, but share keys across tests
        _KEYS[suite] = channel.generate_e2e_key(suite, now=NOW)
    return _KEYS[suite]


def pin_for(key: E2EKey) -> ChannelPin:
    return channel.export_pin(key, application_id=APP, server_url=URL)


def open_with(
    key: E2EKey,
    wire: bytes,
    *,
    app: str = APP,
    method: str = METHOD,
    path: str = PATH,
    now: int = NOW,
) -> OpenedRequest:
    return channel.open_request({key.key_id: key}, app, method, path, wire, now=now)


def failure_signature(exc: KeyboundError) -> tuple[Any, ...]:
    fields = tuple(sorted(exc.fields.items()))
    return (type(exc), exc.code, str(exc), exc.args, exc.detail, fields, exc.__cause__)


def assert_all_refused(attempts: Iterator[Callable[[], object]]) -> int:
    """Every attempt raises DecryptionFailed, all with one identical signature."""
    signatures = set()
    count = 0
    for attempt in attempts:
        with pytest.raises(DecryptionFailed) as info:
            attempt()
        assert info.value.code is ErrorCode.DECRYPTION_FAILED
        signatures.add(failure_signature(info.value))
        count += 1
    assert signatures == {failure_signature(DecryptionFailed())}
    return count


def wycheproof_groups(name: str) -> list[dict[str, Any]]:
    data = json.loads((VECTORS / "wycheproof" / name).read_text(encoding="utf-8"))
    groups: list[dict[str, Any]] = data["testGroups"]
    assert sum(len(g["tests"]) for g in groups) == data["numberOfTests"]
    return groups


def wycheproof_tests(name: str) -> list[dict[str, Any]]:
    return [t for g in wycheproof_groups(name) for t in g["tests"]]
