"""Key attestation: proof from the platform vendor that a key lives in secure hardware.

One verifier per format behind :class:`~keybound.attestation.base.AttestationVerifier`,
chosen through :data:`REGISTRY` (never an if/elif on a request field). Each takes its
format's evidence and keyword-only ``expected_challenge`` / ``expected_public_key`` /
``now`` and returns a frozen ``Verified...`` result or raises
:class:`~keybound.attestation.base.AttestationFailed` with a stable ``reason``.

=================  =================================  =====================================
format             verifier                           evidence
=================  =================================  =====================================
android-key        :class:`AndroidKeyVerifier`        :class:`AndroidKeyEvidence` (chain)
apple-appattest    :class:`AppAttestVerifier`         :class:`AppAttestEvidence` (CBOR, keyId)
tpm                :class:`TpmVerifier`               :class:`TpmEvidence` (TPM2_Certify)
=================  =================================  =====================================

What each checks, step by step, and what is deliberately not checked: docs/attestation.md.
Importing this package loads cryptography, pyasn1 and cbor2 only (httpx is imported when a
revocation list is fetched, PyYAML when the conformance command reads a YAML sample).
"""

from __future__ import annotations

from typing import Any

from keybound.attestation.android_key import (
    AndroidAppPolicy,
    AndroidKeyEvidence,
    AndroidKeyPolicy,
    AndroidKeyVerifier,
    VerifiedAndroidKey,
)
from keybound.attestation.apple_app_attest import (
    AppAttestEvidence,
    AppAttestVerifier,
    AppleApp,
    VerifiedAppAttest,
    VerifiedAppAttestAssertion,
)
from keybound.attestation.base import (
    AppleEnvironment,
    AttestationFailed,
    AttestationFormat,
    AttestationVerifier,
    KeyOrigin,
    ProvisioningMethod,
    Reason,
    SecurityLevel,
    VerifiedAttestation,
    VerifiedBootState,
)
from keybound.attestation.revocation import RevocationCache, RevocationList, RevocationStatus
from keybound.attestation.tpm import (
    ActivatedAk,
    AkTrust,
    TpmEvidence,
    TpmIdentity,
    TpmPolicy,
    TpmVerifier,
    VerifiedEkCertificate,
    VerifiedTpm,
    verify_ek_certificate,
)
from keybound.attestation.tpm_credential import MadeCredential, make_credential
from keybound.attestation.trust import TrustAnchor, TrustStore

#: The formats keybound verifies, by their wire name. An explicit allow-list: a format not
#: here is refused before any parsing.
REGISTRY: dict[str, type[AttestationVerifier[Any, Any]]] = {
    AttestationFormat.ANDROID_KEY.value: AndroidKeyVerifier,
    AttestationFormat.APPLE_APP_ATTEST.value: AppAttestVerifier,
    AttestationFormat.TPM.value: TpmVerifier,
}


def verifier_class(name: str) -> type[AttestationVerifier[Any, Any]]:
    """The verifier class for a wire format name; AttestationFailed(MALFORMED) if unknown."""
    found = REGISTRY.get(name) if isinstance(name, str) else None
    if found is None:
        raise AttestationFailed(Reason.MALFORMED, f"unknown attestation format {name!r}")
    return found


__all__ = [
    "REGISTRY",
    "ActivatedAk",
    "AkTrust",
    "AndroidAppPolicy",
    "AndroidKeyEvidence",
    "AndroidKeyPolicy",
    "AndroidKeyVerifier",
    "AppAttestEvidence",
    "AppAttestVerifier",
    "AppleApp",
    "AppleEnvironment",
    "AttestationFailed",
    "AttestationFormat",
    "AttestationVerifier",
    "KeyOrigin",
    "MadeCredential",
    "ProvisioningMethod",
    "Reason",
    "RevocationCache",
    "RevocationList",
    "RevocationStatus",
    "SecurityLevel",
    "TpmEvidence",
    "TpmIdentity",
    "TpmPolicy",
    "TpmVerifier",
    "TrustAnchor",
    "TrustStore",
    "VerifiedAndroidKey",
    "VerifiedAppAttest",
    "VerifiedAppAttestAssertion",
    "VerifiedAttestation",
    "VerifiedBootState",
    "VerifiedEkCertificate",
    "VerifiedTpm",
    "make_credential",
    "verifier_class",
    "verify_ek_certificate",
]
