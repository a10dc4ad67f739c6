"""Replay protection's interface, and a single-process guard (docs/channel.md §6)."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Protocol

from keybound.channel.errors import DecryptionFailed


class ReplayGuard(Protocol):
    """Remembers request ids until they expire; refuses one seen before (§6)."""

    def check_and_remember(self, request_id: bytes, expires_at: int) -> None:
        """Record ``request_id`` until ``expires_at`` (Unix seconds), atomically, or raise
        DecryptionFailed if it is already recorded."""
        ...


class InMemoryReplayGuard:
    """A single-process :class:`ReplayGuard`. Fails closed (refuses) when full."""

    def __init__(
        self, *, clock: Callable[[], int] | None = None, max_entries: int = 1_000_000
    ) -> None:
        self._clock = clock or (lambda: int(time.time()))
        self._max_entries = max_entries
        self._seen: dict[bytes, int] = {}
        self._expiry: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_remember(self, request_id: bytes, expires_at: int) -> None:
        with self._lock:
            self._forget_expired(self._clock())
            if request_id in self._seen or len(self._seen) >= self._max_entries:
                raise DecryptionFailed()
            self._seen[request_id] = expires_at
            heapq.heappush(self._expiry, (expires_at, request_id))

    def _forget_expired(self, now: int) -> None:
        while self._expiry and self._expiry[0][0] < now:
            expires_at, request_id = heapq.heappop(self._expiry)
            if self._seen.get(request_id) == expires_at:
                del self._seen[request_id]
