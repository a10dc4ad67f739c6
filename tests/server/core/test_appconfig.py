"""Application configuration: defaults, validation, and the REQUIRED_IF_SUPPORTED alias."""

from __future__ import annotations

import json

import pytest

from keybound.errors import ConfigurationInvalid, ErrorCode
from keybound.protocol import (
    ActivationCodeType,
    AttestationMode,
    AuthMethod,
    HwKeyValidationStrategy,
)
from keybound.server.core.appconfig import AppConfig


def test_defaults() -> None:
    config = AppConfig()
    assert config.hw_key_validation_strategy is HwKeyValidationStrategy.SUPPORTED
    assert config.activation_code_length == 6
    assert config.activation_code_type is ActivationCodeType.NUMERIC
    assert config.amount_failures_allowed == 3
    assert config.allowed_auth_methods == (AuthMethod.DEVICE, AuthMethod.DEVICE_PIN)
    assert AppConfig.from_json(config.to_json()) == config


def test_alias_and_lists() -> None:
    config = AppConfig().updated(
        {
            "hwKeyValidationStrategy": "REQUIRED_IF_SUPPORTED",
            "allowedAuthMethods": "DEVICE:PIN",
            "enabledRiskData": [],
        }
    )
    assert config.hw_key_validation_strategy is HwKeyValidationStrategy.SUPPORTED
    assert config.allowed_auth_methods == (AuthMethod.DEVICE_PIN,)
    assert config.enabled_risk_data == ()


@pytest.mark.parametrize(
    "changes",
    [
        {"activationCodeLength": 3},
        {"activationCodeLength": "six"},
        {"amountFailuresAllowed": 0},
        {"amountFailuresAllowed": True},
        {"hwKeyValidationStrategy": "OPTIONAL"},
        {"activationCodeType": "ANY"},
        {"allowedAuthMethods": []},
        {"allowedAuthMethods": ["DEVICE:FACE"]},
        {"enabledRiskData": ["ipAddress"]},
        {"challengeLifetimeSeconds": 5},
        {"noSuchSetting": 1},
    ],
)
def test_invalid_settings_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigurationInvalid) as info:
        AppConfig().updated(changes)
    assert info.value.code is ErrorCode.CONFIGURATION_INVALID


# -- key attestation settings (docs/protocol.md §6.5, §7) ------------------------------------


def test_attestation_defaults_check_nothing() -> None:
    config = AppConfig()
    assert {
        config.attestation_android_mode,
        config.attestation_ios_mode,
        config.attestation_tpm_mode,
    } == {AttestationMode.DISABLED}
    assert config.attestation_android_min_security_level.value == "TRUSTED_ENVIRONMENT"
    assert config.attestation_android_require_verified_boot is True
    assert config.attestation_android_require_locked_bootloader is True
    assert config.attestation_android_require_rkp is False
    assert config.attestation_android_min_patch_level is None
    assert config.attestation_apple_environment.value == "PRODUCTION"
    wire = config.to_json()
    assert wire["attestationAndroidPackageNames"] == [] and wire["attestationAppleTeamId"] is None


def test_attestation_settings_round_trip() -> None:
    digest = "AB:" * 31 + "AB"
    config = AppConfig().updated(
        {
            "attestationAndroidMode": "REQUIRED",
            "attestationIosMode": "OPTIONAL",
            "attestationTpmMode": "OPTIONAL",
            "attestationAndroidMinSecurityLevel": "STRONG_BOX",
            "attestationAndroidMinPatchLevel": 202406,
            "attestationAndroidRequireRkp": True,
            "attestationAndroidPackageNames": "com.example.bank,com.example.bank",
            "attestationAndroidSigningDigests": [digest],
            "attestationAndroidMaxRevocationListAgeSeconds": 86400,
            "attestationAppleTeamId": "ABCDE12345",
            "attestationAppleBundleId": "com.example.bank",
            "attestationAppleEnvironment": "DEVELOPMENT",
        }
    )
    assert config.attestation_android_package_names == ("com.example.bank",)
    assert config.attestation_android_signing_digests == ("ab" * 32,)  # as apksigner prints
    assert AppConfig.from_json(config.to_json()) == config
    # stored configurations from before attestation read as the defaults
    old = {k: v for k, v in AppConfig().to_json().items() if not k.startswith("attestation")}
    assert AppConfig.from_json(old) == AppConfig()


