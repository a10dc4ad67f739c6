"""TPM 2.0 key certification (format ``tpm``): TPM2_Certify by an attestation key (AK).

References: TPM 2.0 Library Part 3 §18.2 "TPM2_Certify" [P3], Part 2 structures [P2],
W3C WebAuthn Level 3 §8.3 "TPM Attestation Statement Format" [W8.3] and its certificate
requirements §8.3.1 [W8.3.1], TCG "EK Credential Profile" 2.x §3.2 [EK], TCG "TPM 2.0 Keys
for Device Identity and Attestation" [IDevID].

The evidence is what TPM2_Certify returns: ``certifyInfo`` (a TPMS_ATTEST), its signature
by the AK, and the certified key's TPMT_PUBLIC. The AK is trusted either through its
certificate chain to a configured CA (``ak_certificate_chain``: the WebAuthn / privacy-CA
model) or because the server proved it by credential activation against a verified EK
certificate (``activated_ak``, built server-side after :func:`make_credential`'s secret came
back; never taken from a request). The WebAuthn ``tpm`` attestation statement is the same
structure and goes through the same checklist (:meth:`TpmVerifier.verify_webauthn`).

Certificates as manufacturers issue them (EK and AK), decided here and tested:

- an empty subject is accepted (the TPM's identity is in the subjectAltName [EK 3.2.9]),
  whether or not the SAN is marked critical as RFC 5280 would require;
- the SAN's directoryName may hold the TCG attributes in one RDN each or in one multi-valued
  RDN (both ship in Windows Hello AIK certificates);
- an AK certificate must name the TPM manufacturer in its SAN and carry the
  tcg-kp-AIKCertificate EKU [W8.3.1]; an EK certificate without SAN or EKU is accepted with
  the identity reported as unknown (older EK certificates lack them);
- critical extensions: the standard set plus subjectDirectoryAttributes (TPM security
  assertions) and TCG-arc (2.23.133) extensions; any other critical extension refuses;
- a malformed non-critical extension nobody reads is ignored (see ``certext``); a
  non-positive serial number makes a certificate unusable in a path (``_der``);
- EK certificates' *expiry* is ignored by default (they are issued once, at manufacture,
  and cannot be renewed: the same reasoning as Android factory chains); not-yet-valid
  refuses. AK certificates are fully date-checked;
- SHA-1 (``RS1``) certInfo signatures are accepted only where the policy allows it
  (:meth:`TpmPolicy.webauthn`), because Windows TPMs still produce them.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from keybound.attestation import _cbor, certext
from keybound.attestation import chain as paths
from keybound.attestation._der import load_certificate, load_chain
from keybound.attestation.authdata import cose_key_to_spki, parse_authenticator_data
from keybound.attestation.base import (
    AttestationFormat,
    AttestationVerifier,
    KeyOrigin,
    Reason,
    SecurityLevel,
    VerifiedAttestation,
    fail,
    guarded,
    utc,
)
from keybound.attestation.tpm_structures import (
    HASHES,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_CERTIFY,
    ClockInfo,
    ObjectAttributes,
    Public,
    Signature,
    TpmAlg,
    digest,
    parse_attest,
    parse_public,
    parse_signature,
)
from keybound.attestation.trust import TrustStore

TPM_MANUFACTURER_OID = "2.23.133.2.1"
TPM_MODEL_OID = "2.23.133.2.2"
TPM_VERSION_OID = "2.23.133.2.3"
AIK_CERTIFICATE_EKU = "2.23.133.8.3"
FIDO_AAGUID_OID = "1.3.6.1.4.1.45724.1.1.4"
SUBJECT_ALT_NAME = "2.5.29.17"
EXTENDED_KEY_USAGE = "2.5.29.37"
#: Critical extensions TPM certificates may carry beyond the standard set.
TPM_CRITICAL_EXTENSIONS = ("2.5.29.9",)  # subjectDirectoryAttributes (TPM security assertions)
MAX_WEBAUTHN_OBJECT_BYTES = 32 * 1024

#: The attributes that make a key TPM-resident and TPM-born [P2 8.3.3].
RESIDENT = (
    ObjectAttributes.FIXED_TPM
    | ObjectAttributes.FIXED_PARENT
    | ObjectAttributes.SENSITIVE_DATA_ORIGIN
)

#: COSE algorithms of WebAuthn ``tpm`` statements -> (TPM scheme, TPM hash).
COSE_ALGORITHMS: Mapping[int, tuple[int, int]] = {
    -65535: (TpmAlg.RSASSA, TpmAlg.SHA1),
    -257: (TpmAlg.RSASSA, TpmAlg.SHA256),
    -258: (TpmAlg.RSASSA, TpmAlg.SHA384),
    -259: (TpmAlg.RSASSA, TpmAlg.SHA512),
    -37: (TpmAlg.RSAPSS, TpmAlg.SHA256),
    -38: (TpmAlg.RSAPSS, TpmAlg.SHA384),
    -39: (TpmAlg.RSAPSS, TpmAlg.SHA512),
    -7: (TpmAlg.ECDSA, TpmAlg.SHA256),
    -35: (TpmAlg.ECDSA, TpmAlg.SHA384),
    -36: (TpmAlg.ECDSA, TpmAlg.SHA512),
}


class AkTrust(StrEnum):
    CERTIFICATE = "CERTIFICATE"  # AK certificate chain to a configured CA
    ACTIVATION = "ACTIVATION"  # proven by credential activation against a verified EK


@dataclass(frozen=True, kw_only=True)
class TpmIdentity:
    """What a TPM certificate's subjectAltName says about the TPM [EK 3.2.9]."""

    manufacturer_id: str | None  # "id:494E5443"
    manufacturer: str | None  # the vendor code it spells, e.g. "INTC"
    model: str | None
    version: str | None  # firmware version, "id:..." as in the certificate

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, str]) -> TpmIdentity:
        manufacturer_id = attributes.get(TPM_MANUFACTURER_OID)
        return cls(
            manufacturer_id=manufacturer_id,
            manufacturer=_vendor(manufacturer_id),
            model=attributes.get(TPM_MODEL_OID),
            version=attributes.get(TPM_VERSION_OID),
        )


