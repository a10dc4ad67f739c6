"""Secure channel (keybound.channel): round trips, interop, tampering, replay, vectors.

Byte layouts in this file are written from docs/channel.md by hand (struct), not taken from
keybound.channel, so the tests check the code against the document.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pyhpke
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from keybound import channel
from keybound.channel import (
    ChannelPin,
    ChannelSuite,
    DecryptionFailed,
    E2EKey,
    InMemoryReplayGuard,
    InvalidPin,
    KeyState,
    KeyStorageError,
    OpenedRequest,
    ResponseOpener,
)
from keybound.errors import ErrorCode, KeyboundError, MalformedRequest

VECTORS = Path(__file__).parent / "vectors"
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


@pytest.fixture(params=SUITES, ids=str)
def suite(request: pytest.FixtureRequest) -> ChannelSuite:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def key(suite: ChannelSuite) -> E2EKey:
    return key_for(suite)


@pytest.fixture
def sealed(key: E2EKey) -> tuple[bytes, ResponseOpener]:
    return channel.seal_request(pin_for(key), METHOD, PATH, BODY, now=NOW)


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


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("body", [b"", BODY, os.urandom(70_000)], ids=["empty", "json", "70k"])
def test_round_trip(key: E2EKey, body: bytes) -> None:
    pin = ChannelPin.from_string(pin_for(key).to_string())
    wire, opener = channel.seal_request(pin, METHOD, PATH, body, now=NOW)
    opened = open_with(key, wire)
    assert (opened.body, opened.timestamp, opened.key_id, opened.suite) == (
        body,
        NOW,
        key.key_id,
        key.suite,
    )
    assert opened.request_id == opener.request_id and len(opened.request_id) == 16
    assert opened.response_key == opener.response_key and len(opened.response_key) == 32
    assert opened.replay_expires_at == NOW + channel.DEFAULT_WINDOW_SECONDS
    response = channel.seal_response(opened, 201, body[::-1])
    assert opener.open(response) == channel.OpenedResponse(status=201, body=body[::-1])


def test_wire_layout_matches_docs(key: E2EKey, sealed: tuple[bytes, ResponseOpener]) -> None:
    wire, _ = sealed
    header = doc_header(key.suite, key.key_id)
    assert wire.startswith(header)
    assert len(wire) == len(header) + ENC_SIZE[key.suite] + 60 + len(BODY) + 16
    assert channel.suite_id(key.suite) == doc_suite_id(key.suite)
    info = channel.request_info(
        suite=key.suite, key_id=key.key_id, application_id=APP, method=METHOD, path=PATH
    )
    assert info == doc_info(key.suite, key.key_id, APP, METHOD, PATH)


def test_each_request_is_fresh(key: E2EKey) -> None:
    pin = pin_for(key)
    (w1, o1), (w2, o2) = (channel.seal_request(pin, METHOD, PATH, BODY, now=NOW) for _ in "ab")
    assert w1 != w2 and o1.request_id != o2.request_id and o1.response_key != o2.response_key
    opened = open_with(key, w1)
    r1, r2 = channel.seal_response(opened, 200, BODY), channel.seal_response(opened, 200, BODY)
    assert r1[1:13] != r2[1:13]  # fresh nonce per response


def test_several_active_keys_open_side_by_side() -> None:
    keys = {k.key_id: k for k in (key_for(s) for s in SUITES)}
    for k in keys.values():
        wire, _ = channel.seal_request(pin_for(k), METHOD, PATH, BODY, now=NOW)
        assert channel.open_request(keys, APP, METHOD, PATH, wire, now=NOW).key_id == k.key_id


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(max_size=2048),
    path=st.from_regex(r"/[!-\"$->@-~]{0,80}", fullmatch=True),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    status=st.integers(100, 599),
)
def test_round_trip_property(body: bytes, path: str, method: str, status: int) -> None:
    key = key_for(ChannelSuite.X25519_SHA256_AES128GCM)
    wire, opener = channel.seal_request(pin_for(key), method, path, body, now=NOW)
    opened = open_with(key, wire, method=method, path=path)
    assert opened.body == body
    response = opener.open(channel.seal_response(opened, status, body))
    assert (response.status, response.body) == (status, body)


# --------------------------------------------------------------------------- interop (pyhpke)


def pyhpke_suite(suite: ChannelSuite) -> pyhpke.CipherSuite:
    return pyhpke.CipherSuite.new(
        pyhpke.KEMId.DHKEM_X25519_HKDF_SHA256, pyhpke.KDFId.HKDF_SHA256, PYHPKE_AEAD[suite]
    )


@pytest.mark.parametrize("suite", X25519_SUITES, ids=str)
def test_pyhpke_seals_keybound_opens(suite: ChannelSuite) -> None:
    key = key_for(suite)
    hs = pyhpke_suite(suite)
    request_id, response_key = os.urandom(16), os.urandom(32)
    info = doc_info(suite, key.key_id, APP, METHOD, PATH)
    enc, ctx = hs.create_sender_context(hs.kem.deserialize_public_key(key.public_key), info)
    ciphertext = ctx.seal(doc_plaintext(request_id, NOW, response_key, BODY), aad=b"")
    opened = open_with(key, doc_header(suite, key.key_id) + enc + ciphertext)
    assert (opened.request_id, opened.response_key, opened.body) == (
        request_id,
        response_key,
        BODY,
    )


@pytest.mark.parametrize("suite", X25519_SUITES, ids=str)
def test_keybound_seals_pyhpke_opens(suite: ChannelSuite) -> None:
    key = key_for(suite)
    hs = pyhpke_suite(suite)
    wire, opener = channel.seal_request(pin_for(key), METHOD, PATH, BODY, now=NOW)
    header = doc_header(suite, key.key_id)
    assert wire.startswith(header)
    enc, ciphertext = wire[len(header) : len(header) + 32], wire[len(header) + 32 :]
    info = doc_info(suite, key.key_id, APP, METHOD, PATH)
    ctx = hs.create_recipient_context(enc, hs.kem.deserialize_private_key(key.private_key), info)
    plaintext = ctx.open(ciphertext, aad=b"")
    assert plaintext == doc_plaintext(opener.request_id, NOW, opener.response_key, BODY)


@pytest.mark.parametrize("suite", X25519_SUITES, ids=str)
def test_validly_sealed_but_misframed_plaintext_is_refused(suite: ChannelSuite) -> None:
    key = key_for(suite)
    hs = pyhpke_suite(suite)
    info = doc_info(suite, key.key_id, APP, METHOD, PATH)
    good = doc_plaintext(os.urandom(16), NOW, os.urandom(32), BODY)
    plaintexts = [b"", good[:59], good[:-1], good + b"\x00", good[:56] + lp(BODY + b"x")[:4]]

    def seal(plaintext: bytes) -> bytes:
        enc, ctx = hs.create_sender_context(hs.kem.deserialize_public_key(key.public_key), info)
        return doc_header(suite, key.key_id) + enc + ctx.seal(plaintext, aad=b"")

    attempts = ((lambda p=p: open_with(key, seal(p))) for p in plaintexts)
    assert assert_all_refused(attempts) == len(plaintexts)
    assert open_with(key, seal(good)).body == BODY


def test_validly_sealed_but_misframed_response_is_refused(key: E2EKey) -> None:
    _, opener = channel.seal_request(pin_for(key), METHOD, PATH, BODY, now=NOW)
    aead_key, aad = doc_response_key_and_aad(opener)
    chacha = key.suite is ChannelSuite.X25519_SHA256_CHACHA20POLY1305
    cipher = ChaCha20Poly1305(aead_key) if chacha else AESGCM(aead_key)
    good = struct.pack(">H", 200) + lp(b"ok")
    plaintexts = [
        b"",
        good[:5],
        good[:-1],
        good + b"\x00",
        struct.pack(">H", 99) + lp(b"ok"),
        struct.pack(">H", 600) + lp(b"ok"),
    ]

    def seal(plaintext: bytes) -> bytes:
        nonce = os.urandom(12)
        return b"\x01" + nonce + cipher.encrypt(nonce, plaintext, aad)

    attempts = ((lambda p=p: opener.open(seal(p))) for p in plaintexts)
    assert assert_all_refused(attempts) == len(plaintexts)
    assert opener.open(seal(good)).body == b"ok"


def test_response_opens_with_doc_built_aead(key: E2EKey) -> None:
    wire, opener = channel.seal_request(pin_for(key), METHOD, PATH, BODY, now=NOW)
    response = channel.seal_response(open_with(key, wire), 404, b"nope")
    aead_key, aad = doc_response_key_and_aad(opener)
    cipher = (
        ChaCha20Poly1305 if key.suite is ChannelSuite.X25519_SHA256_CHACHA20POLY1305 else AESGCM
    )
    assert response[0] == 1
    plaintext = cipher(aead_key).decrypt(response[1:13], response[13:], aad)
    assert plaintext == struct.pack(">H", 404) + lp(b"nope")


# --------------------------------------------------------------------------- tampering


def header_regions(suite: ChannelSuite, key_id: str, wire_len: int) -> dict[str, range]:
    kid_end = 8 + len(key_id)
    enc_end = kid_end + ENC_SIZE[suite]
    return {
        "version": range(0, 1),
        "suite id": range(1, 7),
        "key id length": range(7, 8),
        "key id": range(8, kid_end),
        "enc": range(kid_end, enc_end),
        "ciphertext": range(enc_end, wire_len - 16),
        "tag": range(wire_len - 16, wire_len),
    }


def flipped(data: bytes, index: int, mask: int) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


def test_every_byte_of_the_request_is_authenticated(
    key: E2EKey, sealed: tuple[bytes, ResponseOpener]
) -> None:
    wire, _ = sealed
    regions = header_regions(key.suite, key.key_id, len(wire))
    assert sum(len(r) for r in regions.values()) == len(wire) and all(regions.values())
    attempts = (
        (lambda i=i, m=m: open_with(key, flipped(wire, i, m)))
        for i in range(len(wire))
        for m in (0x01, 0x80)  # bit 7 of X25519's last byte is masked by RFC 7748
    )
    assert assert_all_refused(attempts) == 2 * len(wire)


@pytest.mark.parametrize(
    "context",
    [
        {"app": "other-app"},
        {"app": APP + " "},
        {"method": "PUT"},
        {"method": "post"},
        {"path": PATH + "/"},
        {"path": "/device/v1/authentication/finish"},
        {"method": "PÖST"},  # not encodable: refused like any other mismatch
    ],
    ids=str,
)
def test_request_is_bound_to_its_context(
    key: E2EKey, sealed: tuple[bytes, ResponseOpener], context: dict[str, Any]
) -> None:
    wire, _ = sealed
    assert_all_refused(iter([lambda: open_with(key, wire, **context)]))


def test_truncated_and_extended_requests(key: E2EKey, sealed: tuple[bytes, ResponseOpener]) -> None:
    wire, _ = sealed
    attempts: list[Callable[[], object]] = [
        partial(open_with, key, wire[:n]) for n in range(len(wire))
    ]
    attempts.append(lambda: open_with(key, wire + b"\x00"))
    assert assert_all_refused(iter(attempts)) == len(wire) + 1


def test_unknown_retired_and_mismatched_keys(
    key: E2EKey, sealed: tuple[bytes, ResponseOpener]
) -> None:
    wire, _ = sealed
    other_suite = next(s for s in SUITES if s is not key.suite)
    impostor = replace(key_for(other_suite), key_id=key.key_id)  # same id, other suite
    same_suite_other_key = channel.generate_e2e_key(key.suite, now=NOW)
    keyrings: list[dict[str, E2EKey]] = [
        {},
        {"someone-else": key},
        {key.key_id: channel.retire_e2e_key(key)},
        {key.key_id: impostor},
        {key.key_id: replace(same_suite_other_key, key_id=key.key_id)},
        {key.key_id: replace(key, key_id="renamed")},  # keyring entry under the wrong id
    ]
    attempts = (
        (lambda ring=ring: channel.open_request(ring, APP, METHOD, PATH, wire, now=NOW))
        for ring in keyrings
    )
    assert assert_all_refused(attempts) == len(keyrings)


@pytest.mark.parametrize("skew", [-300, -1, 0, 1, 300])
def test_timestamp_inside_window_opens(key: E2EKey, skew: int) -> None:
    wire, _ = channel.seal_request(pin_for(key), METHOD, PATH, BODY, now=NOW + skew)
    assert open_with(key, wire).timestamp == NOW + skew


@pytest.mark.parametrize("skew", [-301, 301, -NOW, 10**9])
def test_timestamp_outside_window_is_refused(key: E2EKey, skew: int) -> None:
    wire, _ = channel.seal_request(pin_for(key), METHOD, PATH, BODY, now=NOW + skew)
    assert_all_refused(iter([lambda: open_with(key, wire)]))


def test_window_is_configurable(key: E2EKey) -> None:
    wire, _ = channel.seal_request(pin_for(key), METHOD, PATH, BODY, now=NOW - 30)
    ring = {key.key_id: key}
    opened = channel.open_request(ring, APP, METHOD, PATH, wire, now=NOW, window_seconds=30)
    assert opened.replay_expires_at == NOW
    with pytest.raises(DecryptionFailed):
        channel.open_request(ring, APP, METHOD, PATH, wire, now=NOW, window_seconds=29)
    with pytest.raises(ValueError):
        channel.open_request(ring, APP, METHOD, PATH, wire, now=NOW, window_seconds=0)


def test_low_order_enc_is_refused_cleanly() -> None:
    """An all-zero X25519 shared secret (Wycheproof ZeroSharedSecret) never opens (§5)."""
    key = key_for(ChannelSuite.X25519_SHA256_AES128GCM)
    points = {
        bytes.fromhex(t["public"])
        for t in wycheproof_tests("x25519_test.json")
        if t["shared"] == "00" * 32
    }
    assert len(points) >= 10
    header = doc_header(key.suite, key.key_id)
    attempts = (
        (lambda p=p: open_with(key, header + p + os.urandom(60 + 16))) for p in sorted(points)
    )
    assert assert_all_refused(attempts) == len(points)


# --------------------------------------------------------------------------- replay


def test_replay_is_refused_by_the_guard(key: E2EKey, sealed: tuple[bytes, ResponseOpener]) -> None:
    wire, _ = sealed
    guard = InMemoryReplayGuard(clock=lambda: NOW)
    first = open_with(key, wire)
    guard.check_and_remember(first.request_id, first.replay_expires_at)
    again = open_with(key, wire)  # opening is pure; the guard is the replay check (§6)
    assert_all_refused(
        iter([lambda: guard.check_and_remember(again.request_id, again.replay_expires_at)])
    )


def test_replay_guard_forgets_expired_ids() -> None:
    now = [NOW]
    guard = InMemoryReplayGuard(clock=lambda: now[0])
    guard.check_and_remember(b"a" * 16, NOW + 10)
    guard.check_and_remember(b"b" * 16, NOW + 20)
    now[0] = NOW + 11
    guard.check_and_remember(b"c" * 16, NOW + 30)
    assert len(guard) == 2
    guard.check_and_remember(b"a" * 16, NOW + 40)  # expired, so no longer remembered
    with pytest.raises(DecryptionFailed):
        guard.check_and_remember(b"b" * 16, NOW + 40)


def test_replay_guard_fails_closed_when_full() -> None:
    guard = InMemoryReplayGuard(clock=lambda: NOW, max_entries=2)
    guard.check_and_remember(b"a" * 16, NOW + 10)
    guard.check_and_remember(b"b" * 16, NOW + 10)
    with pytest.raises(DecryptionFailed):
        guard.check_and_remember(b"c" * 16, NOW + 10)


def test_replay_guard_admits_one_of_many_concurrent_uses() -> None:
    guard = InMemoryReplayGuard(clock=lambda: NOW)
    outcomes: list[bool] = []
    barrier = threading.Barrier(16)

    def use() -> None:
        barrier.wait()
        try:
            guard.check_and_remember(b"r" * 16, NOW + 60)
            outcomes.append(True)
        except DecryptionFailed:
            outcomes.append(False)

    threads = [threading.Thread(target=use) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [False] * 15 + [True]


def test_in_memory_guard_satisfies_protocol() -> None:
    """InMemoryReplayGuard is a ReplayGuard (mypy checks the assignment) and keeps the
    protocol's contract: a new id is recorded, the same id again is refused."""
    guard: channel.ReplayGuard = InMemoryReplayGuard(clock=lambda: NOW)
    request_id = os.urandom(16)
    guard.check_and_remember(request_id, NOW + 60)
    with pytest.raises(DecryptionFailed):
        guard.check_and_remember(request_id, NOW + 60)
    guard.check_and_remember(os.urandom(16), NOW + 60)


