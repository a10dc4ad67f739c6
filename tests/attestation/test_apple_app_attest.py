"""Apple App Attest: the four real (development) samples, attestation and assertion, and
the derived negatives SOURCE.md lists (no negative sample was published)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
from typing import Any

import cbor2
import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keybound.attestation import (
    AppAttestEvidence,
    AppAttestVerifier,
    AppleApp,
    AppleEnvironment,
    AttestationFailed,
    AttestationFormat,
    Reason,
    SecurityLevel,
    TrustStore,
)
from keybound.attestation.authdata import FLAG_AT, parse_authenticator_data
from keybound.attestation.trust import TrustAnchor
from tests.attestation import factory
from tests.attestation.vectors import VECTORS, at, entries

APPLE = TrustStore.builtin(AttestationFormat.APPLE_APP_ATTEST)
SAMPLES = [e for e in entries("apple") if e["expected"]["result"] == "valid"]


@dataclasses.dataclass
class Sample:
    app: AppleApp
    attestation_object: bytes
    key_id: bytes
    client_data_hash: bytes
    public_key: bytes
    now: dt.datetime
    assertions: list[dict[str, Any]]


def _sample(entry: dict[str, Any]) -> Sample:
    documents = list(yaml.safe_load_all((VECTORS / entry["files"][0]).read_text("utf-8")))
    attestation = next(d for d in documents if d["type"] == "attestation")
    team, _, bundle = entry["inputs"]["app_id"].partition(".")
    public_key = serialization.load_pem_public_key(attestation["publicKey"].encode())
    return Sample(
        app=AppleApp(team_id=team, bundle_id=bundle),
        attestation_object=base64.b64decode(attestation["attestationBase64"]),
        key_id=base64.b64decode(entry["inputs"]["keyId_base64"]),
        client_data_hash=base64.b64decode(attestation["clientDataHashSha256Base64"]),
        public_key=public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        now=at(entry["verify_at"]),
        assertions=[d for d in documents if d["type"] == "assertion"],
    )


@pytest.fixture(params=SAMPLES, ids=[e["id"] for e in SAMPLES])
def sample(request: pytest.FixtureRequest) -> Sample:
    return _sample(request.param)


def _verifier(sample: Sample, **changes: Any) -> AppAttestVerifier:
    options: dict[str, Any] = {
        "trust": APPLE,
        "app": sample.app,
        "environment": AppleEnvironment.DEVELOPMENT,
    }
    options.update(changes)
    return AppAttestVerifier(**options)


def _attest(sample: Sample, verifier: AppAttestVerifier | None = None, **changes: Any):  # type: ignore[no-untyped-def]
    values: dict[str, Any] = {
        "attestation_object": sample.attestation_object,
        "key_id": sample.key_id,
        "challenge": sample.client_data_hash,
        "key": sample.public_key,
        "now": sample.now,
    }
    values.update(changes)
    return (verifier or _verifier(sample)).verify(
        AppAttestEvidence(attestation_object=values["attestation_object"], key_id=values["key_id"]),
        expected_challenge=values["challenge"],
        expected_public_key=values["key"],
        now=values["now"],
    )


def _refused(reason: Reason, call, *args: Any, **kwargs: Any) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AttestationFailed) as caught:
        call(*args, **kwargs)
    assert caught.value.reason is reason, caught.value.detail


def test_attestation_verifies(sample: Sample) -> None:
    result = _attest(sample)
    assert result.security_level is SecurityLevel.SECURE_ENCLAVE
    assert result.key_id == sample.key_id and result.counter == 0
    assert result.app_identity == "6MURL8TA57.de.vincent-haupert.apple-appattest-poc"
    assert result.receipt[:2] == b"\x30\x80"  # PKCS#7 (BER), returned untouched


def test_assertions_verify_and_return_the_counter(sample: Sample) -> None:
    verifier = _verifier(sample)
    for document in sample.assertions:
        client_data = base64.b64decode(document["clientDataBase64"])
        assertion = base64.b64decode(document["assertionBase64"])
        result = verifier.verify_assertion(
            assertion,
            expected_client_data_hash=hashlib.sha256(client_data).digest(),
            expected_public_key=sample.public_key,
            previous_counter=0,
        )
        assert result.counter == document["counter"] == 1
        # the quirk: 37 bytes of authenticator data with the AT flag set
        raw = cbor2.loads(assertion)["authenticatorData"]
        assert len(raw) == 37 and raw[32] & FLAG_AT
        # the counter replayed (or a clone behind): strictly greater is required
        _refused(
            Reason.COUNTER_NOT_INCREASING,
            verifier.verify_assertion,
            assertion,
            expected_client_data_hash=hashlib.sha256(client_data).digest(),
            expected_public_key=sample.public_key,
            previous_counter=1,
        )


def test_wrong_app_id(sample: Sample) -> None:
    for app in (
        AppleApp(team_id="AAAAAAAAAA", bundle_id=sample.app.bundle_id),
        AppleApp(team_id=sample.app.team_id, bundle_id="com.example.other"),
    ):
        _refused(Reason.APP_ID_MISMATCH, _attest, sample, _verifier(sample, app=app))


def test_production_expected_for_a_development_key(sample: Sample) -> None:
    verifier = _verifier(sample, environment=AppleEnvironment.PRODUCTION)
    _refused(Reason.ENVIRONMENT_MISMATCH, _attest, sample, verifier)


def test_altered_client_data(sample: Sample) -> None:
    altered = hashlib.sha256(b"wurzelpfropf!").digest()
    _refused(Reason.CHALLENGE_MISMATCH, _attest, sample, challenge=altered)


def test_key_id_not_matching(sample: Sample) -> None:
    _refused(Reason.KEY_ID_MISMATCH, _attest, sample, key_id=hashlib.sha256(b"x").digest())


def test_other_registered_key(sample: Sample) -> None:
    other = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    _refused(Reason.KEY_MISMATCH, _attest, sample, key=other)


def test_expired_credential_certificate(sample: Sample) -> None:
    _refused(Reason.CHAIN_EXPIRED, _attest, sample, now=sample.now + dt.timedelta(days=4))


def test_apple_root_removed(sample: Sample) -> None:
    empty = APPLE.without_keys([a.key_sha256 for a in APPLE.anchors])
    _refused(Reason.CHAIN_UNTRUSTED, _attest, sample, _verifier(sample, trust=empty))


def test_tampered_authenticator_data_breaks_the_nonce(sample: Sample) -> None:
    document = cbor2.loads(sample.attestation_object)
    auth = bytearray(document["authData"])
    auth[36] = 1  # counter 1: Apple's nonce covered the original authData
    document["authData"] = bytes(auth)
    _refused(Reason.CHALLENGE_MISMATCH, _attest, sample, attestation_object=cbor2.dumps(document))


def test_assertion_by_another_key_and_wrong_app(sample: Sample) -> None:
    verifier = _verifier(sample)
    attacker = ec.generate_private_key(ec.SECP256R1())
    client_hash = hashlib.sha256(b"transcript").digest()

    def assertion(rp_id_hash: bytes, counter: int, key: ec.EllipticCurvePrivateKey) -> bytes:
        auth = rp_id_hash + bytes([FLAG_AT]) + counter.to_bytes(4, "big")
        nonce = hashlib.sha256(auth + client_hash).digest()
        signature = key.sign(nonce, ec.ECDSA(hashes.SHA256()))
        return cbor2.dumps({"signature": signature, "authenticatorData": auth})

    attacker_spki = attacker.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    good = assertion(sample.app.rp_id_hash, 5, attacker)
    assert (
        verifier.verify_assertion(
            good,
            expected_client_data_hash=client_hash,
            expected_public_key=attacker_spki,
            previous_counter=4,
        ).counter
        == 5
    )
    _refused(
        Reason.SIGNATURE_INVALID,
        verifier.verify_assertion,
        good,
        expected_client_data_hash=client_hash,
        expected_public_key=sample.public_key,
        previous_counter=0,
    )
    _refused(
        Reason.SIGNATURE_INVALID,
        verifier.verify_assertion,
        good,
        expected_client_data_hash=hashlib.sha256(b"other").digest(),
        expected_public_key=attacker_spki,
        previous_counter=0,
    )
    wrong_app = assertion(hashlib.sha256(b"TEAM.other").digest(), 5, attacker)
    _refused(
        Reason.APP_ID_MISMATCH,
        verifier.verify_assertion,
        wrong_app,
        expected_client_data_hash=client_hash,
        expected_public_key=attacker_spki,
        previous_counter=0,
    )


def test_authenticator_data_quirk_and_strictness() -> None:
    base = b"\x01" * 32 + bytes([FLAG_AT]) + (1).to_bytes(4, "big")
    assert parse_authenticator_data(base).credential_id is None  # Apple's quirk tolerated
    _refused(Reason.MALFORMED, parse_authenticator_data, base + b"\x00")  # truncated data
    _refused(Reason.MALFORMED, parse_authenticator_data, base[:36])
    no_flags = b"\x01" * 32 + b"\x00" + bytes(4)
    _refused(Reason.MALFORMED, parse_authenticator_data, no_flags + b"junk")


def test_malformed_attestation_objects() -> None:
    sample = _sample(SAMPLES[0])
    document = cbor2.loads(sample.attestation_object)
    for broken in (
        b"",
        b"\xff",
        cbor2.dumps({**document, "fmt": "packed"}),
        cbor2.dumps({**document, "extra": 1}),
        cbor2.dumps({**document, "attStmt": {"x5c": document["attStmt"]["x5c"]}}),
        cbor2.dumps({**document, "attStmt": {**document["attStmt"], "x5c": []}}),
        sample.attestation_object + b"\x00",
    ):
        _refused(Reason.MALFORMED, _attest, sample, attestation_object=broken)


# ------------------------------------------------------- an App Attest-shaped test PKI

APP = AppleApp(team_id="TEAM123456", bundle_id="com.example.bank")
CLIENT_HASH = hashlib.sha256(b"keybound activation transcript").digest()


@pytest.fixture(scope="module")
def apple_pki() -> tuple[factory.Issued, factory.Issued]:
    root = factory.issue(factory.name("Test App Attestation Root"))
    return root, factory.issue(
        factory.name("Test App Attestation CA 1"), issuer=root, path_length=0
    )


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({}, None),
        ({"counter": 1}, Reason.COUNTER_INVALID),
        ({"aaguid": b"appattest" + bytes(7)}, Reason.ENVIRONMENT_MISMATCH),
        ({"credential_id": b"\x00" * 32}, Reason.KEY_ID_MISMATCH),
        ({"app_id": "TEAM123456.com.example.other"}, Reason.APP_ID_MISMATCH),
        ({"cose_key": "other"}, Reason.KEY_MISMATCH),
    ],
)
def test_each_apple_step_on_a_test_pki(apple_pki, changes: dict[str, Any], reason) -> None:  # type: ignore[no-untyped-def]
    root, intermediate = apple_pki
    key = ec.generate_private_key(ec.SECP256R1())
    options: dict[str, Any] = {"app_id": APP.app_id, "client_data_hash": CLIENT_HASH, **changes}
    if options.get("cose_key") == "other":
        options["cose_key"] = factory.cose_p256(
            ec.generate_private_key(ec.SECP256R1()).public_key()
        )
    attestation, key_id = factory.app_attest_object(root, intermediate, key=key, **options)
    verifier = AppAttestVerifier(
        trust=TrustStore((TrustAnchor.from_spki(root.spki, label="test"),)),
        app=APP,
        environment=AppleEnvironment.DEVELOPMENT,
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def run():  # type: ignore[no-untyped-def]
        return verifier.verify(
            AppAttestEvidence(attestation_object=attestation, key_id=key_id),
            expected_challenge=CLIENT_HASH,
            expected_public_key=spki,
            now=factory.NOW,
        )

    if reason is None:
        assert run().counter == 0
    else:
        _refused(reason, run)