@dataclass(frozen=True, kw_only=True)
class TpmPolicy:
    #: The certified key is fixedTPM, fixedParent and sensitiveDataOrigin: generated by this
    #: TPM and never exportable. Turning it off is for structure checks only.
    require_resident_key: bool = True
    #: The certified key must be sign-only (decrypt clear), as keybound's hardware key is.
    require_sign_only: bool = True
    #: Accept SHA-1 certInfo signatures (WebAuthn RS1).
    allow_sha1: bool = False

    @classmethod
    def webauthn(cls) -> TpmPolicy:
        """WebAuthn §8.3: Windows Hello keys are sign+decrypt and statements may be RS1."""
        return cls(require_sign_only=False, allow_sha1=True)


@dataclass(frozen=True, kw_only=True)
class VerifiedEkCertificate:
    public_key: bytes  # SubjectPublicKeyInfo of the EK
    identity: TpmIdentity
    chain: tuple[bytes, ...]
    anchor_key_sha256: str


@dataclass(frozen=True, kw_only=True)
class ActivatedAk:
    """An AK the server proved by credential activation: its TPMT_PUBLIC (whose Name went
    into make_credential) and the EK certificate it was bound to. Server state only."""

    public_area: bytes
    ek: VerifiedEkCertificate


@dataclass(frozen=True, kw_only=True)
class TpmEvidence:
    """TPM2_Certify's output plus how to trust the AK (exactly one of the last two)."""

    certify_info: bytes  # TPMS_ATTEST
    signature: bytes | Signature  # TPMT_SIGNATURE as marshalled, or already parsed
    public_area: bytes  # TPMT_PUBLIC of the certified key
    ak_certificate_chain: tuple[bytes, ...] = ()
    activated_ak: ActivatedAk | None = None