# --------------------------------------------------------------------------- responses


@pytest.fixture
def response(key: E2EKey, sealed: tuple[bytes, ResponseOpener]) -> tuple[bytes, ResponseOpener]:
    wire, opener = sealed
    return channel.seal_response(open_with(key, wire), 200, b'{"ok":true}'), opener


def test_every_byte_of_the_response_is_authenticated(
    response: tuple[bytes, ResponseOpener],
) -> None:
    wire, opener = response
    attempts = (
        (lambda i=i, m=m: opener.open(flipped(wire, i, m)))
        for i in range(len(wire))
        for m in (0x01, 0x80)
    )
    assert assert_all_refused(attempts) == 2 * len(wire)


def test_truncated_and_extended_responses(response: tuple[bytes, ResponseOpener]) -> None:
    wire, opener = response
    attempts: list[Callable[[], object]] = [
        partial(opener.open, wire[:n]) for n in range(len(wire))
    ]
    attempts.append(lambda: opener.open(wire + b"\x00"))
    assert assert_all_refused(iter(attempts)) == len(wire) + 1


@pytest.mark.parametrize(
    "change",
    [
        {"path": "/device/v1/authentication/finish"},
        {"method": "PUT"},
        {"application_id": "other-app"},
        {"key_id": "AAAAAAAAAAAAAAAA"},
        {"request_id": b"\x00" * 16},
    ],
    ids=str,
)
def test_response_is_bound_to_its_request(
    response: tuple[bytes, ResponseOpener], change: dict[str, Any]
) -> None:
    wire, opener = response
    assert_all_refused(iter([lambda: replace(opener, **change).open(wire)]))


