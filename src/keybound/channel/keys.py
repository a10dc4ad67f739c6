"""The server's E2E key pairs as the channel sees them (docs/channel.md §7)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property

from keybound.channel.errors import KeyStorageError
from keybound.channel.framing import _KEY_ID_RE
from keybound.channel.suites import _SUITES, DEFAULT_SUITE, ChannelSuite, _HpkePrivate
from keybound.protocol import b64u_encode


class KeyState(StrEnum):
    ACTIVE = "active"  # opens requests
    RETIRED = "retired"  # kept for the record; every request to it fails (§7)


@dataclass(frozen=True, kw_only=True)
class E2EKey:
    """A server E2E key pair. ``created_at`` is Unix seconds."""

    key_id: str
    suite: ChannelSuite
    private_key: bytes = field(repr=False, compare=False)
    public_key: bytes
    state: KeyState
    created_at: int

    def __post_init__(self) -> None:
        if self.suite not in _SUITES or self.state not in set(KeyState):
            raise KeyStorageError("E2E key has an unknown suite or state")
        kem = _SUITES[self.suite].kem
        if not isinstance(self.key_id, str) or not _KEY_ID_RE.fullmatch(self.key_id):
            raise KeyStorageError("E2E key id must be 1-64 base64url characters")
        if len(self.private_key) != kem.private_size or len(self.public_key) != kem.public_size:
            raise KeyStorageError(f"E2E key sizes do not match suite {self.suite}")

    @cached_property
    def _hpke_private(self) -> _HpkePrivate:
        return _SUITES[self.suite].kem.load_private(self.private_key)


def new_key_id() -> str:
    """A fresh random key id: 12 random bytes, 16 base64url characters, never starting with
    ``-`` (one in 64 would, and on a command line -- ``keybound e2e-key pin ID`` -- it would
    read as an option)."""
    while True:
        key_id = b64u_encode(secrets.token_bytes(12))
        if not key_id.startswith("-"):
            return key_id


def generate_e2e_key(suite: ChannelSuite = DEFAULT_SUITE, *, now: int) -> E2EKey:
    """Generate a new ACTIVE E2E key for ``suite`` with a fresh random key id."""
    kem = _SUITES[suite].kem
    private = kem.generate()
    return E2EKey(
        key_id=new_key_id(),
        suite=suite,
        private_key=private,
        public_key=kem.public_from_private(private),
        state=KeyState.ACTIVE,
        created_at=now,
    )


def retire_e2e_key(key: E2EKey) -> E2EKey:
    """The same key in state RETIRED: it no longer opens any request (§7)."""
    return replace(key, state=KeyState.RETIRED)