@dataclass(frozen=True, kw_only=True)
class VerifiedTpm(VerifiedAttestation):
    tpm: TpmIdentity
    ak_trust: AkTrust
    key_attributes: ObjectAttributes
    firmware_version: int  # certInfo.firmwareVersion (obfuscated outside the EK hierarchy)
    clock_info: ClockInfo
    qualified_signer: bytes


class TpmVerifier(AttestationVerifier[TpmEvidence, VerifiedTpm]):
    format = AttestationFormat.TPM

    def __init__(self, *, trust: TrustStore, policy: TpmPolicy | None = None) -> None:
        self._trust = trust
        self._policy = policy or TpmPolicy()

    def _verify(
        self,
        evidence: TpmEvidence,
        *,
        expected_challenge: bytes,
        expected_public_key: bytes,
        now: dt.datetime,
    ) -> VerifiedTpm:
        signature = evidence.signature
        if not isinstance(signature, Signature):
            signature = parse_signature(signature)
        return self._checklist(
            evidence,
            signature,
            expected_challenge=expected_challenge,
            expected_public_key=expected_public_key,
            now=utc(now),
            expected_aaguid=None,
        )

    def verify_webauthn(
        self, attestation_object: bytes, *, client_data_hash: bytes, now: dt.datetime
    ) -> VerifiedTpm:
        """Verify a WebAuthn ``tpm`` attestation object [W8.3] (CBOR ``{fmt, attStmt,
        authData}``): extraData must be H_alg(authData || clientDataHash) and the certified
        key the credential public key in authData."""
        return guarded(
            lambda: self._verify_webauthn(
                attestation_object, client_data_hash=client_data_hash, now=utc(now)
            )
        )

    def _verify_webauthn(
        self, attestation_object: bytes, *, client_data_hash: bytes, now: dt.datetime
    ) -> VerifiedTpm:
        statement, auth_data_raw = _webauthn_parts(attestation_object)
        scheme_hash = COSE_ALGORITHMS.get(statement["alg"])
        if scheme_hash is None:
            raise fail(Reason.UNSUPPORTED_ALGORITHM, f"attStmt alg {statement['alg']}")
        auth_data = parse_authenticator_data(auth_data_raw)
        if auth_data.credential_public_key is None:
            raise fail(Reason.MALFORMED, "authData has no attested credential data")
        signature = Signature(
            scheme=scheme_hash[0], hash_alg=scheme_hash[1], value=statement["sig"]
        )
        evidence = TpmEvidence(
            certify_info=statement["certInfo"],
            signature=signature,
            public_area=statement["pubArea"],
            ak_certificate_chain=tuple(statement["x5c"]),
        )
        # [W8.3] "Verify that extraData is set to the hash of attToBeSigned using the hash
        # algorithm employed in alg"; the certified key is the credential public key.
        expected_extra = digest(scheme_hash[1], auth_data.raw + client_data_hash)
        expected_key = cose_key_to_spki(auth_data.credential_public_key)
        return self._checklist(
            evidence,
            signature,
            expected_challenge=expected_extra,
            expected_public_key=expected_key,
            now=now,
            expected_aaguid=auth_data.aaguid,
        )

    def _checklist(
        self,
        evidence: TpmEvidence,
        signature: Signature,
        *,
        expected_challenge: bytes,
        expected_public_key: bytes,
        now: dt.datetime,
        expected_aaguid: bytes | None,
    ) -> VerifiedTpm:
        policy = self._policy
        if bool(evidence.ak_certificate_chain) == (evidence.activated_ak is not None):
            raise fail(Reason.MALFORMED, "give either an AK certificate chain or an activated AK")
        attest = parse_attest(evidence.certify_info)
        certified = parse_public(evidence.public_area, what="pubArea")
        # [P2 10.12.12] magic: the TPM produced this structure itself.
        if attest.magic != TPM_GENERATED_VALUE:
            raise fail(Reason.TPM_NOT_GENERATED, f"magic 0x{attest.magic:08x}")
        # [P2 10.12.12] type: a TPM2_Certify result.
        if attest.type != TPM_ST_ATTEST_CERTIFY:
            raise fail(Reason.TPM_WRONG_TYPE, f"type 0x{attest.type:04x}")
        # [P3 18.2] qualifyingData (extraData) is this ceremony's challenge.
        if not hmac.compare_digest(attest.extra_data, expected_challenge):
            raise fail(Reason.CHALLENGE_MISMATCH, "extraData differs from the challenge")
        # [P3 18.2], [W8.3] the certified Name is nameAlg || H(pubArea) of the key sent.
        if not hmac.compare_digest(attest.certified_name, certified.name()):
            raise fail(Reason.TPM_NAME_MISMATCH, "certified name is not pubArea's name")
        # [P2 8.3.3] fixedTPM, fixedParent, sensitiveDataOrigin: born in and bound to this
        # TPM; a signing key, and (keybound policy) sign-only.
        _check_certified_attributes(
            certified.attributes,
            resident=policy.require_resident_key,
            sign_only=policy.require_sign_only,
        )
        # The certified key is the key being registered.
        if not paths.same_public_key(certified.spki(), expected_public_key):
            raise fail(Reason.KEY_MISMATCH, "pubArea key is not the registered key")
        # The AK's key: from its certificate, or from the AK the server activated.
        activated = evidence.activated_ak
        if activated is not None:
            ak_public = parse_public(activated.public_area, what="AK TPMT_PUBLIC")
            check_ak_public(ak_public)  # [IDevID] a restricted signing key, TPM-resident
            ak_key: Any = ak_public.public_key()
        else:
            ak_cert = load_certificate(evidence.ak_certificate_chain[0], what="AK certificate")
            ak_key = paths.public_key_of(ak_cert)
        # [P3 18.2], [W8.3] the AK signed certInfo with the statement's scheme and hash.
        _check_signature(ak_key, signature, evidence.certify_info, allow_sha1=policy.allow_sha1)
        if activated is not None:
            identity, chain = activated.ek.identity, activated.ek.chain
            anchor, trust_kind = activated.ek.anchor_key_sha256, AkTrust.ACTIVATION
        else:
            # [W8.3.1] the AK certificate chains to a configured CA and fits the AIK profile.
            path = paths.build_path(evidence.ak_certificate_chain, self._trust, what="x5c")
            paths.check_issuers(path)
            paths.check_validity(path, now)
            paths.check_critical_extensions(path, understood=_understood_critical(path))
            identity = _check_aik_certificate(path, expected_aaguid)
            chain, anchor, trust_kind = path.ders, path.anchor.key_sha256, AkTrust.CERTIFICATE
        return VerifiedTpm(
            format=self.format,
            security_level=SecurityLevel.TPM,
            key_origin=KeyOrigin.GENERATED,
            app_identity=None,
            attested_public_key=paths.canonical_spki(certified.spki()),
            chain=chain,
            anchor_key_sha256=anchor,
            verified_at=now,
            tpm=identity,
            ak_trust=trust_kind,
            key_attributes=certified.attributes,
            firmware_version=attest.firmware_version,
            clock_info=attest.clock_info,
            qualified_signer=attest.qualified_signer,
        )