def test_response_cannot_be_moved_to_another_request(key: E2EKey) -> None:
    pin = pin_for(key)
    wire_a, _ = channel.seal_request(pin, METHOD, PATH, b"a", now=NOW)
    _, opener_b = channel.seal_request(pin, METHOD, PATH, b"b", now=NOW)
    response_a = channel.seal_response(open_with(key, wire_a), 200, b"for a")
    other_suite = next(s for s in SUITES if s is not key.suite)
    attempts = [
        lambda: opener_b.open(response_a),
        lambda: replace(opener_b, suite=other_suite).open(response_a),
    ]
    assert_all_refused(iter(attempts))


@pytest.mark.parametrize("status", [99, 600, -1])
def test_seal_response_refuses_non_http_status(
    key: E2EKey, sealed: tuple[bytes, ResponseOpener], status: int
) -> None:
    with pytest.raises(ValueError):
        channel.seal_response(open_with(key, sealed[0]), status, b"")


def test_secrets_stay_out_of_repr(key: E2EKey, sealed: tuple[bytes, ResponseOpener]) -> None:
    wire, opener = sealed
    opened = open_with(key, wire)
    assert key.private_key.hex() not in repr(key) and repr(key.private_key) not in repr(key)
    assert repr(opener.response_key) not in repr(opener)
    assert repr(opened.response_key) not in repr(opened)


