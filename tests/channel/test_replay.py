"""Replay protection's interface and the in-memory guard (keybound.channel.replay)."""

from __future__ import annotations

import os
import threading

import pytest

from keybound import channel
from keybound.channel import (
    DecryptionFailed,
    E2EKey,
    InMemoryReplayGuard,
    ResponseOpener,
)
from tests.channel.support import (
    NOW,
    assert_all_refused,
    open_with,
)

# --------------------------------------------------------------------------- replay


def test_replay_is_refused_by_the_guard(key: E2EKey, sealed: tuple[bytes, ResponseOpener]) -> None:
    wire, _ = sealed
    guard = InMemoryReplayGuard(clock=lambda: NOW)
    first = open_with(key, wire)
    guard.check_and_remember(first.request_id, first.replay_expires_at)
    again = open_with(key, wire)  # opening is pure; the guard is the replay check (§6)
    assert_all_refused(
        iter([lambda: guard.check_and_remember(again.request_id, again.replay_expires_at)])
    )


def test_replay_guard_forgets_expired_ids() -> None:
    now = [NOW]
    guard = InMemoryReplayGuard(clock=lambda: now[0])
    guard.check_and_remember(b"a" * 16, NOW + 10)
    guard.check_and_remember(b"b" * 16, NOW + 20)
    now[0] = NOW + 11
    guard.check_and_remember(b"c" * 16, NOW + 30)
    assert len(guard) == 2
    guard.check_and_remember(b"a" * 16, NOW + 40)  # expired, so no longer remembered
    with pytest.raises(DecryptionFailed):
        guard.check_and_remember(b"b" * 16, NOW + 40)


def test_replay_guard_fails_closed_when_full() -> None:
    guard = InMemoryReplayGuard(clock=lambda: NOW, max_entries=2)
    guard.check_and_remember(b"a" * 16, NOW + 10)
    guard.check_and_remember(b"b" * 16, NOW + 10)
    with pytest.raises(DecryptionFailed):
        guard.check_and_remember(b"c" * 16, NOW + 10)


def test_replay_guard_admits_one_of_many_concurrent_uses() -> None:
    guard = InMemoryReplayGuard(clock=lambda: NOW)
    outcomes: list[bool] = []
    barrier = threading.Barrier(16)

    def use() -> None:
        barrier.wait()
        try:
            guard.check_and_remember(b"r" * 16, NOW + 60)
            outcomes.append(True)
        except DecryptionFailed:
            outcomes.append(False)

    threads = [threading.Thread(target=use) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [False] * 15 + [True]


def test_in_memory_guard_satisfies_protocol() -> None:
    """InMemoryReplayGuard is a ReplayGuard (mypy checks the assignment) and keeps the
    protocol's contract: a new id is recorded, the same id again is refused."""
    guard: channel.ReplayGuard = InMemoryReplayGuard(clock=lambda: NOW)
    request_id = os.urandom(16)
    guard.check_and_remember(request_id, NOW + 60)
    with pytest.raises(DecryptionFailed):
        guard.check_and_remember(request_id, NOW + 60)
    guard.check_and_remember(os.urandom(16), NOW + 60)
