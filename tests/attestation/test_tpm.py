"""TPM 2.0 certification: the WebAuthn ``tpm`` vectors, derived negatives on them, and a
software-built TPMS_ATTEST / AK certificate for each check of keybound's own TPM flow."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keybound.attestation import (
    ActivatedAk,
    AkTrust,
    AttestationFailed,
    AttestationFormat,
    Reason,
    SecurityLevel,
    TpmEvidence,
    TpmPolicy,
    TpmVerifier,
    TrustStore,
    verify_ek_certificate,
)
from keybound.attestation.conformance import load_webauthn_sample
from keybound.attestation.tpm_structures import parse_signature
from keybound.attestation.trust import TrustAnchor
from tests.attestation import factory
from tests.attestation.vectors import VECTORS, at, entries

MICROSOFT = TrustStore.builtin(AttestationFormat.TPM)
WEBAUTHN = TpmPolicy.webauthn()
TRUSTED = [e for e in entries("tpm") if e["expected"]["result"] == "valid"]


def _load(entry: dict[str, Any]) -> tuple[bytes, bytes, dt.datetime]:
    attestation, client_hash = load_webauthn_sample([VECTORS / f for f in entry["files"]])
    return attestation, client_hash, at(entry["verify_at"])


def _refused(reason: Reason, call, *args: Any, **kwargs: Any) -> AttestationFailed:  # type: ignore[no-untyped-def]
    with pytest.raises(AttestationFailed) as caught:
        call(*args, **kwargs)
    assert caught.value.reason is reason, caught.value.detail
    return caught.value


@pytest.fixture(params=TRUSTED, ids=[e["id"] for e in TRUSTED])
def sample(request: pytest.FixtureRequest) -> tuple[bytes, bytes, dt.datetime]:
    return _load(request.param)


def _replace_statement(attestation: bytes, **changes: Any) -> bytes:
    document = cbor2.loads(attestation)
    document["attStmt"].update(changes)
    return cbor2.dumps(document)


# ------------------------------------------------------------------------ the vectors


def test_windows_hello_vectors_verify(sample: tuple[bytes, bytes, dt.datetime]) -> None:
    attestation, client_hash, now = sample
    result = TpmVerifier(trust=MICROSOFT, policy=WEBAUTHN).verify_webauthn(
        attestation, client_data_hash=client_hash, now=now
    )
    assert result.security_level is SecurityLevel.TPM
    assert result.ak_trust is AkTrust.CERTIFICATE
    assert result.tpm.manufacturer in {"INTC", "NTC", "STM"}
    assert result.tpm.model and result.tpm.version


def test_wrong_client_data_hash(sample: tuple[bytes, bytes, dt.datetime]) -> None:
    attestation, _, now = sample
    verifier = TpmVerifier(trust=MICROSOFT, policy=WEBAUTHN)
    _refused(
        Reason.CHALLENGE_MISMATCH,
        verifier.verify_webauthn,
        attestation,
        client_data_hash=hashlib.sha256(b"other").digest(),
        now=now,
    )


def test_flipped_bytes(sample: tuple[bytes, bytes, dt.datetime]) -> None:
    attestation, client_hash, now = sample
    statement = cbor2.loads(attestation)["attStmt"]
    verifier = TpmVerifier(trust=MICROSOFT, policy=WEBAUTHN)
    cert_info = bytearray(statement["certInfo"])
    cert_info[-40] ^= 1  # inside the certified name: signed, and no longer pubArea's name
    _refused(
        Reason.TPM_NAME_MISMATCH,
        verifier.verify_webauthn,
        _replace_statement(attestation, certInfo=bytes(cert_info)),
        client_data_hash=client_hash,
        now=now,
    )
    clock = bytearray(statement["certInfo"])
    offset = 6 + 2 + int.from_bytes(clock[6:8], "big")  # magic, type, qualifiedSigner
    offset += 2 + int.from_bytes(clock[offset : offset + 2], "big")  # extraData
    clock[offset + 3] ^= 1  # clockInfo: read by nobody, covered by the signature
    _refused(
        Reason.SIGNATURE_INVALID,
        verifier.verify_webauthn,
        _replace_statement(attestation, certInfo=bytes(clock)),
        client_data_hash=client_hash,
        now=now,
    )
    public = bytearray(statement["pubArea"])
    public[-5] ^= 1  # the key itself
    _refused(
        Reason.TPM_NAME_MISMATCH,
        verifier.verify_webauthn,
        _replace_statement(attestation, pubArea=bytes(public)),
        client_data_hash=client_hash,
        now=now,
    )


def test_microsoft_root_removed(sample: tuple[bytes, bytes, dt.datetime]) -> None:
    attestation, client_hash, now = sample
    verifier = TpmVerifier(trust=TrustStore(), policy=WEBAUTHN)
    _refused(
        Reason.CHAIN_UNTRUSTED,
        verifier.verify_webauthn,
        attestation,
        client_data_hash=client_hash,
        now=now,
    )


def test_expired_ak_chain() -> None:
    attestation, client_hash, _ = _load(
        next(e for e in TRUSTED if e["id"] == "pyw-dell_xps_13_nuvoton")
    )
    _refused(
        Reason.CHAIN_EXPIRED,
        TpmVerifier(trust=MICROSOFT, policy=WEBAUTHN).verify_webauthn,
        attestation,
        client_data_hash=client_hash,
        now=at("2025-03-22T00:00:00Z"),
    )


def test_keybound_policy_refuses_sha1_and_sign_decrypt_keys() -> None:
    attestation, client_hash, now = _load(
        next(e for e in TRUSTED if e["id"] == "pyw-dell_xps_13_nuvoton")
    )
    strict = TpmVerifier(trust=MICROSOFT)  # TpmPolicy(): sign-only, no SHA-1
    _refused(
        Reason.TPM_KEY_ATTRIBUTES,
        strict.verify_webauthn,
        attestation,
        client_data_hash=client_hash,
        now=now,
    )
    no_sha1 = TpmVerifier(trust=MICROSOFT, policy=TpmPolicy(require_sign_only=False))
    _refused(
        Reason.UNSUPPORTED_ALGORITHM,
        no_sha1.verify_webauthn,
        attestation,
        client_data_hash=client_hash,
        now=now,
    )


def test_statement_shape_checks() -> None:
    attestation, client_hash, now = _load(TRUSTED[0])
    verifier = TpmVerifier(trust=MICROSOFT, policy=WEBAUTHN)
    for change, reason in (
        ({"ver": "1.0"}, Reason.MALFORMED),
        ({"alg": -8}, Reason.UNSUPPORTED_ALGORITHM),
        ({"ecdaaKeyId": b"x"}, Reason.UNSUPPORTED_ALGORITHM),
        ({"x5c": []}, Reason.MALFORMED),
        ({"sig": "text"}, Reason.MALFORMED),
    ):
        _refused(
            reason,
            verifier.verify_webauthn,
            _replace_statement(attestation, **change),
            client_data_hash=client_hash,
            now=now,
        )


# ------------------------------------------------------------- software-built evidence


@dataclasses.dataclass
class Tpm:
    """A CA, an AK with its certificate, and a certified key, all in software."""

    ca: factory.Issued
    ak_key: ec.EllipticCurvePrivateKey
    ak: factory.Issued
    key: ec.EllipticCurvePrivateKey

    @property
    def trust(self) -> TrustStore:
        return TrustStore((TrustAnchor.from_spki(self.ca.spki, label="test TPM CA"),))

    def evidence(
        self,
        *,
        challenge: bytes = b"c" * 32,
        attributes: int = factory.TPM_SIGN_ONLY,
        name: bytes | None = None,
        ak: factory.Issued | None = None,
        **attest: Any,
    ) -> TpmEvidence:
        public = factory.tpmt_public_ecc(self.key.public_key(), attributes=attributes)
        info = factory.tpms_attest(
            extra_data=challenge, name=name or factory.tpm_name(public), **attest
        )
        signature = factory.tpmt_signature_ecdsa(self.ak_key.sign(info, ec.ECDSA(hashes.SHA256())))
        return TpmEvidence(
            certify_info=info,
            signature=signature,
            public_area=public,
            ak_certificate_chain=((ak or self.ak).der, self.ca.der),
        )

    @property
    def spki(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@pytest.fixture(scope="module")
def tpm() -> Tpm:
    ca = factory.issue(factory.name("Test TPM AK CA"))
    ak_key = ec.generate_private_key(ec.SECP256R1())
    return Tpm(
        ca=ca,
        ak_key=ak_key,
        ak=factory.tpm_certificate(ca, ak_key),
        key=ec.generate_private_key(ec.SECP256R1()),
    )


def _verify(
    tpm: Tpm,
    evidence: TpmEvidence,
    *,
    challenge: bytes = b"c" * 32,
    key: bytes | None = None,
    trust: TrustStore | None = None,
):  # type: ignore[no-untyped-def]
    return TpmVerifier(trust=trust or tpm.trust).verify(
        evidence, expected_challenge=challenge, expected_public_key=key or tpm.spki, now=factory.NOW
    )


def test_software_built_certification_verifies(tpm: Tpm) -> None:
    result = _verify(tpm, tpm.evidence())
    assert result.tpm.manufacturer == "IBM" and result.tpm.model == "keybound-test"
    assert result.firmware_version == 0x0001000200030004
    assert result.chain == (tpm.ak.der,)


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"challenge": b"d" * 32}, Reason.CHALLENGE_MISMATCH),
        ({"name": b"\x00\x0b" + bytes(32)}, Reason.TPM_NAME_MISMATCH),
        ({"attributes": factory.TPM_SIGN_ONLY | 0x20000}, Reason.TPM_KEY_ATTRIBUTES),  # decrypt
        ({"attributes": factory.TPM_SIGN_ONLY & ~0x2}, Reason.TPM_KEY_ATTRIBUTES),  # !fixedTPM
        ({"attributes": factory.TPM_SIGN_ONLY & ~0x20}, Reason.TPM_KEY_ATTRIBUTES),  # imported
        ({"attributes": factory.TPM_SIGN_ONLY & ~0x40000}, Reason.TPM_KEY_ATTRIBUTES),  # !sign
        ({"magic": 0xFF544348}, Reason.TPM_NOT_GENERATED),
        ({"kind": 0x8018}, Reason.TPM_WRONG_TYPE),  # TPM_ST_ATTEST_QUOTE
    ],
)
def test_certify_checks(tpm: Tpm, changes: dict[str, Any], reason: Reason) -> None:
    _refused(reason, _verify, tpm, tpm.evidence(**changes))


def test_wrong_registered_key(tpm: Tpm) -> None:
    other = factory.issue(factory.name("other")).spki
    _refused(Reason.KEY_MISMATCH, _verify, tpm, tpm.evidence(), key=other)


def test_signature_by_another_key(tpm: Tpm) -> None:
    evidence = tpm.evidence()
    forged = ec.generate_private_key(ec.SECP256R1()).sign(
        evidence.certify_info, ec.ECDSA(hashes.SHA256())
    )
    evidence = dataclasses.replace(evidence, signature=factory.tpmt_signature_ecdsa(forged))
    _refused(Reason.SIGNATURE_INVALID, _verify, tpm, evidence)
    parsed = parse_signature(evidence.signature)  # type: ignore[arg-type]
    assert parsed.hash_alg == 0x000B


@pytest.mark.parametrize(
    "options, reason",
    [
        ({"subject": factory.name("not empty")}, Reason.AK_CERTIFICATE_INVALID),
        ({"eku": None}, Reason.AK_CERTIFICATE_INVALID),
        ({"eku": "2.23.133.8.1"}, Reason.AK_CERTIFICATE_INVALID),  # an EK certificate
        ({"san": factory.tpm_san(manufacturer=None)}, Reason.AK_CERTIFICATE_INVALID),
        ({"ca": True}, Reason.AK_CERTIFICATE_INVALID),
        (
            {
                "extra": [
                    (
                        x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00"),
                        True,
                    )
                ]
            },
            Reason.CRITICAL_EXTENSION_UNKNOWN,
        ),
        ({"not_after": factory.NOW - dt.timedelta(days=1)}, Reason.CHAIN_EXPIRED),
    ],
)
def test_ak_certificate_profile(tpm: Tpm, options: dict[str, Any], reason: Reason) -> None:
    ak = factory.tpm_certificate(tpm.ca, tpm.ak_key, **options)
    _refused(reason, _verify, tpm, tpm.evidence(ak=ak))


def test_tolerated_certificate_shapes(tpm: Tpm) -> None:
    """A multi-valued SAN RDN, a critical subjectDirectoryAttributes, a non-critical
    extension that does not parse at all: all accepted (module docs of tpm/certext)."""
    directory_attributes = x509.UnrecognizedExtension(
        x509.ObjectIdentifier("2.5.29.9"), bytes.fromhex("3000")
    )
    garbage = x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.32"), b"\x30\x03\x01")
    ak = factory.tpm_certificate(
        tpm.ca,
        tpm.ak_key,
        san=factory.tpm_san(multi_valued=True),
        extra=[(directory_attributes, True), (garbage, False)],
    )
    result = _verify(tpm, tpm.evidence(ak=ak))
    assert result.tpm.manufacturer_id == "id:49424D00"


def test_activated_ak_path(tpm: Tpm) -> None:
    """The AK proven by credential activation: no AK certificate, the EK's identity."""
    manufacturer = factory.issue(factory.name("Test EK CA"))
    ek = factory.tpm_certificate(
        manufacturer, eku="2.23.133.8.1", not_after=factory.NOW - dt.timedelta(days=400)
    )
    ek_trust = TrustStore((TrustAnchor.from_spki(manufacturer.spki, label="EK CA"),))
    verified_ek = verify_ek_certificate(ek.der, trust=ek_trust, now=factory.NOW)  # expiry ignored
    with pytest.raises(AttestationFailed) as caught:
        verify_ek_certificate(ek.der, trust=ek_trust, now=factory.NOW, ignore_expiry=False)
    assert caught.value.reason is Reason.CHAIN_EXPIRED
    ak_public = factory.tpmt_public_ecc(tpm.ak_key.public_key(), attributes=factory.TPM_AK)
    evidence = dataclasses.replace(
        tpm.evidence(),
        ak_certificate_chain=(),
        activated_ak=ActivatedAk(public_area=ak_public, ek=verified_ek),
    )
    result = _verify(tpm, evidence, trust=TrustStore())
    assert result.ak_trust is AkTrust.ACTIVATION and result.chain == (ek.der,)
    # an AK that is not a restricted signing key is refused
    loose = factory.tpmt_public_ecc(tpm.ak_key.public_key(), attributes=factory.TPM_SIGN_ONLY)
    loose_evidence = dataclasses.replace(
        evidence, activated_ak=ActivatedAk(public_area=loose, ek=verified_ek)
    )
    _refused(Reason.TPM_KEY_ATTRIBUTES, _verify, tpm, loose_evidence, trust=TrustStore())
    # both or neither AK source is a malformed request
    both = dataclasses.replace(evidence, ak_certificate_chain=(tpm.ak.der,))
    _refused(Reason.MALFORMED, _verify, tpm, both)


def test_ek_certificate_tolerances() -> None:
    manufacturer = factory.issue(factory.name("Test EK CA"))
    trust = TrustStore((TrustAnchor.from_spki(manufacturer.spki, label="EK CA"),))
    bare = factory.issue(
        x509.Name([]), issuer=manufacturer, ca=None, key_cert_sign=False, digital_signature=True
    )  # no SAN, no EKU: identity unknown
    assert (
        verify_ek_certificate(bare.der, trust=trust, now=factory.NOW).identity.manufacturer is None
    )
    early = factory.tpm_certificate(
        manufacturer, eku=None, not_before=factory.NOW + dt.timedelta(days=1)
    )
    _refused(
        Reason.CHAIN_NOT_YET_VALID, verify_ek_certificate, early.der, trust=trust, now=factory.NOW
    )
    ca = factory.tpm_certificate(manufacturer, eku=None, ca=True)
    _refused(
        Reason.AK_CERTIFICATE_INVALID, verify_ek_certificate, ca.der, trust=trust, now=factory.NOW
    )
    _refused(
        Reason.CHAIN_UNTRUSTED, verify_ek_certificate, bare.der, trust=TrustStore(), now=factory.NOW
    )