# --------------------------------------------------------------------------- client arguments


@pytest.mark.parametrize(
    ("method", "path", "now"),
    [
        ("post", PATH, NOW),
        ("", PATH, NOW),
        ("PO ST", PATH, NOW),
        (METHOD, "device/v1", NOW),
        (METHOD, PATH + "?x=1", NOW),
        (METHOD, PATH + "#f", NOW),
        (METHOD, "/sp ace", NOW),
        (METHOD, "/ünïcode", NOW),
        (METHOD, PATH, -1),
        (METHOD, PATH, 2**64),
    ],
)
def test_seal_request_refuses_what_it_cannot_carry(method: str, path: str, now: int) -> None:
    pin = pin_for(key_for(ChannelSuite.X25519_SHA256_AES128GCM))
    with pytest.raises(MalformedRequest):
        channel.seal_request(pin, method, path, BODY, now=now)


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


# --------------------------------------------------------------------------- keys and storage


def test_generated_keys_are_consistent(suite: ChannelSuite) -> None:
    key = channel.generate_e2e_key(suite, now=NOW)
    kem = channel._SUITES[suite].kem
    assert kem.public_from_private(key.private_key) == key.public_key
    assert key.state is KeyState.ACTIVE and key.created_at == NOW
    assert len(key.key_id) == 16 and channel.retire_e2e_key(key).state is KeyState.RETIRED
    assert channel.generate_e2e_key(now=NOW).suite is ChannelSuite.X25519_SHA256_AES128GCM


