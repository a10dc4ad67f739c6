"""Device profiles: the secure-hardware expectation table and the wire mapping."""

from __future__ import annotations

import pytest

from keybound import protocol
from keybound.client.profiles import PROFILES, DeviceProfile, preset
from keybound.errors import ClientError, ErrorCode
from keybound.protocol import Platform

A, IOS, L = Platform.ANDROID, Platform.IOS, Platform.LINUX

# (platform, os_version, secure_enclave, hardware_keystore) -> expects_secure_hardware()
TABLE = [
    # Android 7+: all devices have a hardware-backed keystore
    (A, "7.0", None, None, True),
    (A, "14", None, None, True),
    (A, "14", None, False, True),
    # Android 6: most do, unless known not to
    (A, "6.0.1", None, None, True),
    (A, "6", None, True, True),
    (A, "6.0", None, False, False),
    # Android < 6: no
    (A, "5.1.1", None, None, False),
    (A, "4.4", None, True, False),
    # iOS 10+: iff it has a Secure Enclave (default yes)
    (IOS, "10.0", None, None, True),
    (IOS, "17.4", True, None, True),
    (IOS, "17.4", False, None, False),
    # iOS < 10: no
    (IOS, "9.3.5", None, None, False),
    (IOS, "9", True, None, False),
    # Desktop: left to the configured key store unless known
    (L, "6.8", None, None, None),
    (L, "6.8", None, True, True),
    (L, "6.8", None, False, False),
    (Platform.WINDOWS, "10.0.22631", None, None, None),
    (Platform.MACOS, "14.5", None, True, True),
    # Other: no
    (Platform.OTHER, "1.0", None, True, False),
    # Unreadable version on a mobile platform: let the store decide
    (A, "beta", None, None, None),
    (IOS, "", None, None, None),
]


@pytest.mark.parametrize(("platform", "version", "enclave", "keystore", "expected"), TABLE)
def test_expects_secure_hardware_table(
    platform: Platform,
    version: str,
    enclave: bool | None,
    keystore: bool | None,
    expected: bool | None,
) -> None:
    profile = DeviceProfile(
        platform=platform, os_version=version, secure_enclave=enclave, hardware_keystore=keystore
    )
    assert profile.expects_secure_hardware() is expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("android-14", True),
        ("android-6", True),
        ("android-6-no-tee", False),
        ("android-5", False),
        ("ios-17", True),
        ("ios-9", False),
        ("linux", None),
        ("other", False),
    ],
)
def test_presets(name: str, expected: bool | None) -> None:
    assert preset(name).expects_secure_hardware() is expected


def test_every_preset_maps_to_the_wire() -> None:
    for profile in PROFILES.values():
        wire = profile.to_protocol()
        assert isinstance(wire, protocol.DeviceProfile)
        assert wire.platform is profile.platform
        assert wire.os_version == profile.os_version


def test_wire_form_carries_model_and_omits_local_hints() -> None:
    profile = DeviceProfile(platform=A, os_version="14", model="Pixel 8", hardware_keystore=True)
    assert profile.to_protocol().to_wire() == {
        "platform": "ANDROID",
        "osVersion": "14",
        "model": "Pixel 8",
    }


def test_profile_is_frozen_and_keyword_only() -> None:
    profile = preset("linux")
    with pytest.raises(AttributeError):
        profile.os_version = "7"  # type: ignore[misc]
    with pytest.raises(TypeError):
        DeviceProfile(A, "14")  # type: ignore[call-arg]


def test_invalid_os_version_is_a_configuration_error() -> None:
    with pytest.raises(ClientError) as info:
        DeviceProfile(platform=A, os_version="14 beta/2")
    assert info.value.code is ErrorCode.CLIENT_CONFIGURATION


def test_unknown_preset() -> None:
    with pytest.raises(ClientError) as info:
        preset("nokia-3310")
    assert info.value.code is ErrorCode.CLIENT_CONFIGURATION
