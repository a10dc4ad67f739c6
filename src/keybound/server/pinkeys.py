"""PIN keys at rest (docs/protocol.md §5): wrapped with AES-256-GCM under a key derived from
the server's master key, bound to the registration they belong to.

A PIN key is password-equivalent for the server's check, so a copy of the database alone
(a backup, a replica) must not yield it; a wrapped key also cannot be moved to another
registration (the registration id is the associated data).
"""

from __future__ import annotations

import secrets
from functools import cached_property

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keybound.errors import ErrorCode, KeyboundError
from keybound.server.e2ekeys import MasterKey

_INFO = b"keybound pin-key wrapping v1"
_NONCE = 12


class PinKeys:
    def __init__(self, master_key: MasterKey) -> None:
        self._master_key = master_key

    @cached_property
    def _aead(self) -> AESGCM:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=_INFO).derive(self._master_key.get())
        return AESGCM(key)

    def wrap(self, registration_id: str, pin_key: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aead.encrypt(nonce, pin_key, registration_id.encode())

    def unwrap(self, registration_id: str, wrapped: bytes) -> bytes:
        """The PIN key; a blob that does not open (another master key, another registration,
        corruption) is a server-side fault, never the caller's."""
        try:
            return self._aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:],
                                      registration_id.encode())
        except (InvalidTag, ValueError) as exc:
            raise KeyboundError("stored PIN key does not open under this server's master key",
                                code=ErrorCode.INTERNAL) from exc