@pytest.mark.parametrize(
    "change",
    [
        {"key_id": "bad id"},
        {"key_id": "x" * 65},
        {"private_key": b"\x00"},
        {"public_key": b""},
        {"suite": "NOPE"},
        {"state": "lost"},
    ],
    ids=str,
)
def test_e2e_key_validates_itself(change: dict[str, Any]) -> None:
    with pytest.raises(KeyStorageError):
        replace(key_for(ChannelSuite.X25519_SHA256_AES128GCM), **change)


def test_wrap_round_trip(key: E2EKey) -> None:
    master = channel.generate_master_key()
    wrapped = channel.wrap_private_key(master, key)
    assert key.private_key not in wrapped and wrapped[0] == 1
    private = channel.unwrap_private_key(
        master, wrapped, key_id=key.key_id, suite=key.suite, public_key=key.public_key
    )
    assert private == key.private_key


def test_unwrap_refuses_wrong_master_key_tamper_and_swaps(key: E2EKey) -> None:
    master = channel.generate_master_key()
    wrapped = channel.wrap_private_key(master, key)
    other = channel.generate_e2e_key(key.suite, now=NOW)
    good = {"key_id": key.key_id, "suite": key.suite, "public_key": key.public_key}
    cases: list[tuple[bytes, bytes, dict[str, Any]]] = [
        (channel.generate_master_key(), wrapped, good),
        (master, flipped(wrapped, len(wrapped) - 1, 1), good),
        (master, flipped(wrapped, 0, 1), good),
        (master, wrapped[:20], good),
        (master, wrapped, {**good, "key_id": other.key_id}),
        (master, wrapped, {**good, "public_key": other.public_key}),
        (master, channel.wrap_private_key(master, replace(other, key_id=key.key_id)), good),
        (master[:16], wrapped, good),
    ]
    for master_key, blob, fields in cases:
        with pytest.raises(KeyStorageError) as info:
            channel.unwrap_private_key(master_key, blob, **fields)
        assert info.value.code is ErrorCode.CONFIGURATION_INVALID