def verify_ek_certificate(
    certificate: bytes,
    *,
    intermediates: tuple[bytes, ...] = (),
    trust: TrustStore,
    now: dt.datetime,
    ignore_expiry: bool = True,
) -> VerifiedEkCertificate:
    """Check an EK certificate (and its CA chain) against the manufacturer CAs in ``trust``
    [EK 3.2]; see the module docs for what is tolerated. Raises AttestationFailed only."""
    return guarded(lambda: _verify_ek(certificate, intermediates, trust, utc(now), ignore_expiry))


def _verify_ek(
    certificate: bytes,
    intermediates: tuple[bytes, ...],
    trust: TrustStore,
    now: dt.datetime,
    ignore_expiry: bool,
) -> VerifiedEkCertificate:
    chain = load_chain([certificate, *intermediates], what="EK chain")
    path = paths.build_path(chain, trust, what="EK chain")
    paths.check_issuers(path)
    paths.check_validity(path, now, ignore_expiry=ignore_expiry)
    paths.check_critical_extensions(path, understood=_understood_critical(path))
    constraints = certext.basic_constraints(path.extension(0, paths.BASIC_CONSTRAINTS))
    if constraints is not None and constraints.ca:
        raise fail(Reason.AK_CERTIFICATE_INVALID, "an EK certificate must not be a CA")
    identity = TpmIdentity.from_attributes(
        certext.directory_attributes(path.extension(0, SUBJECT_ALT_NAME))
    )
    return VerifiedEkCertificate(
        public_key=paths.spki_of(path.leaf),
        identity=identity,
        chain=path.ders,
        anchor_key_sha256=path.anchor.key_sha256,
    )


