"""Key attestation in the ceremonies (docs/protocol.md §6.5): which evidence a platform
sends, what the application's mode and policy make of it, the verifier each format goes to,
the TPM credential activation at start, and App Attest assertions as hardware proofs (§4.6).

Pure: trust stores and the revocation list come in as values (the revocation list and the
TPM credential state through callables, so that nothing is loaded or unwrapped unless the
evidence needs it); the time is the unit's. The verifiers themselves are
``keybound.attestation`` (docs/attestation.md).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from cryptography.hazmat.primitives.serialization import load_der_public_key

from keybound.attestation import (
    ActivatedAk,
    AndroidAppPolicy,
    AndroidKeyEvidence,
    AndroidKeyPolicy,
    AndroidKeyVerifier,
    AppAttestEvidence,
    AppAttestVerifier,
    AppleApp,
    AttestationFailed,
    AttestationFormat,
    Reason,
    RevocationList,
    SecurityLevel,
    TpmEvidence,
    TpmIdentity,
    TpmVerifier,
    TrustStore,
    VerifiedAndroidKey,
    VerifiedAttestation,
    VerifiedEkCertificate,
    make_credential,
    verify_ek_certificate,
)
from keybound.attestation import AppleEnvironment as AppAttestEnvironment
from keybound.attestation.base import fail, guarded
from keybound.attestation.tpm import check_ak_public
from keybound.attestation.tpm_structures import parse_public
from keybound.protocol import (
    AndroidKeyAttestation,
    AppleAppAttestation,
    AttestationMode,
    Platform,
    RiskAttribute,
    TpmAttestation,
    TpmAttestationKey,
    TpmCredential,
    app_attest_client_data,
)
from keybound.server.core.appconfig import AppConfig, AppleEnvironment

#: The evidence format each platform's hardware key is attested in, and the setting that
#: gives the platform's mode. Platforms not listed have no attestation (NOT_CHECKED).
PLATFORM_FORMAT: Final[dict[Platform, AttestationFormat]] = {
    Platform.ANDROID: AttestationFormat.ANDROID_KEY,
    Platform.IOS: AttestationFormat.APPLE_APP_ATTEST,
    Platform.LINUX: AttestationFormat.TPM,
    Platform.WINDOWS: AttestationFormat.TPM,
}
_MODE_SETTING: Final[dict[AttestationFormat, str]] = {
    AttestationFormat.ANDROID_KEY: "attestation_android_mode",
    AttestationFormat.APPLE_APP_ATTEST: "attestation_ios_mode",
    AttestationFormat.TPM: "attestation_tpm_mode",
}
_APPLE_ENVIRONMENTS: Final = {
    AppleEnvironment.PRODUCTION: AppAttestEnvironment.PRODUCTION,
    AppleEnvironment.DEVELOPMENT: AppAttestEnvironment.DEVELOPMENT,
}
TPM_SECRET_BYTES: Final = 32


def mode_of(config: AppConfig, platform: Platform) -> AttestationMode:
    """The application's attestation mode for a device of this platform."""
    fmt = PLATFORM_FORMAT.get(platform)
    if fmt is None:
        return AttestationMode.DISABLED
    mode: AttestationMode = getattr(config, _MODE_SETTING[fmt])
    return mode


def app_attest_key(evidence: object, config: AppConfig, platform: Platform) -> bool:
    """Is the hardware key an App Attest key, whose proofs are assertions (§4.6)? Only where
    the application checks App Attest for the device's platform."""
    return (
        isinstance(evidence, AppleAppAttestation)
        and platform is Platform.IOS
        and mode_of(config, platform) is not AttestationMode.DISABLED
    )


# --------------------------------------------------------------------------- the outcome


class Status(StrEnum):
    VERIFIED = "VERIFIED"
    NOT_PROVIDED = "NOT_PROVIDED"  # no evidence (or no hardware key to attest)
    NOT_CHECKED = "NOT_CHECKED"  # the platform's mode is DISABLED, or it has no format
    FAILED = "FAILED"  # reported as FAILED_<reason>


