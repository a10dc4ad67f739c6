"""The keybound device SDK: a :class:`Device` activates against a keybound server and then
authenticates with a rotating software key and, where it has secure hardware, a hardware key.
Every request goes through the secure channel, sealed to the server E2E key the app pins
(docs/channel.md):

    from keybound.client import open_device, open_keystore, preset

    device = open_device(
        "~/.keybound/device",  # the default; `keybound device` uses the same directory
        channel_pin="bank.pin",  # the server's E2E key pin (string or file): the channel
        profile=preset("linux"), hardware=open_keystore("tpm", "~/.keybound/device"),
    )
    device.activate(LINK, pin="2468")  # the activation link, or "HINT-CODE" as typed; pin:
                                       # the user's PIN (DEVICE:PIN)
    result = device.authenticate(pin="2468")
"""

from keybound.client.config import DEFAULT_STATE_DIR
from keybound.client.device import (
    ActivationResult,
    Approve,
    AuthenticationResult,
    Device,
    OperationDeclined,
    PendingOperation,
)
from keybound.client.factory import open_device
from keybound.client.keystores import KeyHandle, KeyStore, open_keystore
from keybound.client.profiles import PROFILES, DeviceProfile, preset
from keybound.client.sealed import SealedTransport, load_pin
from keybound.client.transport import Transport, outcome_unknown

__all__ = [
    "DEFAULT_STATE_DIR",
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
    "SealedTransport",
    "Transport",
    "load_pin",
    "open_device",
    "open_keystore",
    "outcome_unknown",
    "preset",
]
