"""keybound.crypto: the server's one signature-verification path, against Wycheproof.

Vectors: tests/vectors/wycheproof/ecdsa_secp256r1_sha256_test.json, copied from
C2SP/wycheproof testvectors_v1 at commit dac1dd4729fd1f8dd9e1e9f3dce51d783da6c166
(see tests/vectors/wycheproof/SOURCE.md). Policy for "acceptable" results (none occur in this
file today): either outcome is allowed, but only as return-or-InvalidSignature.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from keybound import crypto
from keybound.errors import InvalidSignature, MalformedRequest, UnsupportedAlgorithm
from keybound.protocol import Algorithm

VECTORS = Path(__file__).parent / "vectors" / "wycheproof" / "ecdsa_secp256r1_sha256_test.json"


def test_wycheproof_ecdsa_p256_sha256_zero_mismatches() -> None:
    data = json.loads(VECTORS.read_text())
    mismatches, counted = [], 0
    for group in data["testGroups"]:
        key = bytes.fromhex(group["publicKeyDer"])
        for case in group["tests"]:
            counted += 1
            try:
                crypto.verify_signature(
                    public_key=key,
                    algorithm=Algorithm.ES256,
                    message=bytes.fromhex(case["msg"]),
                    signature=bytes.fromhex(case["sig"]),
                )
                accepted = True
            except InvalidSignature:
                accepted = False
            if (case["result"] == "valid" and not accepted) or (
                case["result"] == "invalid" and accepted
            ):
                mismatches.append(case["tcId"])
    assert counted == data["numberOfTests"] == 484
    assert mismatches == []


def test_key_parsing_is_strict() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = crypto.public_der(key)
    assert crypto.parse_public_key(der) == der
    with pytest.raises(MalformedRequest):
        crypto.parse_public_key(der[:-1])
    with pytest.raises(MalformedRequest):
        crypto.parse_public_key(b"\x00" * 91)
    with pytest.raises(UnsupportedAlgorithm):
        crypto.parse_public_key(crypto.public_der(ec.generate_private_key(ec.SECP384R1())))
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    ed = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(UnsupportedAlgorithm):
        crypto.parse_public_key(ed)


def test_verify_rejects_garbage_as_invalid_signature() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = crypto.public_der(key)
    good = crypto.sign_p256(key, b"m")
    crypto.verify_signature(public_key=der, algorithm=Algorithm.ES256, message=b"m", signature=good)
    for public_key, signature in [
        (der, b""),
        (der, good[:-1]),
        (b"junk", good),
        (der, crypto.sign_p256(key, b"n")),
    ]:
        with pytest.raises(InvalidSignature):
            crypto.verify_signature(
                public_key=public_key, algorithm=Algorithm.ES256, message=b"m", signature=signature
            )


def test_pin_proof_is_constant_time_mac() -> None:
    proof = crypto.pin_proof(b"k" * 32, b"message")
    assert crypto.verify_pin_proof(pin_key=b"k" * 32, message=b"message", proof=proof)
    assert not crypto.verify_pin_proof(pin_key=b"j" * 32, message=b"message", proof=proof)
