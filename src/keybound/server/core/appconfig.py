"""Per-application configuration (docs/protocol.md §7).

Stored as JSON in the ``applications`` table, snapshotted onto each operation when it starts,
so a change applies to the next operation and never to one already under way.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

from keybound.errors import ConfigurationInvalid
from keybound.protocol import (
    ActivationCodeType,
    AttestationMode,
    AuthMethod,
    HwKeyValidationStrategy,
    RiskAttribute,
)

DEFAULT_RISK_DATA = (RiskAttribute.HW_KEY_CLIENT_STATUS, RiskAttribute.HW_KEY_SERVER_RESULT)

#: field name -> (wire name, inclusive min, inclusive max) for the integer settings
_INT_BOUNDS: dict[str, tuple[str, int, int]] = {
    "activation_code_length": ("activationCodeLength", 4, 64),
    "amount_failures_allowed": ("amountFailuresAllowed", 1, 1000),
    "challenge_lifetime_seconds": ("challengeLifetimeSeconds", 10, 3600),
    "operation_lifetime_seconds": ("operationLifetimeSeconds", 10, 7 * 86400),
    "activation_code_lifetime_seconds": ("activationCodeLifetimeSeconds", 60, 30 * 86400),
}
#: the same for the optional integer settings (None: not enforced)
_OPTIONAL_INT_BOUNDS: dict[str, tuple[str, int, int]] = {
    "attestation_android_min_patch_level": ("attestationAndroidMinPatchLevel", 200801, 209912),
    "attestation_android_max_revocation_list_age_seconds": (
        "attestationAndroidMaxRevocationListAgeSeconds",
        60,
        30 * 86400,
    ),
}


class AndroidSecurityLevel(StrEnum):
    """The minimum Android security level an attested key must have (§6.5.1)."""

    TRUSTED_ENVIRONMENT = "TRUSTED_ENVIRONMENT"  # the TEE
    STRONG_BOX = "STRONG_BOX"  # a separate secure element


class AppleEnvironment(StrEnum):
    """The App Attest environment the app's keys are attested in (§6.5.2)."""

    PRODUCTION = "PRODUCTION"
    DEVELOPMENT = "DEVELOPMENT"


