"""The attestation rules of the ceremonies, pure (docs/protocol.md §6.5): platform and mode,
the outcome values, the TPM credential state, and that nothing but an outcome comes out."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keybound import crypto
from keybound import protocol as p
from keybound.attestation import Reason, SecurityLevel, TrustAnchor, TrustStore
from keybound.server.core.appconfig import AppConfig
from keybound.server.core.attestation import (
    AttestationOutcome,
    Ceremony,
    Status,
    TpmCredentialState,
    TrustMaterial,
    android_policy,
    app_attest_key,
    judge,
    mode_of,
    start_tpm_credential,
)
from tests.server.services.attestation_devices import AndroidPlatform, SoftwareTpm

NOW = dt.datetime.now(dt.UTC)
EMPTY = TrustMaterial(android=TrustStore(), apple=TrustStore(), tpm=TrustStore())
ALL_OPTIONAL = AppConfig().updated(
    {
        "attestationAndroidMode": "OPTIONAL",
        "attestationTpmMode": "OPTIONAL",
        "attestationIosMode": "OPTIONAL",
        "attestationAppleTeamId": "ABCDE12345",
        "attestationAppleBundleId": "com.example.bank",
    }
)


def ceremony(
    config: AppConfig, platform: p.Platform, trust: TrustMaterial = EMPTY, **changes: Any
) -> Ceremony:
    values: dict[str, Any] = {
        "config": config,
        "platform": platform,
        "application_id": "bank",
        "device_id": "d",
        "operation_id": "o",
        "challenge": b"c" * 32,
        "hardware_key": crypto.public_der(crypto.generate_p256()),
        "now": NOW,
        "trust": trust,
        "tpm_state": lambda: None,
        **changes,
    }
    return Ceremony(**values)


@pytest.mark.parametrize(
    ("platform", "setting"),
    [
        (p.Platform.ANDROID, "attestationAndroidMode"),
        (p.Platform.IOS, "attestationIosMode"),
        (p.Platform.LINUX, "attestationTpmMode"),
        (p.Platform.WINDOWS, "attestationTpmMode"),
    ],
)
def test_each_platform_has_its_mode(platform: p.Platform, setting: str) -> None:
    config = AppConfig().updated(
        {
            setting: "REQUIRED",
            "attestationAppleTeamId": "ABCDE12345",
            "attestationAppleBundleId": "com.example.bank",
        }
    )
    settings_of = {
        p.Platform.ANDROID: "attestationAndroidMode",
        p.Platform.IOS: "attestationIosMode",
        p.Platform.LINUX: "attestationTpmMode",
        p.Platform.WINDOWS: "attestationTpmMode",
    }
    for other in p.Platform:
        expected = (
            p.AttestationMode.REQUIRED
            if settings_of.get(other) == setting
            else p.AttestationMode.DISABLED
        )
        assert mode_of(config, other) is expected, other


@pytest.mark.parametrize("platform", [p.Platform.MACOS, p.Platform.OTHER])
def test_platforms_without_a_format_are_not_checked(platform: p.Platform) -> None:
    evidence = p.AndroidKeyAttestation(format="android-key", certificate_chain=[b"x"])
    outcome = judge(
        evidence, ceremony=ceremony(ALL_OPTIONAL, platform), platform=platform, config=ALL_OPTIONAL
    )
    assert outcome.value == "NOT_CHECKED"


def test_outcome_values_and_risk() -> None:
    failed = AttestationOutcome(status=Status.FAILED, reason=Reason.CHAIN_UNTRUSTED)
    assert failed.value == "FAILED_CHAIN_UNTRUSTED"
    assert failed.risk() == {"hwKeyAttestation": "FAILED_CHAIN_UNTRUSTED"}
    verified = AttestationOutcome(
        status=Status.VERIFIED,
        security_level=SecurityLevel.STRONG_BOX,
        provisioning_method="REMOTE",
        revocation_list_age=60,
    )
    assert verified.risk() == {
        "hwKeyAttestation": "VERIFIED",
        "hwKeySecurityLevel": "STRONG_BOX",
        "hwKeyProvisioningMethod": "REMOTE",
        "hwKeyRevocationListAge": 60,
    }


def test_evidence_without_a_hardware_key_attests_nothing() -> None:
    evidence = p.AndroidKeyAttestation(format="android-key", certificate_chain=[b"x"])
    outcome = judge(evidence, ceremony=None, platform=p.Platform.ANDROID, config=ALL_OPTIONAL)
    assert outcome.value == "FAILED_KEY_MISMATCH"


def test_only_an_ios_device_under_a_checking_mode_has_an_app_attest_key() -> None:
    evidence = p.AppleAppAttestation(
        format="apple-appattest", key_id=b"k" * 32, attestation_object=b"\xa0"
    )
    assert app_attest_key(evidence, ALL_OPTIONAL, p.Platform.IOS)
    assert not app_attest_key(evidence, ALL_OPTIONAL, p.Platform.ANDROID)
    assert not app_attest_key(evidence, AppConfig(), p.Platform.IOS)


def test_android_settings_become_the_verifier_policy() -> None:
    config = AppConfig().updated(
        {
            "attestationAndroidPackageNames": ["com.example.bank"],
            "attestationAndroidSigningDigests": ["ab" * 32],
            "attestationAndroidMinSecurityLevel": "STRONG_BOX",
            "attestationAndroidRequireLockedBootloader": False,
            "attestationAndroidMaxRevocationListAgeSeconds": 7200,
        }
    )
    policy = android_policy(config)
    assert policy.app is not None and policy.app.signing_digests == {b"\xab" * 32}
    assert policy.min_security_level is SecurityLevel.STRONG_BOX
    assert (policy.require_device_locked, policy.require_verified_boot) == (False, True)
    assert policy.max_revocation_list_age == dt.timedelta(hours=2)
    assert android_policy(AppConfig()).app is None  # no app configured: not checked


def test_tpm_credential_state_round_trip() -> None:
    tpm = SoftwareTpm()
    trust = TrustStore((TrustAnchor.from_spki(tpm.manufacturer.spki, label="EK CA"),))
    credential, state = start_tpm_credential(tpm.keys(), trust=trust, now=NOW)
    assert credential is not None and state.failure is None
    assert tpm.activate(credential) == state.secret  # the TPM recovers exactly the secret
    assert TpmCredentialState.from_bytes(state.to_bytes()) == state
    refused = TpmCredentialState(failure=Reason.CHAIN_UNTRUSTED)
    assert TpmCredentialState.from_bytes(refused.to_bytes()) == refused


def test_tpm_start_keeps_why_it_refused() -> None:
    tpm = SoftwareTpm()
    credential, state = start_tpm_credential(tpm.keys(), trust=TrustStore(), now=NOW)
    assert credential is None and state.failure is Reason.CHAIN_UNTRUSTED
    garbage = p.TpmAttestationKey(ek_certificate=b"\x30\x03\x02\x01\x01", ak_public=b"\x00")
    credential, state = start_tpm_credential(garbage, trust=TrustStore(), now=NOW)
    assert credential is None and state.failure is Reason.MALFORMED


@settings(max_examples=60, deadline=None)
@given(
    chain=st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=4),
    blob=st.binary(min_size=1, max_size=256),
    secret=st.binary(min_size=32, max_size=32),
)
def test_judging_garbage_is_an_outcome_never_an_exception(
    chain: list[bytes], blob: bytes, secret: bytes
) -> None:
    state = TpmCredentialState(secret=secret, ak_public=blob, ek=None, failure=Reason.MALFORMED)
    for platform, evidence in (
        (
            p.Platform.ANDROID,
            p.AndroidKeyAttestation(format="android-key", certificate_chain=chain),
        ),
        (
            p.Platform.IOS,
            p.AppleAppAttestation(format="apple-appattest", key_id=secret, attestation_object=blob),
        ),
        (
            p.Platform.LINUX,
            p.TpmAttestation(
                format="tpm",
                certify_info=blob,
                signature=blob,
                public_area=blob,
                activated_secret=secret,
            ),
        ),
    ):
        outcome = judge(
            evidence,
            platform=platform,
            config=ALL_OPTIONAL,
            ceremony=ceremony(ALL_OPTIONAL, platform, tpm_state=lambda: state),
        )
        assert outcome.status is Status.FAILED and outcome.reason is not Reason.INTERNAL_ERROR


def test_a_valid_android_chain_verifies_in_the_core() -> None:
    android = AndroidPlatform()
    trust = TrustMaterial(
        android=TrustStore((TrustAnchor.from_spki(android.pki.root.spki, label="root"),)),
        apple=TrustStore(),
        tpm=TrustStore(),
    )
    key = crypto.generate_p256()
    evidence = android.attest(key, b"c" * 32)
    c = ceremony(ALL_OPTIONAL, p.Platform.ANDROID, trust, hardware_key=crypto.public_der(key))
    outcome = judge(evidence, ceremony=c, platform=p.Platform.ANDROID, config=ALL_OPTIONAL)
    assert outcome.value == "VERIFIED"
    assert outcome.security_level is SecurityLevel.TRUSTED_ENVIRONMENT