@dataclass(frozen=True, kw_only=True)
class AttestationOutcome:
    """What an activation's attestation came to (§6.5): ``hwKeyAttestation`` and its
    details, for risk data and the registration."""

    status: Status
    reason: Reason | None = None
    format: AttestationFormat | None = None
    security_level: SecurityLevel | None = None
    provisioning_method: str | None = None
    revocation_list_age: int | None = None  # seconds

    @property
    def value(self) -> str:
        """``hwKeyAttestation``: VERIFIED, NOT_PROVIDED, NOT_CHECKED or FAILED_<reason>."""
        if self.status is Status.FAILED and self.reason is not None:
            return f"FAILED_{self.reason.value}"
        return self.status.value

    def risk(self) -> dict[str, Any]:
        """The risk attributes (§6.2): the outcome always, details where known."""
        risk: dict[str, Any] = {RiskAttribute.HW_KEY_ATTESTATION.value: self.value}
        if self.security_level is not None:
            risk[RiskAttribute.HW_KEY_SECURITY_LEVEL.value] = self.security_level.value
        if self.provisioning_method is not None:
            risk[RiskAttribute.HW_KEY_PROVISIONING_METHOD.value] = self.provisioning_method
        if self.revocation_list_age is not None:
            risk[RiskAttribute.HW_KEY_REVOCATION_LIST_AGE.value] = self.revocation_list_age
        return risk


NOT_CHECKED: Final = AttestationOutcome(status=Status.NOT_CHECKED)
NOT_PROVIDED: Final = AttestationOutcome(status=Status.NOT_PROVIDED)


def _failed(reason: Reason, fmt: AttestationFormat | None) -> AttestationOutcome:
    return AttestationOutcome(status=Status.FAILED, reason=reason, format=fmt)


# ------------------------------------------------------------ TPM credential activation