def test_master_key_file_is_created_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    key = channel.load_or_create_master_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert channel.load_or_create_master_key(str(path)) == key
    assert len(path.read_bytes()) == 44 and path.read_bytes().endswith(b"\n")
    assert [p.name for p in tmp_path.iterdir()] == ["master.key"]  # no temp files left


def test_master_key_file_concurrent_creation_agrees(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    results: list[bytes] = []
    barrier = threading.Barrier(8)

    def load() -> None:
        barrier.wait()
        results.append(channel.load_or_create_master_key(path))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len(set(results)) == 1


@pytest.mark.parametrize(
    ("content", "mode"),
    [
        (b"A" * 43 + b"\n", 0o644),
        (b"A" * 43 + b"\n", 0o640),
        (b"short\n", 0o600),
        (b"A" * 43 + b"\n\n", 0o600),
        (b"A" * 42 + b"=\n", 0o600),
    ],
)
def test_master_key_file_refused(tmp_path: Path, content: bytes, mode: int) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(content)
    path.chmod(mode)
    with pytest.raises(KeyStorageError):
        channel.load_or_create_master_key(path)


def test_master_key_path_must_be_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir(mode=0o700)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    for path in (tmp_path / "dir", fifo):
        with pytest.raises(KeyStorageError):
            channel.load_or_create_master_key(path)


# --------------------------------------------------------------------------- fixed vectors


def load_vectors(name: str) -> list[dict[str, Any]]:
    data = json.loads((VECTORS / "channel" / name).read_text(encoding="utf-8"))
    assert data["channelVersion"] == 1
    return data["vectors"]  # type: ignore[no-any-return]


REQUEST_VECTORS = load_vectors("request_vectors.json")
RESPONSE_VECTORS = load_vectors("response_vectors.json")


def vector_key(v: dict[str, Any]) -> E2EKey:
    return E2EKey(
        key_id=v["keyId"],
        suite=ChannelSuite(v["suite"]),
        private_key=bytes.fromhex(v["serverPrivateKey"]),
        public_key=bytes.fromhex(v["serverPublicKey"]),
        state=KeyState.ACTIVE,
        created_at=0,
    )


@pytest.mark.parametrize("v", REQUEST_VECTORS, ids=lambda v: v["name"])
def test_request_vector_opens(v: dict[str, Any]) -> None:
    key = vector_key(v)
    suite = key.suite
    assert channel._SUITES[suite].kem.public_from_private(key.private_key) == key.public_key
    assert channel.suite_id(suite).hex() == v["suiteId"]
    info = channel.request_info(
        suite=suite,
        key_id=key.key_id,
        application_id=v["applicationId"],
        method=v["method"],
        path=v["path"],
    )
    assert info.hex() == v["info"]
    wire = bytes.fromhex(v["wire"])
    opened = open_with(
        key, wire, app=v["applicationId"], method=v["method"], path=v["path"], now=v["timestamp"]
    )
    assert opened.request_id.hex() == v["requestId"]
    assert opened.response_key.hex() == v["responseKey"]
    assert opened.body.hex() == v["body"]
    assert opened.timestamp == v["timestamp"]
    with pytest.raises(DecryptionFailed):
        open_with(
            key,
            wire,
            app=v["applicationId"],
            method=v["method"],
            path=v["path"] + "x",
            now=v["timestamp"],
        )


@pytest.mark.parametrize(
    "v", [v for v in REQUEST_VECTORS if v["ephemeralPrivateKey"]], ids=lambda v: v["name"]
)
def test_x25519_request_vector_is_reproducible_with_pyhpke(v: dict[str, Any]) -> None:
    suite = ChannelSuite(v["suite"])
    hs = pyhpke_suite(suite)
    eph = x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(v["ephemeralPrivateKey"]))
    eks = pyhpke.KEMKeyPair(
        pyhpke.KEMKey.from_pyca_cryptography_key(eph),
        pyhpke.KEMKey.from_pyca_cryptography_key(eph.public_key()),
    )
    pkr = hs.kem.deserialize_public_key(bytes.fromhex(v["serverPublicKey"]))
    enc, ctx = hs.create_sender_context(pkr, bytes.fromhex(v["info"]), eks=eks)
    sealed = enc + ctx.seal(bytes.fromhex(v["plaintext"]), aad=b"")
    assert (doc_header(suite, v["keyId"]) + sealed).hex() == v["wire"]