# ---------------------------------------------------------------------------- the steps


def _check_certified_attributes(
    attributes: ObjectAttributes, *, resident: bool, sign_only: bool
) -> None:
    if resident and attributes & RESIDENT != RESIDENT:
        raise fail(Reason.TPM_KEY_ATTRIBUTES, "not fixedTPM, fixedParent, sensitiveDataOrigin")
    if not attributes & ObjectAttributes.SIGN_ENCRYPT:
        raise fail(Reason.TPM_KEY_ATTRIBUTES, "the certified key cannot sign")
    if sign_only and attributes & ObjectAttributes.DECRYPT:
        raise fail(Reason.TPM_KEY_ATTRIBUTES, "the certified key can also decrypt")


def check_ak_public(public: Public) -> None:
    """An AK is a restricted signing key, resident in its TPM [IDevID 3.8 / P2 8.3.3.1]."""
    attributes = public.attributes
    if attributes & RESIDENT != RESIDENT:
        raise fail(Reason.TPM_KEY_ATTRIBUTES, "AK is not fixedTPM, fixedParent, sensitive")
    wanted = ObjectAttributes.RESTRICTED | ObjectAttributes.SIGN_ENCRYPT
    if attributes & wanted != wanted or attributes & ObjectAttributes.DECRYPT:
        raise fail(Reason.TPM_KEY_ATTRIBUTES, "AK is not a restricted signing key")


def _check_signature(key: Any, signature: Signature, data: bytes, *, allow_sha1: bool) -> None:
    hash_type = HASHES.get(signature.hash_alg)
    if hash_type is None or (hash_type is hashes.SHA1 and not allow_sha1):
        raise fail(Reason.UNSUPPORTED_ALGORITHM, f"signature hash 0x{signature.hash_alg:04x}")
    paths.check_signing_key(key)
    try:
        if signature.scheme in (TpmAlg.RSASSA, TpmAlg.RSAPSS):
            if not isinstance(key, rsa.RSAPublicKey):
                raise fail(Reason.SIGNATURE_INVALID, "RSA signature but the AK is not RSA")
            scheme: padding.AsymmetricPadding = padding.PKCS1v15()
            if signature.scheme == TpmAlg.RSAPSS:
                # TPMs sign PSS with a salt as long as the digest; AUTO accepts what they use.
                scheme = padding.PSS(mgf=padding.MGF1(hash_type()), salt_length=padding.PSS.AUTO)
            key.verify(signature.value, data, scheme, hash_type())
        elif signature.scheme == TpmAlg.ECDSA:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise fail(Reason.SIGNATURE_INVALID, "ECDSA signature but the AK is not EC")
            key.verify(signature.value, data, ec.ECDSA(hash_type()))
        else:
            raise fail(Reason.UNSUPPORTED_ALGORITHM, f"scheme 0x{signature.scheme:04x}")
    except InvalidSignature as exc:
        raise fail(Reason.SIGNATURE_INVALID, "the AK's signature over certInfo fails") from exc
    except ValueError as exc:  # e.g. an ECDSA signature that is not DER
        raise fail(Reason.SIGNATURE_INVALID, "the AK's signature does not parse") from exc


