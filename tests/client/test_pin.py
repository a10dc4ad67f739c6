"""PIN derivation and proofs (docs/protocol.md §5), checked against independent code."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest

from keybound import protocol
from keybound.client import pin
from keybound.errors import ClientError, ErrorCode

SALT = bytes(range(32))


def lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def test_pin_key_is_scrypt_with_the_documented_parameters() -> None:
    # hashlib.scrypt is a second, independent implementation (OpenSSL EVP_PBE_scrypt).
    expected = hashlib.scrypt(b"2468", salt=SALT, n=2**14, r=8, p=1, dklen=32)
    assert pin.derive_pin_key("2468", SALT) == expected


def test_pin_is_encoded_as_utf8() -> None:
    expected = hashlib.scrypt("pïn✓".encode(), salt=SALT, n=2**14, r=8, p=1, dklen=32)
    assert pin.derive_pin_key("pïn✓", SALT) == expected


def test_pin_key_depends_on_pin_and_salt() -> None:
    key = pin.derive_pin_key("2468", SALT)
    assert pin.derive_pin_key("2468", SALT) == key
    assert pin.derive_pin_key("2469", SALT) != key
    assert pin.derive_pin_key("2468", bytes(32)) != key
    assert len(key) == 32


def test_salts_are_fresh_and_32_bytes() -> None:
    salts = {pin.new_salt() for _ in range(16)}
    assert len(salts) == 16
    assert all(len(s) == 32 for s in salts)


def test_proof_is_hmac_over_the_labelled_transcript() -> None:
    key = pin.derive_pin_key("2468", SALT)
    transcript = b"signed transcript bytes"
    expected = hmac.new(key, lp(b"keybound-pin-proof-v1") + lp(transcript), hashlib.sha256).digest()
    assert pin.proof(key, transcript) == expected
    assert (
        pin.proof(key, transcript)
        == hmac.new(key, protocol.pin_proof_message(transcript), hashlib.sha256).digest()
    )


def test_proof_binds_the_transcript_and_the_pin() -> None:
    right = pin.derive_pin_key("2468", SALT)
    wrong = pin.derive_pin_key("1357", SALT)
    assert pin.proof(right, b"a") != pin.proof(right, b"b")
    assert pin.proof(right, b"a") != pin.proof(wrong, b"a")


@pytest.mark.parametrize("bad_pin", ["", "x" * 257])
def test_empty_or_huge_pin_is_refused(bad_pin: str) -> None:
    with pytest.raises(ClientError) as info:
        pin.derive_pin_key(bad_pin, SALT)
    assert info.value.code is ErrorCode.CLIENT_CONFIGURATION


def test_salt_of_wrong_size_is_refused() -> None:
    with pytest.raises(ClientError) as info:
        pin.derive_pin_key("2468", b"short")
    assert info.value.code is ErrorCode.CLIENT_CONFIGURATION
