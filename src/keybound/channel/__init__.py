"""Secure channel: HPKE-sealed device-API requests and AEAD-sealed responses.

Every device-API request is sealed with HPKE (RFC 9180, base mode) to a server "E2E key" that
the app pins by key id; the request carries a fresh response key, and the response is sealed
under it with the suite's AEAD. ``docs/channel.md`` is the normative description; section
numbers in comments refer to it. Shared by the server and the SDK:

- :mod:`~keybound.channel.framing`: constants, length-prefixed fields, plaintext layouts
- :mod:`~keybound.channel.suites`: the HPKE suites (KEM, KDF, AEAD) on the allow-list
- :mod:`~keybound.channel.keys`: E2E key pairs
- :mod:`~keybound.channel.pin`: the pin an app ships
- :mod:`~keybound.channel.seal`: sealing and opening requests and responses
- :mod:`~keybound.channel.replay`: the replay guard's interface

Every failure to open a sealed request or response -- unknown or retired key, altered or
truncated bytes, a timestamp outside the window, a replay -- raises the one
:class:`DecryptionFailed`, with the same code and the same message (no oracle, §5).
"""

from keybound.channel.errors import DecryptionFailed, InvalidPin, KeyStorageError
from keybound.channel.framing import (
    CHANNEL_VERSION,
    DEFAULT_WINDOW_SECONDS,
    MAX_KEY_ID_LENGTH,
    NONCE_SIZE,
    REQUEST_ID_SIZE,
    RESPONSE_KEY_SIZE,
    SEALED_MEDIA_TYPE,
    TAG_SIZE,
    OpenedResponse,
)
from keybound.channel.keys import E2EKey, KeyState, generate_e2e_key, new_key_id, retire_e2e_key
from keybound.channel.pin import ChannelPin, export_pin
from keybound.channel.replay import InMemoryReplayGuard, ReplayGuard
from keybound.channel.seal import (
    OpenedRequest,
    ResponseOpener,
    open_request,
    request_info,
    request_key_id,
    seal_request,
    seal_response,
)
from keybound.channel.suites import DEFAULT_SUITE, ChannelSuite, suite_id

__all__ = [
    "CHANNEL_VERSION",
    "DEFAULT_SUITE",
    "DEFAULT_WINDOW_SECONDS",
    "MAX_KEY_ID_LENGTH",
    "NONCE_SIZE",
    "REQUEST_ID_SIZE",
    "RESPONSE_KEY_SIZE",
    "SEALED_MEDIA_TYPE",
    "TAG_SIZE",
    "ChannelPin",
    "ChannelSuite",
    "DecryptionFailed",
    "E2EKey",
    "InMemoryReplayGuard",
    "InvalidPin",
    "KeyState",
    "KeyStorageError",
    "OpenedRequest",
    "OpenedResponse",
    "ReplayGuard",
    "ResponseOpener",
    "export_pin",
    "generate_e2e_key",
    "new_key_id",
    "open_request",
    "request_info",
    "request_key_id",
    "retire_e2e_key",
    "seal_request",
    "seal_response",
    "suite_id",
]