@pytest.mark.parametrize(
    "changes",
    [
        {"attestationAndroidMode": "ON"},
        {"attestationAndroidMinSecurityLevel": "SOFTWARE"},
        {"attestationAndroidRequireRkp": "yes"},
        {"attestationAndroidMinPatchLevel": 202413},
        {"attestationAndroidMinPatchLevel": 1999},
        {"attestationAndroidPackageNames": ["com.example.bank"]},  # without signing digests
        {"attestationAndroidSigningDigests": ["ab" * 32]},  # without package names
        {
            "attestationAndroidPackageNames": ["not a package"],
            "attestationAndroidSigningDigests": ["ab" * 32],
        },
        {
            "attestationAndroidPackageNames": ["com.example.bank"],
            "attestationAndroidSigningDigests": ["ab" * 31],
        },
        {
            "attestationAndroidPackageNames": [f"com.example.a{i}" for i in range(33)],
            "attestationAndroidSigningDigests": ["ab" * 32],
        },
        {"attestationAndroidMaxRevocationListAgeSeconds": 10},
        {"attestationIosMode": "OPTIONAL"},  # without an App ID
        {"attestationIosMode": "REQUIRED", "attestationAppleTeamId": "ABCDE12345"},
        {"attestationAppleTeamId": "abcde12345"},
        {"attestationAppleBundleId": "nodots"},
        {"attestationAppleEnvironment": "STAGING"},
    ],
)
def test_invalid_attestation_settings_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigurationInvalid) as info:
        AppConfig().updated(changes)
    assert info.value.code is ErrorCode.CONFIGURATION_INVALID


def test_stored_form_leaves_out_attestation_defaults() -> None:
    """Every operation snapshots the stored text: it stays as small as before attestation,
    and reads back to the same configuration."""
    assert "attestation" not in AppConfig().to_stored()
    config = AppConfig().updated(
        {"attestationTpmMode": "OPTIONAL", "attestationAndroidRequireRkp": True}
    )
    stored = json.loads(config.to_stored())
    assert {k for k in stored if k.startswith("attestation")} == {
        "attestationTpmMode",
        "attestationAndroidRequireRkp",
    }
    assert AppConfig.from_stored(config.to_stored()) == config


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"hwKeyValidationStrategy": "FOO"},
            "expected one of SUPPORTED, RISK_PARAMS, REQUIRED (REQUIRED_IF_SUPPORTED = SUPPORTED)",
        ),
        ({"activationCodeType": "hex"}, "expected one of NUMERIC, ALPHA, ALPHANUMERIC"),
        ({"allowedAuthMethods": "PIN"}, "expected a comma-separated list of DEVICE, DEVICE:PIN"),
        (
            {"enabledRiskData": "ip"},
            "expected a comma-separated list of hwKeyClientStatus, "
            "hwKeyServerResult, softwareKeyCloneSuspected",
        ),
        ({"challengeLifetimeSeconds": "two"}, "expected an integer from 10 to 3600"),
        ({"noSuchSetting": 1}, "the settings are hwKeyValidationStrategy, enabledRiskData"),
    ],
)
def test_a_refusal_says_what_the_setting_takes(changes: dict[str, object], expected: str) -> None:
    """Issue 14: an operator who mistypes a value is told the valid ones, not only that the
    value is invalid."""
    with pytest.raises(ConfigurationInvalid) as info:
        AppConfig().updated(changes)
    assert expected in info.value.detail
    assert info.value.fields["setting"] == next(iter(changes))
