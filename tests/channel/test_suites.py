"""The suites' primitives against Wycheproof (keybound.channel.suites)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from keybound.channel import (
    ChannelSuite,
    DecryptionFailed,
)
from keybound.channel import suites as channel_suites
from tests.channel.support import (
    wycheproof_groups,
    wycheproof_tests,
)

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


def test_wycheproof_x25519() -> None:
    kem = channel_suites._SUITES[ChannelSuite.X25519_SHA256_AES128GCM].kem
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
    "AES-128-GCM": channel_suites._AES_128_GCM,
    "AES-256-GCM": channel_suites._AES_256_GCM,
    "ChaCha20-Poly1305": channel_suites._CHACHA20_POLY1305,
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
            assert channel_suites._hkdf_sha256(**args).hex() == t["okm"], t["tcId"]
        else:
            with pytest.raises(ValueError):
                channel_suites._hkdf_sha256(**args)
        tally[t["result"]] += 1
    assert tally == {"valid": 83, "invalid": 3}
