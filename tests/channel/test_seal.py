"""Sealing and opening (keybound.channel.seal): round trips, interop with pyhpke, tampering,
responses, what a client may send, fixed vectors."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import pyhpke
import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from keybound import channel
from keybound.channel import (
    ChannelPin,
    ChannelSuite,
    DecryptionFailed,
    E2EKey,
    KeyState,
    ResponseOpener,
)
from keybound.channel import seal as channel_seal
from keybound.channel import suites as channel_suites
from keybound.errors import MalformedRequest
from tests.channel.support import (
    APP,
    BODY,
    ENC_SIZE,
    METHOD,
    NOW,
    PATH,
    PYHPKE_AEAD,
    SUITES,
    VECTORS,
    X25519_SUITES,
    assert_all_refused,
    doc_header,
    doc_info,
    doc_plaintext,
    doc_response_key_and_aad,
    doc_suite_id,
    key_for,
    lp,
    open_with,
    pin_for,
    wycheproof_tests,
)

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


# --------------------------------------------------------------------------- responses


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
    assert channel_suites._SUITES[suite].kem.public_from_private(key.private_key) == key.public_key
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
    aead_key, aad = channel_seal._response_context(opener)
    assert (aead_key.hex(), aad.hex()) == (v["aeadKey"], v["aad"])
    response = opener.open(bytes.fromhex(v["wire"]))
    assert (response.status, response.body.hex()) == (v["status"], v["body"])
    with pytest.raises(DecryptionFailed):
        replace(opener, request_id=bytes(16)).open(bytes.fromhex(v["wire"]))


def test_vectors_cover_every_suite() -> None:
    assert {v["suite"] for v in REQUEST_VECTORS} == {s.value for s in SUITES}
    assert {v["suite"] for v in RESPONSE_VECTORS} == {s.value for s in SUITES}
