"""Device profiles: what kind of device the SDK runs on, and whether it should have secure
hardware for a hardware key.

The profile travels to the server in the finish-activation request (risk data), and decides
on the device whether the SDK tries its hardware key store at all. The decision table
(:meth:`DeviceProfile.expects_secure_hardware`) mirrors what the platforms guarantee:

============  =====================================================================
platform      expects secure hardware
============  =====================================================================
ANDROID 7+    True (hardware-backed keystore is mandatory since Android 7)
ANDROID 6     True, unless ``hardware_keystore=False`` (most devices have a TEE)
ANDROID < 6   False
IOS 10+       ``secure_enclave`` (default True: every iPhone since the 5s has one)
IOS < 10      False
LINUX,        ``hardware_keystore``: True/False when known, ``None`` (the default)
WINDOWS,      leaves it to the device: a configured, available key store decides
MACOS
OTHER         False
============  =====================================================================

An ``os_version`` whose major number cannot be read gives ``None`` on Android and iOS too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pydantic import ValidationError

from keybound import protocol
from keybound.errors import ClientError, ErrorCode
from keybound.protocol import Platform

_MAJOR = re.compile(r"^(\d{1,4})(?:[._-]|$)")


@dataclass(frozen=True, kw_only=True)
class DeviceProfile:
    """What the device is. ``secure_enclave`` matters on iOS, ``hardware_keystore`` on
    Android 6 and the desktop platforms; ``None`` means "not known"."""

    platform: Platform
    os_version: str
    secure_enclave: bool | None = None
    hardware_keystore: bool | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        try:
            self.to_protocol()
        except ValidationError as exc:
            raise ClientError(
                f"invalid device profile: {exc.errors()[0]['msg']}",
                code=ErrorCode.CLIENT_CONFIGURATION,
            ) from None

    @property
    def os_major(self) -> int | None:
        """The major OS version, or None when ``os_version`` does not start with one."""
        match = _MAJOR.match(self.os_version)
        return int(match.group(1)) if match else None

    def expects_secure_hardware(self) -> bool | None:
        """True/False from the table in the module docstring; None: let the key store decide
        (the device uses a hardware key iff its configured key store is available)."""
        return _RULES[self.platform](self)

    def to_protocol(self) -> protocol.DeviceProfile:
        """The wire form sent in the finish-activation request."""
        return protocol.DeviceProfile(
            platform=self.platform, os_version=self.os_version, model=self.model
        )


def _android(profile: DeviceProfile) -> bool | None:
    major = profile.os_major
    if major is None:
        return None
    if major >= 7:
        return True
    if major == 6:
        return profile.hardware_keystore is not False
    return False


def _ios(profile: DeviceProfile) -> bool | None:
    major = profile.os_major
    if major is None:
        return None
    if major >= 10:
        return profile.secure_enclave is not False
    return False


def _desktop(profile: DeviceProfile) -> bool | None:
    return profile.hardware_keystore


def _other(profile: DeviceProfile) -> bool | None:
    return False


_RULES: Mapping[Platform, Callable[[DeviceProfile], bool | None]] = MappingProxyType(
    {
        Platform.ANDROID: _android,
        Platform.IOS: _ios,
        Platform.LINUX: _desktop,
        Platform.WINDOWS: _desktop,
        Platform.MACOS: _desktop,
        Platform.OTHER: _other,
    }
)

#: Named presets for tests, the demo and the CLI.
PROFILES: Mapping[str, DeviceProfile] = MappingProxyType(
    {
        "android-14": DeviceProfile(platform=Platform.ANDROID, os_version="14"),
        "android-6": DeviceProfile(platform=Platform.ANDROID, os_version="6.0.1"),
        "android-6-no-tee": DeviceProfile(
            platform=Platform.ANDROID, os_version="6.0.1", hardware_keystore=False
        ),
        "android-5": DeviceProfile(platform=Platform.ANDROID, os_version="5.1"),
        "ios-17": DeviceProfile(platform=Platform.IOS, os_version="17.4"),
        "ios-9": DeviceProfile(platform=Platform.IOS, os_version="9.3.5"),
        "linux": DeviceProfile(platform=Platform.LINUX, os_version="6.8"),
        "windows": DeviceProfile(platform=Platform.WINDOWS, os_version="10.0.22631"),
        "macos": DeviceProfile(platform=Platform.MACOS, os_version="14.5"),
        "other": DeviceProfile(platform=Platform.OTHER, os_version=""),
    }
)


def preset(name: str) -> DeviceProfile:
    """A named preset from :data:`PROFILES`; unknown names raise CLIENT_CONFIGURATION."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ClientError(
            f"unknown device profile {name!r} (known: {known})",
            code=ErrorCode.CLIENT_CONFIGURATION,
        ) from None
