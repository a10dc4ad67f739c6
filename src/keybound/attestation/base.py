"""The attestation interface: formats, results, the one failure type, the verifier ABC.

Every verifier (``android-key``, ``apple-appattest``, ``tpm``) takes its format's evidence
and keyword-only ``expected_*`` values, and either returns a frozen ``Verified...`` result or
raises :class:`AttestationFailed` with a stable :class:`Reason`. No other exception leaves a
verifier, whatever the input: :meth:`AttestationVerifier.verify` wraps the format's checklist
and turns anything unexpected into ``Reason.INTERNAL_ERROR`` (the fuzz tests show the
parsers never need that net).

The registry of formats is :data:`keybound.attestation.REGISTRY` (it lives in the package's
``__init__`` so this module can stay free of the formats that subclass it).
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import ClassVar, Generic, TypeVar

from keybound.errors import ErrorCode, KeyboundError


class AttestationFormat(StrEnum):
    """Attestation formats keybound verifies (the registry's keys)."""

    ANDROID_KEY = "android-key"
    APPLE_APP_ATTEST = "apple-appattest"
    TPM = "tpm"


class Reason(StrEnum):
    """Why an attestation was refused. Values are stable (risk attribute ``FAILED_<reason>``)."""

    # Parsing and limits
    MALFORMED = "MALFORMED"  # not the documented structure, not strict DER/CBOR, over a limit
    UNSUPPORTED_ALGORITHM = "UNSUPPORTED_ALGORITHM"  # a key or signature we cannot check
    # Certificate path (RFC 5280 §6.1 as each platform profiles it)
    CHAIN_UNTRUSTED = "CHAIN_UNTRUSTED"  # no pinned anchor's key signed the path
    CHAIN_BROKEN = "CHAIN_BROKEN"  # a certificate is not signed/named by the next one
    CHAIN_EXPIRED = "CHAIN_EXPIRED"
    CHAIN_NOT_YET_VALID = "CHAIN_NOT_YET_VALID"
    ISSUER_NOT_CA = "ISSUER_NOT_CA"  # an issuer without CA=true and keyCertSign
    PATH_LENGTH_EXCEEDED = "PATH_LENGTH_EXCEEDED"
    CRITICAL_EXTENSION_UNKNOWN = "CRITICAL_EXTENSION_UNKNOWN"
    CERT_REVOKED = "CERT_REVOKED"
    CERT_SUSPENDED = "CERT_SUSPENDED"
    REVOCATION_LIST_STALE = "REVOCATION_LIST_STALE"
    # Statement content
    EXTENSION_MISSING = "EXTENSION_MISSING"
    EXTENSION_MISPLACED = "EXTENSION_MISPLACED"
    CHALLENGE_MISMATCH = "CHALLENGE_MISMATCH"
    KEY_MISMATCH = "KEY_MISMATCH"
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    # Android KeyDescription
    SECURITY_LEVEL_SOFTWARE = "SECURITY_LEVEL_SOFTWARE"
    SECURITY_LEVEL_MISMATCH = "SECURITY_LEVEL_MISMATCH"  # attestation level != KeyMint level
    SECURITY_LEVEL_INSUFFICIENT = "SECURITY_LEVEL_INSUFFICIENT"  # below the policy minimum
    ORIGIN_NOT_GENERATED = "ORIGIN_NOT_GENERATED"
    PURPOSE_NOT_SIGN = "PURPOSE_NOT_SIGN"
    APP_ID_MISMATCH = "APP_ID_MISMATCH"
    BOOT_NOT_VERIFIED = "BOOT_NOT_VERIFIED"
    BOOTLOADER_UNLOCKED = "BOOTLOADER_UNLOCKED"
    PATCH_LEVEL_TOO_OLD = "PATCH_LEVEL_TOO_OLD"
    PROVISIONING_NOT_RKP = "PROVISIONING_NOT_RKP"
    # Apple App Attest
    KEY_ID_MISMATCH = "KEY_ID_MISMATCH"
    ENVIRONMENT_MISMATCH = "ENVIRONMENT_MISMATCH"
    COUNTER_INVALID = "COUNTER_INVALID"  # attestation counter != 0
    COUNTER_NOT_INCREASING = "COUNTER_NOT_INCREASING"  # assertion replayed or key cloned
    # TPM
    TPM_NOT_GENERATED = "TPM_NOT_GENERATED"  # TPMS_ATTEST magic is not TPM_GENERATED_VALUE
    TPM_WRONG_TYPE = "TPM_WRONG_TYPE"  # not TPM_ST_ATTEST_CERTIFY
    TPM_KEY_ATTRIBUTES = "TPM_KEY_ATTRIBUTES"  # not fixedTPM/fixedParent/sensitive/sign-only
    TPM_NAME_MISMATCH = "TPM_NAME_MISMATCH"
    AK_CERTIFICATE_INVALID = "AK_CERTIFICATE_INVALID"  # AK certificate profile violated
    AAGUID_MISMATCH = "AAGUID_MISMATCH"
    # The server's ceremony checks around the verifiers (keybound.server.core.attestation)
    FORMAT_MISMATCH = "FORMAT_MISMATCH"  # evidence of a format the device's platform has not
    TPM_NOT_ACTIVATED = "TPM_NOT_ACTIVATED"  # TPM evidence without a credential at start
    TPM_CREDENTIAL_MISMATCH = "TPM_CREDENTIAL_MISMATCH"  # activatedSecret is not the secret
    # The safety net: a bug, never an expected outcome (the fuzz tests assert its absence)
    INTERNAL_ERROR = "INTERNAL_ERROR"


class AttestationFailed(KeyboundError):
    """The attestation was refused; ``reason`` says which check refused it."""

    code = ErrorCode.ATTESTATION_INVALID

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = reason
        super().__init__(detail or reason.value.lower().replace("_", " "), reason=reason.value)


class SecurityLevel(StrEnum):
    """Where the attested key lives."""

    SOFTWARE = "SOFTWARE"
    TRUSTED_ENVIRONMENT = "TRUSTED_ENVIRONMENT"  # Android TEE
    STRONG_BOX = "STRONG_BOX"  # Android StrongBox (a separate secure element)
    SECURE_ENCLAVE = "SECURE_ENCLAVE"  # Apple Secure Enclave (App Attest)
    TPM = "TPM"  # a TPM 2.0 (discrete or firmware)


class KeyOrigin(StrEnum):
    GENERATED = "GENERATED"  # created inside the secure hardware, never outside it
    IMPORTED = "IMPORTED"
    DERIVED = "DERIVED"
    SECURELY_IMPORTED = "SECURELY_IMPORTED"
    UNKNOWN = "UNKNOWN"


class ProvisioningMethod(StrEnum):
    """How an Android device got its attestation key (see android_key's module docs)."""

    FACTORY = "FACTORY"
    REMOTE = "REMOTE"  # Remote Key Provisioning (RKP)
    UNKNOWN = "UNKNOWN"


class VerifiedBootState(StrEnum):
    VERIFIED = "VERIFIED"
    SELF_SIGNED = "SELF_SIGNED"
    UNVERIFIED = "UNVERIFIED"
    FAILED = "FAILED"


class AppleEnvironment(Enum):
    """App Attest environment, with the authenticator-data AAGUID Apple uses for it."""

    DEVELOPMENT = b"appattestdevelop"
    PRODUCTION = b"appattest" + bytes(7)


@dataclass(frozen=True, kw_only=True)
class VerifiedAttestation:
    """What every verified attestation says, whatever its format.

    ``chain`` is the certificate path as verified, DER, leaf first, ending with the
    certificate the anchor signed (the anchor itself is identified by ``anchor_key_sha256``:
    anchors are keys). ``attested_public_key`` is the attested key's SubjectPublicKeyInfo.
    """

    format: AttestationFormat
    security_level: SecurityLevel
    key_origin: KeyOrigin
    app_identity: str | None
    attested_public_key: bytes
    chain: tuple[bytes, ...]
    anchor_key_sha256: str
    verified_at: dt.datetime


EvidenceT = TypeVar("EvidenceT")
ResultT = TypeVar("ResultT", bound=VerifiedAttestation)


class AttestationVerifier(ABC, Generic[EvidenceT, ResultT]):
    """One attestation format. Configuration (trust store, policy) goes to the constructor;
    each call binds the evidence to this ceremony through the ``expected_*`` values.

    ``expected_challenge`` is the exact byte string the device passed to the platform:
    Android's ``attestationChallenge``, App Attest's ``clientDataHash``, TPM2_Certify's
    ``qualifyingData`` (``extraData``). ``expected_public_key`` is the SubjectPublicKeyInfo
    (DER) of the key the device registers; the attestation must be about that key.
    """

    format: ClassVar[AttestationFormat]

    def verify(
        self,
        evidence: EvidenceT,
        *,
        expected_challenge: bytes,
        expected_public_key: bytes,
        now: dt.datetime,
    ) -> ResultT:
        """Run the format's checklist; raise :class:`AttestationFailed` and nothing else."""
        return guarded(
            lambda: self._verify(
                evidence,
                expected_challenge=expected_challenge,
                expected_public_key=expected_public_key,
                now=now,
            )
        )

    @abstractmethod
    def _verify(
        self,
        evidence: EvidenceT,
        *,
        expected_challenge: bytes,
        expected_public_key: bytes,
        now: dt.datetime,
    ) -> ResultT:
        """The checklist itself."""


T = TypeVar("T")


def guarded(run: Callable[[], T]) -> T:
    """Call ``run``; let AttestationFailed through and turn anything else into one.

    The verifiers' own parsers raise AttestationFailed deliberately; this net exists so a
    bug can never surface as a bare exception (and a 500) in the caller.
    """
    try:
        return run()
    except AttestationFailed:
        raise
    except Exception as exc:  # the boundary: nothing untyped may escape
        raise AttestationFailed(
            Reason.INTERNAL_ERROR, f"unexpected {type(exc).__name__} while verifying"
        ) from exc


def fail(reason: Reason, detail: str = "") -> AttestationFailed:
    """Build the failure (``raise fail(...)`` keeps guard clauses one line each)."""
    return AttestationFailed(reason, detail)


def utc(moment: dt.datetime) -> dt.datetime:
    """``moment`` as an aware UTC datetime; naive values are refused (a clock bug)."""
    if moment.tzinfo is None:
        raise fail(Reason.INTERNAL_ERROR, "verification time must be timezone-aware")
    return moment.astimezone(dt.UTC)