@pytest.mark.parametrize("v", RESPONSE_VECTORS, ids=lambda v: v["name"])
def test_response_vector_opens(v: dict[str, Any]) -> None:
    opener = ResponseOpener(
        suite=ChannelSuite(v["suite"]),
        response_key=bytes.fromhex(v["responseKey"]),
        request_id=bytes.fromhex(v["requestId"]),
        key_id=v["keyId"],
        application_id=v["applicationId"],
        method=v["method"],
        path=v["path"],
    )
    aead_key, aad = channel._response_context(opener)
    assert (aead_key.hex(), aad.hex()) == (v["aeadKey"], v["aad"])
    response = opener.open(bytes.fromhex(v["wire"]))
    assert (response.status, response.body.hex()) == (v["status"], v["body"])
    with pytest.raises(DecryptionFailed):
        replace(opener, request_id=bytes(16)).open(bytes.fromhex(v["wire"]))


def test_vectors_cover_every_suite() -> None:
    assert {v["suite"] for v in REQUEST_VECTORS} == {s.value for s in SUITES}
    assert {v["suite"] for v in RESPONSE_VECTORS} == {s.value for s in SUITES}


# --------------------------------------------------------------------------- Wycheproof
#
# Acceptance policy (docs/channel.md §10). Every test case is classified; the test fails on any
# mismatch or on any exception other than the expected clean one.
# - X25519: "valid" -> the shared secret equals `shared`. "acceptable" with an all-zero shared
#   secret (low-order points) -> must raise ValueError (RFC 9180 §7.1.4: DHKEM rejects it; a
#   request with such an enc fails with DecryptionFailed, see test_low_order_enc_...).
#   Other "acceptable" (twist points, non-canonical u, ...) -> accepted per RFC 7748 and the
#   shared secret must equal `shared`.
# - AEAD: the channel's profile is a 12-byte nonce, 16-byte tag and the suite's key size
#   (AES-128 for responses, AES-256 for key wrapping, ChaCha20 with 256-bit keys). In profile:
#   "valid" -> seal gives ct||tag exactly and open gives msg; "invalid" -> open raises
#   DecryptionFailed. Out of profile (other IV or key sizes) -> the channel's AEAD refuses the
#   parameters with ValueError before any cryptography (it never produces or accepts them).
# - HKDF-SHA256: "valid" -> okm matches; "invalid" (size > 255*32) -> ValueError.


def wycheproof_groups(name: str) -> list[dict[str, Any]]:
    data = json.loads((VECTORS / "wycheproof" / name).read_text(encoding="utf-8"))
    groups: list[dict[str, Any]] = data["testGroups"]
    assert sum(len(g["tests"]) for g in groups) == data["numberOfTests"]
    return groups


def wycheproof_tests(name: str) -> list[dict[str, Any]]:
    return [t for g in wycheproof_groups(name) for t in g["tests"]]


def test_wycheproof_x25519() -> None:
    kem = channel._SUITES[ChannelSuite.X25519_SHA256_AES128GCM].kem
    tally = {"match": 0, "rejected zero": 0}
    mismatches = []
    for t in wycheproof_tests("x25519_test.json"):
        private = kem.load_private(bytes.fromhex(t["private"]))
        public = kem.load_public(bytes.fromhex(t["public"]))
        assert isinstance(private, x25519.X25519PrivateKey)
        assert isinstance(public, x25519.X25519PublicKey)
        zero = t["shared"] == "00" * 32
        assert t["result"] in ("valid", "acceptable") and not (zero and t["result"] == "valid")
        try:
            shared = private.exchange(public)
        except ValueError:
            outcome = "rejected zero" if zero else "rejected"
        else:
            outcome = "match" if shared.hex() == t["shared"] and not zero else "wrong"
        if outcome not in tally:
            mismatches.append((t["tcId"], t["result"], outcome))
        else:
            tally[outcome] += 1
    assert mismatches == []
    assert tally == {"match": 487, "rejected zero": 31}


