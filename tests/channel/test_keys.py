"""E2E keys (keybound.channel.keys)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from keybound import channel
from keybound.channel import (
    ChannelSuite,
    KeyState,
    KeyStorageError,
)
from keybound.channel import keys as channel_keys
from keybound.channel import suites as channel_suites
from tests.channel.support import (
    NOW,
    key_for,
)

# --------------------------------------------------------------------------- keys and storage


def test_generated_keys_are_consistent(suite: ChannelSuite) -> None:
    key = channel.generate_e2e_key(suite, now=NOW)
    kem = channel_suites._SUITES[suite].kem
    assert kem.public_from_private(key.private_key) == key.public_key
    assert key.state is KeyState.ACTIVE and key.created_at == NOW
    assert len(key.key_id) == 16 and channel.retire_e2e_key(key).state is KeyState.RETIRED
    assert channel.generate_e2e_key(now=NOW).suite is ChannelSuite.X25519_SHA256_AES128GCM


@pytest.mark.parametrize(
    "change",
    [
        {"key_id": "bad id"},
        {"key_id": "x" * 65},
        {"private_key": b"\x00"},
        {"public_key": b""},
        {"suite": "NOPE"},
        {"state": "lost"},
    ],
    ids=str,
)
def test_e2e_key_validates_itself(change: dict[str, Any]) -> None:
    with pytest.raises(KeyStorageError):
        replace(key_for(ChannelSuite.X25519_SHA256_AES128GCM), **change)


def test_key_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key id is typed on command lines (`keybound e2e-key pin ID`), where a leading '-'
    reads as an option; 1 in 64 random ids would start with one."""
    draws = iter([b"\xfb" + bytes(11), b"\x00" * 12])  # b64u: '-' first, then 'A' first
    monkeypatch.setattr(channel_keys.secrets, "token_bytes", lambda n: next(draws))
    assert channel.new_key_id() == "A" * 16
    monkeypatch.undo()
    assert not any(channel.new_key_id().startswith("-") for _ in range(2000))
