"""Time, injectable: services read it through a :data:`Clock`, so tests move it instead of
sleeping. Stored times are integer milliseconds since the epoch (UTC)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], float]  # Unix seconds


def wall_clock() -> float:
    return time.time()


def now_ms(clock: Clock) -> int:
    return int(clock() * 1000)


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
