"""Application configuration: defaults, validation, and the REQUIRED_IF_SUPPORTED alias."""

from __future__ import annotations

import pytest

from keybound.errors import ConfigurationInvalid, ErrorCode
from keybound.protocol import ActivationCodeType, AuthMethod, HwKeyValidationStrategy
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
    config = AppConfig().updated({"hwKeyValidationStrategy": "REQUIRED_IF_SUPPORTED",
                                  "allowedAuthMethods": "DEVICE:PIN",
                                  "enabledRiskData": []})
    assert config.hw_key_validation_strategy is HwKeyValidationStrategy.SUPPORTED
    assert config.allowed_auth_methods == (AuthMethod.DEVICE_PIN,)
    assert config.enabled_risk_data == ()


@pytest.mark.parametrize("changes", [
    {"activationCodeLength": 3}, {"activationCodeLength": "six"}, {"amountFailuresAllowed": 0},
    {"amountFailuresAllowed": True}, {"hwKeyValidationStrategy": "OPTIONAL"},
    {"activationCodeType": "ANY"}, {"allowedAuthMethods": []},
    {"allowedAuthMethods": ["DEVICE:FACE"]}, {"enabledRiskData": ["ipAddress"]},
    {"challengeLifetimeSeconds": 5}, {"noSuchSetting": 1},
])
def test_invalid_settings_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigurationInvalid) as info:
        AppConfig().updated(changes)
    assert info.value.code is ErrorCode.CONFIGURATION_INVALID


@pytest.mark.parametrize(("changes", "expected"), [
    ({"hwKeyValidationStrategy": "FOO"},
     "expected one of SUPPORTED, RISK_PARAMS, REQUIRED (REQUIRED_IF_SUPPORTED = SUPPORTED)"),
    ({"activationCodeType": "hex"}, "expected one of NUMERIC, ALPHA, ALPHANUMERIC"),
    ({"allowedAuthMethods": "PIN"}, "expected a comma-separated list of DEVICE, DEVICE:PIN"),
    ({"enabledRiskData": "ip"}, "expected a comma-separated list of hwKeyClientStatus, "
                                "hwKeyServerResult, softwareKeyCloneSuspected"),
    ({"challengeLifetimeSeconds": "two"}, "expected an integer from 10 to 3600"),
    ({"noSuchSetting": 1}, "the settings are hwKeyValidationStrategy, enabledRiskData"),
])
def test_a_refusal_says_what_the_setting_takes(changes: dict[str, object],
                                               expected: str) -> None:
    """Issue 14: an operator who mistypes a value is told the valid ones, not only that the
    value is invalid."""
    with pytest.raises(ConfigurationInvalid) as info:
        AppConfig().updated(changes)
    assert expected in info.value.detail
    assert info.value.fields["setting"] == next(iter(changes))
