"""Revision 0009 (issue 16): the outbox's and device notifications' tables and the two partial
indexes, up and down on SQLite and PostgreSQL, matching tables.py, with existing rows kept
(and an EXPIRED the new maintenance stored given back as the PENDING older code derives it
from)."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from keybound.storage.db import Database
from keybound.storage.migrations import alembic_config, upgrade
from keybound.storage.tables import metadata

NEW_TABLES = {
    "webhook_endpoints",
    "webhook_secrets",
    "webhook_subscriptions",
    "webhook_deliveries",
    "webhook_attempts",
    "push_providers",
    "push_tokens",
    "push_notifications",
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'kb.db'}")
        upgrade(database.engine)
    else:
        database = Database(request.getfixturevalue("postgres").fresh_database())
    yield database
    database.dispose()


def _indexes(db: Database, table: str) -> set[str | None]:
    return {ix["name"] for ix in inspect(db.engine).get_indexes(table)}


def test_0009_up_and_down_keeps_the_rows_it_finds(db: Database) -> None:
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    assert set(inspect(db.engine).get_table_names()) >= NEW_TABLES
    assert "ix_events_delivery_pending" in _indexes(db, "events")
    assert "ix_operations_backend_expiry" in _indexes(db, "operations")
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO applications VALUES ('bank', '{}', 0, 0)"))
        conn.execute(
            text(
                "INSERT INTO operations (id, application_id, type, initiator, state, expires_at, "
                "config, created_at) VALUES ('op', 'bank', 'AUTHENTICATION', 'BACKEND', "
                "'EXPIRED', 1, '{}', 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO events (id, type, application_id, actor, outcome, created_at, "
                "delivery) VALUES ('e1', 'device.locked', 'bank', 'OPERATOR', 'SUCCESS', 0, "
                "'PENDING')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO webhook_endpoints VALUES ('ep', 'bank', 'https://x.example/h', '', "
                "0, 0, NULL, NULL, 0, NULL)"
            )
        )
    command.downgrade(alembic_config(db.engine), "0008")
    assert not NEW_TABLES & set(inspect(db.engine).get_table_names())
    assert "ix_events_delivery_pending" not in _indexes(db, "events")
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT state FROM operations")).scalar() == "PENDING"
        assert conn.execute(text("SELECT type, delivery FROM events")).one() == (
            "device.locked",
            None,
        )
    upgrade(db.engine)
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        assert conn.execute(text("SELECT count(*) FROM webhook_endpoints")).scalar() == 0