_PACKAGE_NAME = re.compile(r"^(?=.{3,255}$)[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_APPLE_TEAM_ID = re.compile(r"^[A-Z0-9]{10}$")
_APPLE_BUNDLE_ID = re.compile(r"^(?=.{3,155}$)[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
#: most package names / signing digests an application lists
_MAX_LIST = 32


@dataclass(frozen=True, kw_only=True)
class AppConfig:
    hw_key_validation_strategy: HwKeyValidationStrategy = HwKeyValidationStrategy.SUPPORTED
    enabled_risk_data: tuple[RiskAttribute, ...] = DEFAULT_RISK_DATA
    activation_code_length: int = 6
    activation_code_type: ActivationCodeType = ActivationCodeType.NUMERIC
    amount_failures_allowed: int = 3
    challenge_lifetime_seconds: int = 120
    operation_lifetime_seconds: int = 300
    activation_code_lifetime_seconds: int = 900
    allowed_auth_methods: tuple[AuthMethod, ...] = (AuthMethod.DEVICE, AuthMethod.DEVICE_PIN)
    # key attestation (§6.5): a mode per platform, then each platform's policy
    attestation_android_mode: AttestationMode = AttestationMode.DISABLED
    attestation_ios_mode: AttestationMode = AttestationMode.DISABLED
    attestation_tpm_mode: AttestationMode = AttestationMode.DISABLED
    attestation_android_min_security_level: AndroidSecurityLevel = (
        AndroidSecurityLevel.TRUSTED_ENVIRONMENT
    )
    attestation_android_require_verified_boot: bool = True
    attestation_android_require_locked_bootloader: bool = True
    attestation_android_min_patch_level: int | None = None  # YYYYMM
    attestation_android_require_rkp: bool = False
    attestation_android_package_names: tuple[str, ...] = ()  # empty: the app is not checked
    attestation_android_signing_digests: tuple[str, ...] = ()  # SHA-256, lowercase hex
    attestation_android_max_revocation_list_age_seconds: int | None = None
    attestation_apple_team_id: str | None = None
    attestation_apple_bundle_id: str | None = None
    attestation_apple_environment: AppleEnvironment = AppleEnvironment.PRODUCTION

    def __post_init__(self) -> None:
        for name, (wire, low, high) in _INT_BOUNDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigurationInvalid(
                    f"{wire} must be an integer in [{low}, {high}]", setting=wire
                )
        if not self.allowed_auth_methods:
            raise ConfigurationInvalid("allowedAuthMethods must name at least one method")
        self._check_attestation()

    def _check_attestation(self) -> None:
        for name, (wire, low, high) in _OPTIONAL_INT_BOUNDS.items():
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high
            ):
                raise ConfigurationInvalid(f"{wire} must be null or an integer in [{low}, {high}]")
        patch = self.attestation_android_min_patch_level
        if patch is not None and not 1 <= patch % 100 <= 12:
            raise ConfigurationInvalid("attestationAndroidMinPatchLevel is YYYYMM")
        # the verifier needs both: an app is its package names signed by exactly these keys
        if bool(self.attestation_android_package_names) != bool(
            self.attestation_android_signing_digests
        ):
            raise ConfigurationInvalid(
                "attestationAndroidPackageNames and attestationAndroidSigningDigests go together"
            )
        if self.attestation_ios_mode is not AttestationMode.DISABLED and not (
            self.attestation_apple_team_id and self.attestation_apple_bundle_id
        ):
            raise ConfigurationInvalid(
                "attestationIosMode needs attestationAppleTeamId and "
                "attestationAppleBundleId (the App ID keys attest for)"
            )

    # -- wire form (camelCase JSON, as the CLI and the database hold it) ------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "hwKeyValidationStrategy": self.hw_key_validation_strategy.value,
            "enabledRiskData": [r.value for r in self.enabled_risk_data],
            "activationCodeLength": self.activation_code_length,
            "activationCodeType": self.activation_code_type.value,
            "amountFailuresAllowed": self.amount_failures_allowed,
            "challengeLifetimeSeconds": self.challenge_lifetime_seconds,
            "operationLifetimeSeconds": self.operation_lifetime_seconds,
            "activationCodeLifetimeSeconds": self.activation_code_lifetime_seconds,
            "allowedAuthMethods": [m.value for m in self.allowed_auth_methods],
            "attestationAndroidMode": self.attestation_android_mode.value,
            "attestationIosMode": self.attestation_ios_mode.value,
            "attestationTpmMode": self.attestation_tpm_mode.value,
            "attestationAndroidMinSecurityLevel": self.attestation_android_min_security_level.value,
            "attestationAndroidRequireVerifiedBoot": self.attestation_android_require_verified_boot,
            "attestationAndroidRequireLockedBootloader": (
                self.attestation_android_require_locked_bootloader
            ),
            "attestationAndroidMinPatchLevel": self.attestation_android_min_patch_level,
            "attestationAndroidRequireRkp": self.attestation_android_require_rkp,
            "attestationAndroidPackageNames": list(self.attestation_android_package_names),
            "attestationAndroidSigningDigests": list(self.attestation_android_signing_digests),
            "attestationAndroidMaxRevocationListAgeSeconds": (
                self.attestation_android_max_revocation_list_age_seconds
            ),
            "attestationAppleTeamId": self.attestation_apple_team_id,
            "attestationAppleBundleId": self.attestation_apple_bundle_id,
            "attestationAppleEnvironment": self.attestation_apple_environment.value,
        }

    def to_stored(self) -> str:
        """The JSON text stored on the application and snapshotted on every operation:
        ``to_json`` without the attestation settings that are at their documented defaults
        (§7), which reading fills in as for configurations from before them. Every
        authentication writes and reads its snapshot, so it stays small."""
        defaults = _attestation_defaults()
        return json.dumps(
            {
                name: value
                for name, value in self.to_json().items()
                if name not in defaults or defaults[name] != value
            }
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AppConfig:
        return cls().updated(data)

    @staticmethod
    def from_stored(text: str) -> AppConfig:
        """The configuration stored as JSON text (on an application or an operation's
        snapshot). Parsed once per distinct text: every request reads one."""
        return _from_stored(text)

    def updated(self, changes: Mapping[str, Any]) -> AppConfig:
        """A copy with camelCase ``changes`` applied; raises ConfigurationInvalid."""
        kwargs: dict[str, Any] = {}
        for wire, value in changes.items():
            name, parse = _PARSERS.get(wire, (None, None))
            if name is None or parse is None:
                raise ConfigurationInvalid(
                    f"unknown setting {wire!r}; the settings are {', '.join(_PARSERS)}",
                    setting=wire,
                )
            try:
                kwargs[name] = parse(value)
            except (ValueError, TypeError) as exc:
                raise ConfigurationInvalid(
                    f"invalid value for {wire}: {value!r}; expected {expected_value(wire)}",
                    setting=wire,
                ) from exc
        return dataclasses.replace(self, **kwargs)


def expected_value(wire: str) -> str:
    """What the setting ``wire`` takes, for an error message that says how to fix it."""
    if wire in _EXPECTED:
        return _EXPECTED[wire]
    if wire in _INT_NAMES:
        _, low, high = _INT_BOUNDS[_INT_NAMES[wire]]
        return f"an integer from {low} to {high}"
    enum, many = _ENUMS[wire]
    values = ", ".join(member.value for member in enum)
    if enum is HwKeyValidationStrategy:
        values += " (REQUIRED_IF_SUPPORTED = SUPPORTED)"
    return f"a comma-separated list of {values}" if many else f"one of {values}"


def _enum_list(enum: Any) -> Any:
    def parse(value: Any) -> tuple[Any, ...]:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise TypeError("expected a list")
        return tuple(dict.fromkeys(enum(str(v).strip()) for v in items if str(v).strip()))

    return parse


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("expected an integer")
    return int(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected true or false")
    return value


def _strings(pattern: re.Pattern[str], normalise: Any = str) -> Any:
    """A list (or comma-separated string) of strings matching ``pattern`` after
    ``normalise``; duplicates removed, order kept."""

    def parse(value: Any) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
            raise TypeError("expected a list of strings")
        cleaned = [normalise(v.strip()) for v in items if v.strip()]
        if len(cleaned) > _MAX_LIST:
            raise ValueError(f"at most {_MAX_LIST} values")
        if not all(pattern.fullmatch(v) for v in cleaned):
            raise ValueError(f"expected values matching {pattern.pattern}")
        return tuple(dict.fromkeys(cleaned))

    return parse


def _digest(text: str) -> str:
    """A SHA-256 in hex, as apksigner and keytool print it (colons and case tolerated)."""
    return text.replace(":", "").lower()


def _optional_text(pattern: re.Pattern[str]) -> Any:
    def parse(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(f"expected null or a value matching {pattern.pattern}")
        return value

    return parse


@lru_cache(maxsize=1)
def _attestation_defaults() -> dict[str, Any]:
    return {
        name: value
        for name, value in AppConfig().to_json().items()
        if name.startswith("attestation")
    }


@lru_cache(maxsize=1024)
def _from_stored(text: str) -> AppConfig:
    return AppConfig.from_json(json.loads(text))


_INT_NAMES = {wire: name for name, (wire, _, _) in _INT_BOUNDS.items()}
#: wire name -> (its enum, whether it takes a list)
_ENUMS: dict[str, tuple[Any, bool]] = {
    "hwKeyValidationStrategy": (HwKeyValidationStrategy, False),
    "enabledRiskData": (RiskAttribute, True),
    "activationCodeType": (ActivationCodeType, False),
    "allowedAuthMethods": (AuthMethod, True),
    "attestationAndroidMode": (AttestationMode, False),
    "attestationIosMode": (AttestationMode, False),
    "attestationTpmMode": (AttestationMode, False),
    "attestationAndroidMinSecurityLevel": (AndroidSecurityLevel, False),
    "attestationAppleEnvironment": (AppleEnvironment, False),
}
#: wire name -> what it takes, for the key attestation settings that are neither
_EXPECTED: dict[str, str] = {
    "attestationAndroidRequireVerifiedBoot": "true or false",
    "attestationAndroidRequireLockedBootloader": "true or false",
    "attestationAndroidRequireRkp": "true or false",
    "attestationAndroidMinPatchLevel": "null or a month YYYYMM from 200801 to 209912",
    "attestationAndroidMaxRevocationListAgeSeconds": "null or an integer from 60 to 2592000",
    "attestationAndroidPackageNames": f"a comma-separated list of at most {_MAX_LIST} package "
    "names (com.example.app)",
    "attestationAndroidSigningDigests": f"a comma-separated list of at most {_MAX_LIST} "
    "SHA-256 digests in hex",
    "attestationAppleTeamId": "null or a team id of 10 characters A-Z and 0-9",
    "attestationAppleBundleId": "null or a bundle id (com.example.app)",
}

_PARSERS: dict[str, tuple[str, Any]] = {
    "hwKeyValidationStrategy": ("hw_key_validation_strategy", HwKeyValidationStrategy.parse),
    "enabledRiskData": ("enabled_risk_data", _enum_list(RiskAttribute)),
    "activationCodeType": ("activation_code_type", ActivationCodeType),
    "allowedAuthMethods": ("allowed_auth_methods", _enum_list(AuthMethod)),
    **{wire: (name, _int) for name, (wire, _, _) in _INT_BOUNDS.items()},
    "attestationAndroidMode": ("attestation_android_mode", AttestationMode),
    "attestationIosMode": ("attestation_ios_mode", AttestationMode),
    "attestationTpmMode": ("attestation_tpm_mode", AttestationMode),
    "attestationAndroidMinSecurityLevel": (
        "attestation_android_min_security_level",
        AndroidSecurityLevel,
    ),
    "attestationAndroidRequireVerifiedBoot": ("attestation_android_require_verified_boot", _bool),
    "attestationAndroidRequireLockedBootloader": (
        "attestation_android_require_locked_bootloader",
        _bool,
    ),
    "attestationAndroidRequireRkp": ("attestation_android_require_rkp", _bool),
    "attestationAndroidPackageNames": (
        "attestation_android_package_names",
        _strings(_PACKAGE_NAME),
    ),
    "attestationAndroidSigningDigests": (
        "attestation_android_signing_digests",
        _strings(_SHA256_HEX, _digest),
    ),
    **{wire: (name, _optional_int) for name, (wire, _, _) in _OPTIONAL_INT_BOUNDS.items()},
    "attestationAppleTeamId": ("attestation_apple_team_id", _optional_text(_APPLE_TEAM_ID)),
    "attestationAppleBundleId": ("attestation_apple_bundle_id", _optional_text(_APPLE_BUNDLE_ID)),
    "attestationAppleEnvironment": ("attestation_apple_environment", AppleEnvironment),
}
