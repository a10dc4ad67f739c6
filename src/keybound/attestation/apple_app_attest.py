"""Apple App Attest (format ``apple-appattest``): attestations and assertions.

Reference: Apple Developer Documentation, "Validating apps that connect to your server"
(https://developer.apple.com/documentation/devicecheck/validating-apps-that-connect-to-your-server),
sections "Verify the attestation" (steps 1-9, cited as [A1]..[A9]) and "Verify the
assertion" (steps 1-6, cited as [S1]..[S6]).

The attestation object is CBOR: ``{"fmt": "apple-appattest", "attStmt": {"x5c": [credCert,
intermediate], "receipt": bytes}, "authData": bytes}``. The caller's ``expected_challenge``
is the ``clientDataHash`` the app passed to ``attestKey``; keybound's protocol defines the
client data, so the server recomputes the hash from its own transcript and [S6] (the
challenge inside the client data) holds by construction.

On iOS the App Attest key is the device's hardware key: an assertion is a Secure Enclave
signature over SHA-256(authenticatorData || clientDataHash), with a counter that must
strictly increase. :meth:`AppAttestVerifier.verify_assertion` returns the new counter; the
caller stores it atomically (compare-and-set on the previous value), since two assertions
racing on one counter value is exactly the clone signal the counter exists for.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pyasn1.type import namedtype, tag, univ

from keybound.attestation import _cbor
from keybound.attestation import chain as paths
from keybound.attestation._der import decode_strict
from keybound.attestation.authdata import (
    AuthenticatorData,
    cose_key_to_spki,
    parse_authenticator_data,
)
from keybound.attestation.base import (
    AppleEnvironment,
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
from keybound.attestation.trust import TrustStore
from keybound.errors import ConfigurationInvalid

#: credCert extension holding the nonce (SEQUENCE { [1] EXPLICIT OCTET STRING }).
NONCE_OID = "1.2.840.113635.100.8.2"
#: Largest attestation object accepted (real ones, receipt included, are about 6 KiB).
MAX_ATTESTATION_BYTES = 64 * 1024
MAX_ASSERTION_BYTES = 4 * 1024
#: Apple's own credCert extensions (non-critical in practice; tolerated if critical).
_APPLE_EXTENSIONS = (
    "1.2.840.113635.100.8.2",
    "1.2.840.113635.100.8.5",
    "1.2.840.113635.100.8.6",
    "1.2.840.113635.100.8.7",
)


class _NonceAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType(
            "nonce",
            univ.OctetString().subtype(
                explicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, 1)
            ),
        ),
    )


@dataclass(frozen=True, kw_only=True)
class AppleApp:
    """The app allowed to attest: App ID = ``team_id`` + "." + ``bundle_id``."""

    team_id: str
    bundle_id: str

    def __post_init__(self) -> None:
        if not self.team_id or not self.bundle_id or "." in self.team_id:
            raise ConfigurationInvalid("Apple app needs a team id and a bundle id")

    @property
    def app_id(self) -> str:
        return f"{self.team_id}.{self.bundle_id}"

    @property
    def rp_id_hash(self) -> bytes:
        return hashlib.sha256(self.app_id.encode("utf-8")).digest()


@dataclass(frozen=True, kw_only=True)
class AppAttestEvidence:
    """What the app sends: the attestation object and its key identifier."""

    attestation_object: bytes
    key_id: bytes


@dataclass(frozen=True, kw_only=True)
class VerifiedAppAttest(VerifiedAttestation):
    environment: AppleEnvironment
    key_id: bytes
    counter: int
    receipt: bytes  # for Apple's fraud-metric service; not verified here


@dataclass(frozen=True, kw_only=True)
class VerifiedAppAttestAssertion:
    counter: int  # the new counter: store it, atomically, as the next previous_counter
    app_identity: str


class AppAttestVerifier(AttestationVerifier[AppAttestEvidence, VerifiedAppAttest]):
    format = AttestationFormat.APPLE_APP_ATTEST

    def __init__(self, *, trust: TrustStore, app: AppleApp, environment: AppleEnvironment) -> None:
        self._trust = trust
        self._app = app
        self._environment = environment

    def _verify(
        self,
        evidence: AppAttestEvidence,
        *,
        expected_challenge: bytes,
        expected_public_key: bytes,
        now: dt.datetime,
    ) -> VerifiedAppAttest:
        now = utc(now)
        statement, auth_data_raw = _attestation_parts(evidence.attestation_object)
        # [A1] x5c is credCert then the intermediate, valid, chaining to the pinned root.
        path = paths.build_path(statement["x5c"], self._trust, what="x5c")
        paths.check_issuers(path)
        paths.check_validity(path, now)
        paths.check_critical_extensions(path, understood=_APPLE_EXTENSIONS)
        cred_cert = path.leaf
        auth_data = parse_authenticator_data(auth_data_raw)
        # [A2], [A3] nonce = SHA-256(authData || clientDataHash).
        nonce = hashlib.sha256(auth_data.raw + expected_challenge).digest()
        # [A4] credCert's extension 1.2.840.113635.100.8.2 holds exactly that nonce (DER).
        extension = path.extension_value(0, NONCE_OID)
        if extension is None:
            raise fail(Reason.EXTENSION_MISSING, f"credCert has no {NONCE_OID} extension")
        embedded = bytes(
            decode_strict(extension, _NonceAsn1(), what="nonce extension", max_bytes=256)["nonce"]
        )
        if not hmac.compare_digest(embedded, nonce):
            raise fail(Reason.CHALLENGE_MISMATCH, "nonce does not match clientDataHash")
        # [A5] keyId = SHA-256 of credCert's public key (the uncompressed P-256 point).
        point = _p256_point(paths.public_key_of(cred_cert))
        key_id = hashlib.sha256(point).digest()
        if not hmac.compare_digest(key_id, evidence.key_id):
            raise fail(Reason.KEY_ID_MISMATCH, "key identifier does not match credCert")
        # The attested key is the key this device registers.
        attested_key = paths.spki_of(cred_cert)
        if not paths.same_public_key(attested_key, expected_public_key):
            raise fail(Reason.KEY_MISMATCH, "credCert key is not the registered key")
        # [A6] rpIdHash = SHA-256(App ID).
        if not hmac.compare_digest(auth_data.rp_id_hash, self._app.rp_id_hash):
            raise fail(Reason.APP_ID_MISMATCH, "rpIdHash is not this app's App ID")
        # [A7] counter is 0.
        if auth_data.sign_count != 0:
            raise fail(Reason.COUNTER_INVALID, f"attestation counter {auth_data.sign_count}")
        # [A8] aaguid names the configured environment.
        if auth_data.aaguid != self._environment.value:
            raise fail(Reason.ENVIRONMENT_MISMATCH, f"aaguid {auth_data.aaguid!r}")
        # [A9] credentialId is the key identifier.
        if auth_data.credential_id is None or not hmac.compare_digest(
            auth_data.credential_id, key_id
        ):
            raise fail(Reason.KEY_ID_MISMATCH, "credentialId is not the key identifier")
        # (WebAuthn §6.5.1) the credential public key in authData is credCert's key.
        _check_cose_key(auth_data, attested_key)
        return VerifiedAppAttest(
            format=self.format,
            security_level=SecurityLevel.SECURE_ENCLAVE,
            key_origin=KeyOrigin.GENERATED,
            app_identity=self._app.app_id,
            attested_public_key=paths.canonical_spki(attested_key),
            chain=path.ders,
            anchor_key_sha256=path.anchor.key_sha256,
            verified_at=now,
            environment=self._environment,
            key_id=key_id,
            counter=auth_data.sign_count,
            receipt=statement["receipt"],
        )

    def verify_assertion(
        self,
        assertion: bytes,
        *,
        expected_client_data_hash: bytes,
        expected_public_key: bytes,
        previous_counter: int,
    ) -> VerifiedAppAttestAssertion:
        """Check an assertion by the attested key; raise AttestationFailed only."""
        return guarded(
            lambda: self._verify_assertion(
                assertion,
                expected_client_data_hash=expected_client_data_hash,
                expected_public_key=expected_public_key,
                previous_counter=previous_counter,
            )
        )

    def _verify_assertion(
        self,
        assertion: bytes,
        *,
        expected_client_data_hash: bytes,
        expected_public_key: bytes,
        previous_counter: int,
    ) -> VerifiedAppAttestAssertion:
        document = _cbor.decode(assertion, what="assertion", max_bytes=MAX_ASSERTION_BYTES)
        if not isinstance(document, dict) or set(document) != {"signature", "authenticatorData"}:
            raise fail(Reason.MALFORMED, "assertion is not {signature, authenticatorData}")
        signature, raw = document["signature"], document["authenticatorData"]
        if not isinstance(signature, bytes) or not isinstance(raw, bytes):
            raise fail(Reason.MALFORMED, "assertion fields must be byte strings")
        auth_data = parse_authenticator_data(raw)  # tolerates Apple's AT-without-data quirk
        # [S1], [S2] nonce = SHA-256(authenticatorData || clientDataHash).
        nonce = hashlib.sha256(auth_data.raw + expected_client_data_hash).digest()
        # [S3] the stored (attested) key signed the nonce: ECDSA P-256 with SHA-256.
        key = _load_p256(expected_public_key)
        try:
            key.verify(signature, nonce, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError) as exc:
            raise fail(Reason.SIGNATURE_INVALID, "assertion signature does not verify") from exc
        # [S4] rpIdHash = SHA-256(App ID).
        if not hmac.compare_digest(auth_data.rp_id_hash, self._app.rp_id_hash):
            raise fail(Reason.APP_ID_MISMATCH, "rpIdHash is not this app's App ID")
        # [S5] the counter went up (an equal or lower one is a replay or a cloned key).
        if auth_data.sign_count <= previous_counter:
            raise fail(
                Reason.COUNTER_NOT_INCREASING,
                f"counter {auth_data.sign_count} <= stored {previous_counter}",
            )
        # [S6] holds by construction: the caller hashed its own client data (module docs).
        return VerifiedAppAttestAssertion(
            counter=auth_data.sign_count, app_identity=self._app.app_id
        )


def _attestation_parts(attestation_object: object) -> tuple[dict[str, Any], bytes]:
    document = _cbor.decode(
        attestation_object, what="attestation object", max_bytes=MAX_ATTESTATION_BYTES
    )
    if not isinstance(document, dict) or set(document) != {"fmt", "attStmt", "authData"}:
        raise fail(Reason.MALFORMED, "attestation object is not {fmt, attStmt, authData}")
    if document["fmt"] != AttestationFormat.APPLE_APP_ATTEST.value:
        raise fail(Reason.MALFORMED, f"fmt is {document['fmt']!r}, not apple-appattest")
    statement, auth_data = document["attStmt"], document["authData"]
    if not isinstance(statement, dict) or set(statement) != {"x5c", "receipt"}:
        raise fail(Reason.MALFORMED, "attStmt is not {x5c, receipt}")
    if not isinstance(statement["receipt"], bytes) or not isinstance(auth_data, bytes):
        raise fail(Reason.MALFORMED, "receipt and authData must be byte strings")
    return statement, auth_data


def _p256_point(key: object) -> bytes:
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise fail(Reason.UNSUPPORTED_ALGORITHM, "credCert key is not EC P-256")
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _load_p256(spki: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_der_public_key(spki)
    except (ValueError, TypeError) as exc:
        raise fail(Reason.MALFORMED, "stored public key does not parse") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise fail(Reason.UNSUPPORTED_ALGORITHM, "stored key is not EC P-256")
    return key


def _check_cose_key(auth_data: AuthenticatorData, attested_key: bytes) -> None:
    if auth_data.credential_public_key is None:
        raise fail(Reason.MALFORMED, "authenticator data has no credential public key")
    if not paths.same_public_key(cose_key_to_spki(auth_data.credential_public_key), attested_key):
        raise fail(Reason.KEY_MISMATCH, "authData credential key is not credCert's key")
