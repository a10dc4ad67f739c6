"""The keybound device SDK: a :class:`Device` activates against a keybound server and then
authenticates with a rotating software key and, where it has secure hardware, a hardware key.

    import httpx
    from keybound.client import Device, Transport, open_keystore, preset

    transport = Transport(httpx.Client(base_url="https://auth.example.com"))
    device = Device.create(
        "~/.keybound/device", application_id="demo", transport=transport,
        profile=preset("linux"), hardware=open_keystore("tpm", "~/.keybound/device"),
    )
    device.activate("ABCD1234", pin="2468")
    result = device.authenticate(pin="2468")
"""

from keybound.client.device import (
    ActivationResult,
    Approve,
    AuthenticationResult,
    Device,
    OperationDeclined,
    PendingOperation,
)
from keybound.client.keystores import KeyHandle, KeyStore, open_keystore
from keybound.client.profiles import PROFILES, DeviceProfile, preset
from keybound.client.transport import Transport, outcome_unknown

__all__ = [
    "PROFILES",
    "ActivationResult",
    "Approve",
    "AuthenticationResult",
    "Device",
    "DeviceProfile",
    "KeyHandle",
    "KeyStore",
    "OperationDeclined",
    "PendingOperation",
    "Transport",
    "open_keystore",
    "outcome_unknown",
    "preset",
]
