"""The channel's errors (docs/channel.md §5, §8, §9)."""

from __future__ import annotations

from keybound.errors import ErrorCode, KeyboundError


class DecryptionFailed(KeyboundError):
    """The one error for every failure to open a sealed request or response (§5).

    It takes no arguments on purpose: every cause yields the same code and the same message.
    """

    code = ErrorCode.DECRYPTION_FAILED

    def __init__(self) -> None:
        super().__init__("the sealed message could not be opened")


class InvalidPin(KeyboundError):
    """A channel pin (the app developer's configuration) is malformed (§8)."""

    code = ErrorCode.CLIENT_CONFIGURATION


class KeyStorageError(KeyboundError):
    """An E2E key, a wrapped key or the master key file is unusable (§9)."""

    code = ErrorCode.CONFIGURATION_INVALID