@dataclass(frozen=True, kw_only=True)
class TpmCredentialState:
    """What activation start keeps (wrapped, on the operation) for the finish: the secret
    and the AK it was made for, with the verified EK -- or why the EK or AK was refused.
    Server state only: the finish never takes any of it from the request (§6.5.3)."""

    secret: bytes = b""
    ak_public: bytes = b""
    ek: VerifiedEkCertificate | None = None
    failure: Reason | None = None

    def to_bytes(self) -> bytes:
        if self.failure is not None or self.ek is None:
            return json.dumps(
                {"v": 1, "failure": (self.failure or Reason.MALFORMED).value}
            ).encode()
        ek, identity = self.ek, self.ek.identity
        return json.dumps(
            {
                "v": 1,
                "secret": _b64(self.secret),
                "akPublic": _b64(self.ak_public),
                "ek": {
                    "publicKey": _b64(ek.public_key),
                    "chain": [_b64(c) for c in ek.chain],
                    "anchor": ek.anchor_key_sha256,
                    "identity": {
                        "manufacturerId": identity.manufacturer_id,
                        "manufacturer": identity.manufacturer,
                        "model": identity.model,
                        "version": identity.version,
                    },
                },
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> TpmCredentialState:
        stored = json.loads(data)
        if "failure" in stored:
            return cls(failure=Reason(stored["failure"]))
        ek, identity = stored["ek"], stored["ek"]["identity"]
        return cls(
            secret=_unb64(stored["secret"]),
            ak_public=_unb64(stored["akPublic"]),
            ek=VerifiedEkCertificate(
                public_key=_unb64(ek["publicKey"]),
                identity=TpmIdentity(
                    manufacturer_id=identity["manufacturerId"],
                    manufacturer=identity["manufacturer"],
                    model=identity["model"],
                    version=identity["version"],
                ),
                chain=tuple(_unb64(c) for c in ek["chain"]),
                anchor_key_sha256=ek["anchor"],
            ),
        )


def start_tpm_credential(
    keys: TpmAttestationKey, *, trust: TrustStore, now: dt.datetime
) -> tuple[TpmCredential | None, TpmCredentialState]:
    """§6.5.3 at start: verify the EK certificate against the configured TPM anchors, check
    the AK is a restricted TPM-resident signing key, and make a credential for a fresh
    secret that only that TPM can recover, and only for that AK. Never raises: a refused EK
    or AK is kept as the state's failure, and the finish reports it."""

    def make() -> tuple[TpmCredential, TpmCredentialState]:
        ek = verify_ek_certificate(keys.ek_certificate, trust=trust, now=now)  # [EK 3.2]
        ak = parse_public(keys.ak_public, what="AK TPMT_PUBLIC")
        check_ak_public(ak)  # [IDevID] restricted signing key: it only signs TPM structures
        secret = secrets.token_bytes(TPM_SECRET_BYTES)
        made = make_credential(load_der_public_key(ek.public_key), ak.name(), secret)
        return (
            TpmCredential(
                credential_blob=made.credential_blob, encrypted_secret=made.encrypted_secret
            ),
            TpmCredentialState(secret=secret, ak_public=keys.ak_public, ek=ek),
        )

    try:
        return guarded(make)
    except AttestationFailed as refused:
        return None, TpmCredentialState(failure=refused.reason)


# ------------------------------------------------------------------ activation finish


@dataclass(frozen=True, kw_only=True)
class TrustMaterial:
    """The anchors each format is verified against (configured by the operator; never from
    a request) and the Android revocation status list, fetched only if needed."""

    android: TrustStore
    apple: TrustStore
    tpm: TrustStore
    revocation: Callable[[], RevocationList | None] = lambda: None


@dataclass(frozen=True, kw_only=True)
class Ceremony:
    """The activation the evidence must be bound to."""

    config: AppConfig
    platform: Platform
    application_id: str
    device_id: str
    operation_id: str
    challenge: bytes
    hardware_key: bytes  # SPKI DER, as registered
    now: dt.datetime
    trust: TrustMaterial
    tpm_state: Callable[[], TpmCredentialState | None]


def judge(
    evidence: AndroidKeyAttestation | TpmAttestation | AppleAppAttestation | None,
    *,
    ceremony: Ceremony | None,
    platform: Platform,
    config: AppConfig,
) -> AttestationOutcome:
    """§6.5 steps 1-5; ``ceremony`` is None when no hardware key was offered. Never raises:
    every refusal is an outcome (FAILED_<reason>) for the decision table."""
    expected = PLATFORM_FORMAT.get(platform)
    # step 1: the platform's mode (no format, or DISABLED: nothing is checked)
    if expected is None or mode_of(config, platform) is AttestationMode.DISABLED:
        return NOT_CHECKED
    # step 2: no evidence
    if evidence is None:
        return NOT_PROVIDED
    fmt = AttestationFormat(evidence.format)
    # step 3: the platform's own format only (an Android device has no TPM2_Certify)
    if fmt is not expected:
        return _failed(Reason.FORMAT_MISMATCH, fmt)
    # step 4: evidence is about the hardware key being registered; without one, it is
    # about nothing this activation registers
    if ceremony is None:
        return _failed(Reason.KEY_MISMATCH, fmt)
    # step 5: the format's verifier (registry below), bound to this activation
    try:
        verified = guarded(lambda: _VERIFY[fmt](evidence, ceremony))
    except AttestationFailed as refused:
        return _failed(refused.reason, fmt)
    return _outcome(verified)


def _outcome(verified: VerifiedAttestation) -> AttestationOutcome:
    method, age = None, None
    if isinstance(verified, VerifiedAndroidKey):
        method = verified.provisioning_method.value
        if verified.revocation_list_age is not None:
            age = int(verified.revocation_list_age.total_seconds())
    return AttestationOutcome(
        status=Status.VERIFIED,
        format=verified.format,
        security_level=verified.security_level,
        provisioning_method=method,
        revocation_list_age=age,
    )


def android_policy(config: AppConfig) -> AndroidKeyPolicy:
    """The application's Android settings as the verifier's policy (§6.5.1)."""
    app = None
    if config.attestation_android_package_names:
        app = AndroidAppPolicy(
            package_names=frozenset(config.attestation_android_package_names),
            signing_digests=frozenset(
                bytes.fromhex(d) for d in config.attestation_android_signing_digests
            ),
        )
    max_age = config.attestation_android_max_revocation_list_age_seconds
    return AndroidKeyPolicy(
        app=app,
        min_security_level=SecurityLevel(config.attestation_android_min_security_level.value),
        require_verified_boot=config.attestation_android_require_verified_boot,
        require_device_locked=config.attestation_android_require_locked_bootloader,
        min_patch_level=config.attestation_android_min_patch_level,
        require_rkp=config.attestation_android_require_rkp,
        max_revocation_list_age=dt.timedelta(seconds=max_age) if max_age else None,
    )


def apple_verifier(config: AppConfig, trust: TrustStore) -> AppAttestVerifier:
    team, bundle = config.attestation_apple_team_id, config.attestation_apple_bundle_id
    if not team or not bundle:  # §6.5.2: rpIdHash needs the App ID
        raise fail(Reason.APP_ID_MISMATCH, "the application configures no Apple App ID")
    return AppAttestVerifier(
        trust=trust,
        app=AppleApp(team_id=team, bundle_id=bundle),
        environment=_APPLE_ENVIRONMENTS[config.attestation_apple_environment],
    )


def _android(evidence: AndroidKeyAttestation, c: Ceremony) -> VerifiedAttestation:
    verifier = AndroidKeyVerifier(
        trust=c.trust.android, policy=android_policy(c.config), revocation=c.trust.revocation()
    )
    return verifier.verify(
        AndroidKeyEvidence(chain=tuple(evidence.certificate_chain)),
        expected_challenge=c.challenge,
        expected_public_key=c.hardware_key,
        now=c.now,
    )


def _apple(evidence: AppleAppAttestation, c: Ceremony) -> VerifiedAttestation:
    client_data = app_attest_client_data(
        application_id=c.application_id,
        device_id=c.device_id,
        operation_id=c.operation_id,
        challenge=c.challenge,
    )
    return apple_verifier(c.config, c.trust.apple).verify(
        AppAttestEvidence(attestation_object=evidence.attestation_object, key_id=evidence.key_id),
        expected_challenge=hashlib.sha256(client_data).digest(),
        expected_public_key=c.hardware_key,
        now=c.now,
    )


def _tpm(evidence: TpmAttestation, c: Ceremony) -> VerifiedAttestation:
    state = c.tpm_state()
    # §6.5.3: the AK is trusted only through the credential this operation's start made
    if state is None:
        raise fail(Reason.TPM_NOT_ACTIVATED, "activation start made no TPM credential")
    if state.failure is not None or state.ek is None:
        raise fail(state.failure or Reason.MALFORMED, "refused at activation start")
    if not hmac.compare_digest(evidence.activated_secret, state.secret):
        raise fail(Reason.TPM_CREDENTIAL_MISMATCH, "activatedSecret is not the secret")
    return TpmVerifier(trust=c.trust.tpm).verify(
        TpmEvidence(
            certify_info=evidence.certify_info,
            signature=evidence.signature,
            public_area=evidence.public_area,
            activated_ak=ActivatedAk(public_area=state.ak_public, ek=state.ek),
        ),
        expected_challenge=c.challenge,
        expected_public_key=c.hardware_key,
        now=c.now,
    )


#: format -> its check in this ceremony (the registry keybound.attestation.REGISTRY names the
#: verifier classes; this one binds each to the activation)
_VERIFY: Final[dict[AttestationFormat, Callable[[Any, Ceremony], VerifiedAttestation]]] = {
    AttestationFormat.ANDROID_KEY: _android,
    AttestationFormat.APPLE_APP_ATTEST: _apple,
    AttestationFormat.TPM: _tpm,
}


# ------------------------------------------------------------- App Attest assertions


def check_assertion(
    assertion: bytes,
    *,
    transcript: bytes,
    public_key: bytes,
    previous_counter: int,
    config: AppConfig,
) -> int:
    """§4.6: an App Attest assertion by the registered key over this transcript (its client
    data), counter above ``previous_counter``; the new counter, or AttestationFailed."""
    verifier = guarded(lambda: apple_verifier(config, TrustStore()))
    return verifier.verify_assertion(
        assertion,
        expected_client_data_hash=hashlib.sha256(transcript).digest(),
        expected_public_key=public_key,
        previous_counter=previous_counter,
    ).counter


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
