"""The attestation bytes of the protocol against their test vectors (docs/protocol.md §4.6,
§6.5, Appendix A.2-A.4): tests/vectors/protocol/attestation.json is made by an independent
implementation (make_attestation_vectors.py); here the library has to reproduce or accept
every value, and the docs have to carry the inline ones."""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from keybound import protocol as p
from keybound.attestation import AttestationFailed, Reason, make_credential
from keybound.attestation.tpm_credential import kdfa, kdfe
from keybound.attestation.tpm_structures import object_name, parse_public
from keybound.server.core.appconfig import AppConfig
from keybound.server.core.attestation import check_assertion

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "vectors" / "protocol"
DATA: dict[str, Any] = json.loads((VECTORS / "attestation.json").read_text())
TRANSCRIPTS = {
    t["name"]: t for t in json.loads((VECTORS / "transcripts.json").read_text())["transcripts"]
}
APP = AppConfig().updated(
    {"attestationAppleTeamId": "TEAM123456", "attestationAppleBundleId": "com.example.bank"}
)


def test_generator_reproduces_the_file_byte_for_byte() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_attestation_vectors", VECTORS / "make_attestation_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render(module.build(DATA)) == (VECTORS / "attestation.json").read_text()


def test_app_attest_activation_client_data() -> None:
    vector = DATA["appAttestClientData"]
    inputs = vector["inputs"]
    data = p.app_attest_client_data(
        application_id=inputs["applicationId"],
        device_id=inputs["deviceId"],
        operation_id=inputs["operationId"],
        challenge=bytes.fromhex(inputs["challengeHex"]),
    )
    assert data.hex() == vector["clientDataHex"]
    assert hashlib.sha256(data).hexdigest() == vector["clientDataHashHex"]


def test_app_attest_assertion_over_the_transcript() -> None:
    vector = DATA["appAttestAssertion"]
    tbs = bytes.fromhex(TRANSCRIPTS[vector["transcript"]]["tbsHex"])
    assert hashlib.sha256(tbs).hexdigest() == vector["clientDataHashHex"]
    assertion = p.b64u_decode(vector["hardwareSignature"])
    assert assertion.hex() == vector["assertionHex"]
    public = bytes.fromhex(vector["publicKeySpkiHex"])
    counter = check_assertion(
        assertion,
        transcript=tbs,
        public_key=public,
        previous_counter=vector["previousCounter"],
        config=APP,
    )
    assert counter == vector["counter"]
    for previous in (vector["counter"], vector["counter"] + 1):  # replayed, then lower
        with pytest.raises(AttestationFailed) as refused:
            check_assertion(
                assertion, transcript=tbs, public_key=public, previous_counter=previous, config=APP
            )
        assert refused.value.reason is Reason.COUNTER_NOT_INCREASING
    with pytest.raises(AttestationFailed) as other:  # another transcript
        check_assertion(
            assertion, transcript=tbs + b"x", public_key=public, previous_counter=0, config=APP
        )
    assert other.value.reason is Reason.SIGNATURE_INVALID
    # it travels as hardwareSignature of an authentication finish
    body = {
        **TRANSCRIPTS[vector["transcript"]]["request"],
        "hardwareSignature": vector["hardwareSignature"],
    }
    assert p.AuthenticationFinishRequest.model_validate(body).hardware_signature == assertion


def _activate(vector: dict[str, Any], blob: bytes, encrypted: bytes) -> bytes:
    """TPM2_ActivateCredential in software with the vector's EK private key."""
    ek = ec.derive_private_key(int(vector["ekPrivateKeyHex"], 16), ec.SECP256R1())
    x, y = encrypted[2:34], encrypted[36:68]
    ephemeral = ec.EllipticCurvePublicNumbers(
        int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
    ).public_key()
    shared = ek.exchange(ec.ECDH(), ephemeral)
    ek_x = ek.public_key().public_numbers().x.to_bytes(32, "big")
    seed = kdfe(hashes.SHA256, shared, b"IDENTITY", x, ek_x, 256)
    name = bytes.fromhex(vector["akNameHex"])
    outer, encrypted_identity = blob[2:34], blob[34:]
    integrity = kdfa(hashes.SHA256, seed, b"INTEGRITY", b"", b"", 256)
    assert hmac.compare_digest(
        outer, hmac.new(integrity, encrypted_identity + name, "sha256").digest()
    )
    decryptor = Cipher(
        algorithms.AES(kdfa(hashes.SHA256, seed, b"STORAGE", name, b"", 128)), CFB(bytes(16))
    ).decryptor()
    identity = decryptor.update(encrypted_identity) + decryptor.finalize()
    return identity[2 : 2 + int.from_bytes(identity[:2], "big")]


def test_tpm_credential() -> None:
    vector = DATA["tpmCredential"]
    ak_public = bytes.fromhex(vector["akPublicHex"])
    name = object_name(parse_public(ak_public).name_alg, ak_public)
    assert name.hex() == vector["akNameHex"]
    blob, encrypted = (
        bytes.fromhex(vector["credentialBlobHex"]),
        bytes.fromhex(vector["encryptedSecretHex"]),
    )
    assert _activate(vector, blob, encrypted).hex() == vector["secretHex"]
    wire = p.TpmCredential.model_validate(vector["tpmCredential"])
    assert (wire.credential_blob, wire.encrypted_secret) == (blob, encrypted)
    # the library's MakeCredential (its own ephemeral key) protects the same secret alike
    ek = ec.derive_private_key(int(vector["ekPrivateKeyHex"], 16), ec.SECP256R1())
    made = make_credential(ek.public_key(), name, bytes.fromhex(vector["secretHex"]))
    assert (
        _activate(vector, made.credential_blob, made.encrypted_secret).hex() == vector["secretHex"]
    )


def test_docs_carry_the_inline_vectors() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    assert "tests/vectors/protocol/attestation.json" in doc
    packed = "".join(doc.split())  # the docs wrap long values over lines
    for value in (
        DATA["appAttestClientData"]["clientDataHex"],
        DATA["appAttestClientData"]["clientDataHashHex"],
        DATA["appAttestAssertion"]["hardwareSignature"],
        DATA["appAttestAssertion"]["signatureHex"],
        DATA["tpmCredential"]["tpmCredential"]["credentialBlob"],
    ):
        assert value in packed
