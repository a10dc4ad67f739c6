"""The hybrid suite's KEM is X-Wing as draft-connolly-cfrg-xwing-kem-06 specifies it, plugged
into HPKE as its §5.6 says (docs/channel.md §2): checked against the draft's own test vector
(tests/vectors/xwing/SOURCE.md), not against keybound's or cryptography's output."""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from keybound.channel import ChannelSuite
from keybound.channel import suites as channel_suites

VECTOR = Path(__file__).resolve().parents[1] / "vectors" / "xwing" / "draft-06-appendix-c-3.txt"
HYBRID = channel_suites._SUITES[ChannelSuite.MLKEM768X25519_SHA256_AES128GCM]


def _vector() -> dict[str, bytes]:
    """The draft's layout: ``name hex`` or ``name`` then indented hex lines."""
    fields: dict[str, str] = {}
    name = ""
    for line in VECTOR.read_text().splitlines():
        if match := re.fullmatch(r"(\w+)\s*([0-9a-f]*)", line):
            name, fields[name] = match.group(1), match.group(2)
        else:
            fields[name] += line.strip()
    return {key: bytes.fromhex(value) for key, value in fields.items()}


def _keybound_private_key(seed: bytes) -> bytes:
    """X-Wing's 32-byte decapsulation key expanded as its §5.2 does (SHAKE256 to 96 bytes:
    ML-KEM-768 d || z, then the X25519 scalar): keybound's stored form of the key."""
    return hashlib.shake_256(seed).digest(96)


def _hpke_base_key_schedule(shared_secret: bytes, info: bytes) -> tuple[bytes, bytes]:
    """RFC 9180 §5.1, mode_base, for (KEM 0x647A, HKDF-SHA256, AES-128-GCM): the AEAD key and
    base nonce a KEM shared secret gives."""
    suite_id = b"HPKE" + struct.pack(">HHH", 0x647A, 0x0001, 0x0001)

    def extract(salt: bytes, label: bytes, ikm: bytes) -> bytes:
        mac = hmac.HMAC(salt or bytes(32), hashes.SHA256())
        mac.update(b"HPKE-v1" + suite_id + label + ikm)
        return mac.finalize()

    def expand(prk: bytes, label: bytes, context: bytes, length: int) -> bytes:
        labeled = struct.pack(">H", length) + b"HPKE-v1" + suite_id + label + context
        return HKDFExpand(hashes.SHA256(), length, labeled).derive(prk)

    context = b"\x00" + extract(b"", b"psk_id_hash", b"") + extract(b"", b"info_hash", info)
    secret = extract(shared_secret, b"secret", b"")
    return expand(secret, b"key", context, 16), expand(secret, b"base_nonce", context, 12)


def test_keybound_key_format_is_the_drafts_expanded_key() -> None:
    vector = _vector()
    assert HYBRID.kem.public_from_private(_keybound_private_key(vector["seed"])) == vector["pk"]
    assert HYBRID.suite_id == bytes.fromhex("647a00010001")


def test_hybrid_suite_decapsulates_the_drafts_ciphertext_inside_hpke() -> None:
    """HPKE's ``enc`` is the X-Wing ciphertext and X-Wing's shared secret enters the RFC 9180
    key schedule as the KEM's (draft §5.6): a message sealed by hand under the key schedule of
    the vector's ``ss`` opens with the vector's ``ct`` as ``enc``, and only with it."""
    vector = _vector()
    private = HYBRID.kem.load_private(_keybound_private_key(vector["seed"]))
    info = b"keybound x-wing interop"
    key, nonce = _hpke_base_key_schedule(vector["ss"], info)
    sealed = AESGCM(key).encrypt(nonce, b"opened by the draft's shared secret", b"")
    assert (
        HYBRID.hpke_suite.decrypt(vector["ct"] + sealed, private, info=info)
        == b"opened by the draft's shared secret"
    )
    # one bit of the X25519 half of the ciphertext changed: another shared secret
    altered = bytearray(vector["ct"])
    altered[-1] ^= 1
    with pytest.raises(InvalidTag):
        HYBRID.hpke_suite.decrypt(bytes(altered) + sealed, private, info=info)
