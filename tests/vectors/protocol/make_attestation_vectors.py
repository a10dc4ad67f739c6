"""Generate tests/vectors/protocol/attestation.json: test vectors for the attestation bytes
of the keybound protocol (docs/protocol.md §4.6, §6.5; Appendix A.2-A.4).

Usage (from the repository root)::

    .venv/bin/python tests/vectors/protocol/make_attestation_vectors.py          # (re)write
    .venv/bin/python tests/vectors/protocol/make_attestation_vectors.py --check  # exit 1 if stale

Every input is fixed here (private scalars are SHA-256 of a fixed label, reduced into
[1, n-1] of P-256); identifiers and challenges are those of transcripts.json, whose
``authentication-pin-with-context`` transcript is the assertion's client data. The bytes are
computed with hashlib, hmac, struct, cbor2 and cryptography directly -- an implementation
independent of keybound's. The one ECDSA signature uses RFC 6979 nonces where the build
supports them, and is kept while it verifies (as make_vectors.py does), so the file is
reproducible byte for byte. The TPM credential uses a fixed ephemeral key, so it is fully
deterministic.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import struct
import sys
from pathlib import Path
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "attestation.json"
TRANSCRIPTS = HERE / "transcripts.json"
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ACTIVATION_LABEL = b"keybound/appattest/v1/activation"
APP_ID = "TEAM123456.com.example.bank"
#: what Apple's assertions carry in the flags byte (AT set, no attested data: tolerated)
ASSERTION_FLAGS = 0x40
#: TPMA_OBJECT fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign
AK_ATTRIBUTES = 0x00050072


def lp(*fields: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(f)) + f for f in fields)


def key(label: str) -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(hashlib.sha256(label.encode()).digest(), "big") % (P256_N - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def spki(private: ec.EllipticCurvePrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def b64u(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _sign(private: ec.EllipticCurvePrivateKey, message: bytes, previous: str | None) -> bytes:
    if previous is not None:
        try:
            private.public_key().verify(bytes.fromhex(previous), message, ec.ECDSA(hashes.SHA256()))
            return bytes.fromhex(previous)
        except InvalidSignature:
            pass
    try:
        return private.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    except UnsupportedAlgorithm:  # pragma: no cover - OpenSSL before 3.2
        return private.sign(message, ec.ECDSA(hashes.SHA256()))


def client_data(transcripts: dict[str, Any]) -> dict[str, Any]:
    """§6.5.2: the client data of an App Attest attestation at activation."""
    inputs = transcripts["activation-with-hardware-key"]["inputs"]
    fields = [
        ("label", ACTIVATION_LABEL),
        ("applicationId", inputs["applicationId"].encode()),
        ("deviceId", inputs["deviceId"].encode()),
        ("operationId", inputs["operationId"].encode()),
        ("challenge", bytes.fromhex(inputs["challengeHex"])),
    ]
    data = lp(*(value for _, value in fields))
    return {
        "inputs": {
            k: inputs[k] for k in ("applicationId", "deviceId", "operationId", "challengeHex")
        },
        "fields": [{"name": name, "lpHex": lp(value).hex()} for name, value in fields],
        "clientDataHex": data.hex(),
        "clientDataHashHex": hashlib.sha256(data).hexdigest(),
    }


def assertion(transcripts: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """§4.6: an App Attest assertion over an authentication transcript."""
    tbs = bytes.fromhex(transcripts["authentication-pin-with-context"]["tbsHex"])
    private = key("keybound-vector/app-attest-key")
    counter = 2
    auth_data = (
        hashlib.sha256(APP_ID.encode()).digest()
        + bytes([ASSERTION_FLAGS])
        + struct.pack(">I", counter)
    )
    client_data_hash = hashlib.sha256(tbs).digest()
    nonce = hashlib.sha256(auth_data + client_data_hash).digest()
    signature = _sign(private, nonce, previous and previous["signatureHex"])
    encoded = cbor2.dumps({"signature": signature, "authenticatorData": auth_data})
    return {
        "appId": APP_ID,
        "transcript": "authentication-pin-with-context",
        "clientDataHashHex": client_data_hash.hex(),
        "privateKeyHex": format(private.private_numbers().private_value, "064x"),
        "publicKeySpkiHex": spki(private).hex(),
        "keyIdHex": hashlib.sha256(
            private.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        ).hexdigest(),
        "previousCounter": counter - 1,
        "counter": counter,
        "authenticatorDataHex": auth_data.hex(),
        "nonceHex": nonce.hex(),
        "signatureHex": signature.hex(),
        "assertionHex": encoded.hex(),
        "hardwareSignature": b64u(encoded),
    }


def _kdfa(key_bytes: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int) -> bytes:
    out, counter = b"", 1
    while len(out) * 8 < bits:
        block = struct.pack(">I", counter) + label + b"\x00" + context_u + context_v
        out += hmac.new(key_bytes, block + struct.pack(">I", bits), "sha256").digest()
        counter += 1
    return out[: bits // 8]


def _tpmt_public_ecc(public: ec.EllipticCurvePublicKey, attributes: int) -> bytes:
    numbers = public.public_numbers()
    return (
        struct.pack(">HHIH", 0x0023, 0x000B, attributes, 0)  # ECC, SHA-256, no policy
        + struct.pack(">HHHHH", 0x0010, 0x0018, 0x000B, 0x0003, 0x0010)  # ECDSA-SHA256
        + struct.pack(">H", 32)
        + numbers.x.to_bytes(32, "big")
        + struct.pack(">H", 32)
        + numbers.y.to_bytes(32, "big")
    )


def tpm_credential() -> dict[str, Any]:
    """§6.5.3: TPM2_MakeCredential for an ECC P-256 EK (TCG default template: SHA-256,
    AES-128-CFB) and a P-256 AK, with a fixed ephemeral key [TPM 2.0 Part 1 §24, C.6.4]."""
    ek, ak, ephemeral = (
        key("keybound-vector/tpm-ek"),
        key("keybound-vector/tpm-ak"),
        key("keybound-vector/tpm-ephemeral"),
    )
    secret = hashlib.sha256(b"keybound-vector/tpm-secret").digest()
    ak_public = _tpmt_public_ecc(ak.public_key(), AK_ATTRIBUTES)
    ak_name = struct.pack(">H", 0x000B) + hashlib.sha256(ak_public).digest()
    shared_x = ephemeral.exchange(ec.ECDH(), ek.public_key())
    eph, ek_point = ephemeral.public_key().public_numbers(), ek.public_key().public_numbers()
    eph_x, eph_y = eph.x.to_bytes(32, "big"), eph.y.to_bytes(32, "big")
    seed = hashlib.sha256(
        struct.pack(">I", 1) + shared_x + b"IDENTITY\x00" + eph_x + ek_point.x.to_bytes(32, "big")
    ).digest()  # KDFe, 256 bits
    sym_key = _kdfa(seed, b"STORAGE", ak_name, b"", 128)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_identity = encryptor.update(struct.pack(">H", len(secret)) + secret) + encryptor.finalize()
    outer = hmac.new(
        _kdfa(seed, b"INTEGRITY", b"", b"", 256), enc_identity + ak_name, "sha256"
    ).digest()
    blob = struct.pack(">H", len(outer)) + outer + enc_identity
    encrypted = struct.pack(">H", 32) + eph_x + struct.pack(">H", 32) + eph_y
    return {
        "ekPrivateKeyHex": format(ek.private_numbers().private_value, "064x"),
        "ekPublicKeySpkiHex": spki(ek).hex(),
        "akPrivateKeyHex": format(ak.private_numbers().private_value, "064x"),
        "akPublicHex": ak_public.hex(),
        "akNameHex": ak_name.hex(),
        "ephemeralPrivateKeyHex": format(ephemeral.private_numbers().private_value, "064x"),
        "secretHex": secret.hex(),
        "seedHex": seed.hex(),
        "symKeyHex": sym_key.hex(),
        "credentialBlobHex": blob.hex(),
        "encryptedSecretHex": encrypted.hex(),
        "tpmCredential": {"credentialBlob": b64u(blob), "encryptedSecret": b64u(encrypted)},
    }


def build(previous: dict[str, Any] | None) -> dict[str, Any]:
    transcripts = {t["name"]: t for t in json.loads(TRANSCRIPTS.read_text())["transcripts"]}
    return {
        "formatVersion": 1,
        "appAttestClientData": client_data(transcripts),
        "appAttestAssertion": assertion(
            transcripts, previous and previous.get("appAttestAssertion")
        ),
        "tpmCredential": tpm_credential(),
    }


def render(vectors: dict[str, Any]) -> str:
    return json.dumps(vectors, indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args()
    previous = json.loads(OUTPUT.read_text()) if OUTPUT.exists() else None
    text = render(build(previous))
    if args.check:
        return 0 if OUTPUT.exists() and OUTPUT.read_text() == text else 1
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
