"""Anonymous refusals, counted per window and cause (server.events.noise)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from keybound.server.records import NoiseRecord
from keybound.storage import tables as t

N = t.noise


def add_counts(conn: Connection, counts: Mapping[tuple[int, str], int]) -> None:
    """Add to the stored counts (one upsert per window and cause)."""
    insert: Any = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
    for (window_start, cause), count in counts.items():
        statement = insert(N).values(window_start=window_start, cause=cause, total=count)
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[N.c.window_start, N.c.cause],
                set_={"total": N.c.total + statement.excluded.total},
            )
        )


def since(conn: Connection, window_start: int) -> list[NoiseRecord]:
    rows = conn.execute(
        select(N).where(N.c.window_start >= window_start).order_by(N.c.window_start, N.c.cause)
    )
    return [NoiseRecord(*row) for row in rows]