def _check_aik_certificate(path: paths.CertPath, expected_aaguid: bytes | None) -> TpmIdentity:
    """[W8.3.1] TPM attestation statement certificate requirements, on the AK certificate."""
    certificate = path.leaf
    if certificate.version is not x509.Version.v3:
        raise fail(Reason.AK_CERTIFICATE_INVALID, "AK certificate is not version 3")
    if len(certificate.subject) != 0:
        raise fail(Reason.AK_CERTIFICATE_INVALID, "AK certificate subject is not empty")
    identity = TpmIdentity.from_attributes(
        certext.directory_attributes(path.extension(0, SUBJECT_ALT_NAME))
    )
    if identity.manufacturer_id is None or identity.model is None or identity.version is None:
        raise fail(Reason.AK_CERTIFICATE_INVALID, "AK certificate SAN lacks the TPM identity")
    usages = certext.extended_key_usage(path.extension(0, EXTENDED_KEY_USAGE)) or frozenset()
    if AIK_CERTIFICATE_EKU not in usages:
        raise fail(Reason.AK_CERTIFICATE_INVALID, "AK certificate lacks tcg-kp-AIKCertificate")
    constraints = certext.basic_constraints(path.extension(0, paths.BASIC_CONSTRAINTS))
    if constraints is not None and constraints.ca:
        raise fail(Reason.AK_CERTIFICATE_INVALID, "AK certificate is a CA")
    # [W8.3.1] id-fido-gen-ce-aaguid, when present, names the authenticator model.
    aaguid = path.extension_value(0, FIDO_AAGUID_OID)
    if aaguid is not None and expected_aaguid is not None:
        inner = certext.decode_lenient(aaguid, None, what="aaguid extension")
        if not hmac.compare_digest(bytes(inner), expected_aaguid):
            raise fail(Reason.AAGUID_MISMATCH, "AK certificate aaguid differs from authData")
    return identity


def _understood_critical(path: paths.CertPath) -> set[str]:
    tcg = {
        oid for extensions in path.extensions for oid in extensions if oid.startswith("2.23.133.")
    }
    return tcg | set(TPM_CRITICAL_EXTENSIONS)


def _webauthn_parts(attestation_object: object) -> tuple[dict[str, Any], bytes]:
    document = _cbor.decode(
        attestation_object, what="attestation object", max_bytes=MAX_WEBAUTHN_OBJECT_BYTES
    )
    if not isinstance(document, dict) or not {"fmt", "attStmt", "authData"} <= set(document):
        raise fail(Reason.MALFORMED, "attestation object is not {fmt, attStmt, authData}")
    if document["fmt"] != "tpm":
        raise fail(Reason.MALFORMED, f"fmt is {document['fmt']!r}, not tpm")
    statement, auth_data = document["attStmt"], document["authData"]
    if not isinstance(statement, dict) or not isinstance(auth_data, bytes):
        raise fail(Reason.MALFORMED, "attStmt must be a map and authData bytes")
    if "ecdaaKeyId" in statement:
        raise fail(Reason.UNSUPPORTED_ALGORITHM, "ECDAA attestation is not supported")
    required = {"alg": int, "sig": bytes, "certInfo": bytes, "pubArea": bytes, "x5c": list}
    for name, kind in required.items():
        if not isinstance(statement.get(name), kind) or isinstance(statement.get(name), bool):
            raise fail(Reason.MALFORMED, f"attStmt {name} missing or not {kind.__name__}")
    # [W8.3] ver "2.0"; tolerated when absent (python-fido2's Windows Hello sample has none).
    if statement.get("ver", "2.0") != "2.0":
        raise fail(Reason.MALFORMED, f"attStmt ver {statement.get('ver')!r}")
    load_chain(statement["x5c"], what="x5c")
    return statement, auth_data


def _vendor(manufacturer_id: str | None) -> str | None:
    """ "id:494E5443" -> "INTC" when the four bytes are printable ASCII."""
    if manufacturer_id is None or not manufacturer_id.lower().startswith("id:"):
        return None
    try:
        raw = bytes.fromhex(manufacturer_id[3:])
    except ValueError:
        return None
    text = raw.rstrip(b"\x00 ").decode("ascii", errors="replace")
    return text if text.isprintable() and text.isascii() and text else None