AEADS = {
    "AES-128-GCM": channel._AES_128_GCM,
    "AES-256-GCM": channel._AES_256_GCM,
    "ChaCha20-Poly1305": channel._CHACHA20_POLY1305,
}


def run_aead_vectors(name: str, pick: Callable[[int], list[Any]]) -> dict[str, int]:
    tally = {"valid": 0, "invalid": 0, "out of profile": 0}
    mismatches = []
    for group in wycheproof_groups(name):
        for t in group["tests"]:
            key, iv = bytes.fromhex(t["key"]), bytes.fromhex(t["iv"])
            msg, aad = bytes.fromhex(t["msg"]), bytes.fromhex(t["aad"])
            sealed = bytes.fromhex(t["ct"] + t["tag"])
            aeads = pick(group["keySize"])
            if group["ivSize"] != 96 or group["tagSize"] != 128 or not aeads:
                for aead in aeads or list(AEADS.values()):
                    with pytest.raises(ValueError):
                        aead.open(key, iv, sealed, aad)
                tally["out of profile"] += 1
                continue
            (aead,) = aeads
            if t["result"] == "valid":
                ok = (
                    aead.seal(key, iv, msg, aad) == sealed
                    and aead.open(key, iv, sealed, aad) == msg
                )
            else:
                try:
                    aead.open(key, iv, sealed, aad)
                    ok = False
                except DecryptionFailed:
                    ok = True
            if not ok:
                mismatches.append(t["tcId"])
            tally[t["result"]] += 1
    assert mismatches == []
    return tally


def test_wycheproof_aes_gcm() -> None:
    sizes = {128: [AEADS["AES-128-GCM"]], 256: [AEADS["AES-256-GCM"]]}
    tally = run_aead_vectors("aes_gcm_test.json", lambda bits: sizes.get(bits, []))
    # 128-bit: 40 valid + 27 invalid; 256-bit: 39 + 27; 183 out of profile (IV != 96, AES-192)
    assert tally == {"valid": 79, "invalid": 54, "out of profile": 183}
    assert sum(tally.values()) == len(wycheproof_tests("aes_gcm_test.json"))


def test_wycheproof_chacha20_poly1305() -> None:
    tally = run_aead_vectors(
        "chacha20_poly1305_test.json",
        lambda bits: [AEADS["ChaCha20-Poly1305"]] if bits == 256 else [],
    )
    assert tally == {"valid": 256, "invalid": 60, "out of profile": 9}
    invalid_nonce = [
        t
        for g in wycheproof_groups("chacha20_poly1305_test.json")
        for t in g["tests"]
        if g["ivSize"] != 96
    ]
    assert all(t["result"] == "invalid" for t in invalid_nonce)
    assert tally["out of profile"] == len(invalid_nonce)


def test_wycheproof_hkdf_sha256() -> None:
    tally = {"valid": 0, "invalid": 0}
    for t in wycheproof_tests("hkdf_sha256_test.json"):
        args = {
            "ikm": bytes.fromhex(t["ikm"]),
            "salt": bytes.fromhex(t["salt"]),
            "info": bytes.fromhex(t["info"]),
            "length": t["size"],
        }
        if t["result"] == "valid":
            assert channel._hkdf_sha256(**args).hex() == t["okm"], t["tcId"]
        else:
            with pytest.raises(ValueError):
                channel._hkdf_sha256(**args)
        tally[t["result"]] += 1
    assert tally == {"valid": 83, "invalid": 3}


def test_key_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key id is typed on command lines (`keybound e2e-key pin ID`), where a leading '-'
    reads as an option; 1 in 64 random ids would start with one."""
    draws = iter([b"\xfb" + bytes(11), b"\x00" * 12])  # b64u: '-' first, then 'A' first
    monkeypatch.setattr(channel.secrets, "token_bytes", lambda n: next(draws))
    assert channel.new_key_id() == "A" * 16
    monkeypatch.undo()
    assert not any(channel.new_key_id().startswith("-") for _ in range(2000))
