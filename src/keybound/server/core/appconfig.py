"""Per-application configuration (docs/protocol.md §7).

Stored as JSON in the ``applications`` table, snapshotted onto each operation when it starts,
so a change applies to the next operation and never to one already under way.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from keybound.errors import ConfigurationInvalid
from keybound.protocol import (
    ActivationCodeType,
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

    def __post_init__(self) -> None:
        for name, (wire, low, high) in _INT_BOUNDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigurationInvalid(f"{wire} must be an integer in [{low}, {high}]",
                                           setting=wire)
        if not self.allowed_auth_methods:
            raise ConfigurationInvalid("allowedAuthMethods must name at least one method")

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
        }

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
                    setting=wire)
            try:
                kwargs[name] = parse(value)
            except (ValueError, TypeError) as exc:
                raise ConfigurationInvalid(
                    f"invalid value for {wire}: {value!r}; expected {expected_value(wire)}",
                    setting=wire) from exc
        return dataclasses.replace(self, **kwargs)


def expected_value(wire: str) -> str:
    """What the setting ``wire`` takes, for an error message that says how to fix it."""
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
}

_PARSERS: dict[str, tuple[str, Any]] = {
    "hwKeyValidationStrategy": ("hw_key_validation_strategy", HwKeyValidationStrategy.parse),
    "enabledRiskData": ("enabled_risk_data", _enum_list(RiskAttribute)),
    "activationCodeType": ("activation_code_type", ActivationCodeType),
    "allowedAuthMethods": ("allowed_auth_methods", _enum_list(AuthMethod)),
    **{wire: (name, _int) for name, (wire, _, _) in _INT_BOUNDS.items()},
}
