"""Revision 0008 (issue 15): the attestation columns of registrations and the TPM credential
state of operations, added and dropped with every row kept, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, text

from keybound.storage.db import Database
from keybound.storage.migrations import alembic_config, upgrade
from tests.storage.migrating import BACKENDS, database_at

NEW = {
    "registrations": {"hw_attestation", "hw_security_level", "hw_counter"},
    "operations": {"wrapped_tpm_credential"},
}


@pytest.fixture(params=BACKENDS)
def db_at_0007(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    db = database_at(request, tmp_path, "0007")
    yield db
    db.dispose()


def columns(db: Database, table: str) -> set[str]:
    return {column["name"] for column in inspect(db.engine).get_columns(table)}


def test_0008_adds_the_columns_keeps_the_rows_and_goes_back(db_at_0007: Database) -> None:
    db = db_at_0007
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO applications VALUES ('app', '{}', 0, 0)"))
        conn.execute(
            text("INSERT INTO users (id, application_id, created_at) VALUES ('u', 'app', 0)")
        )
        conn.execute(
            text(
                "INSERT INTO registrations (id, application_id, user_id, state, failures, "
                "sw_public_key, sw_key_id, activation_hw_status, platform, os_version, "
                "generation, created_at, activated_at, updated_at) VALUES ('dev-1', 'app', 'u', "
                "'ACTIVE', 0, :one, :one, 'OK', 'IOS', '17', 1, 0, 0, 0)"
            ),
            {"one": b"\x01"},
        )
        conn.execute(
            text(
                "INSERT INTO operations (id, application_id, type, initiator, state, expires_at, "
                "config, created_at) VALUES ('op-1', 'app', 'ACTIVATION', 'BACKEND', 'PENDING', "
                "10, '{}', 0)"
            )
        )
    assert not NEW["registrations"] & columns(db, "registrations")
    upgrade(db.engine, "0008")
    assert NEW["registrations"] <= columns(db, "registrations")
    assert NEW["operations"] <= columns(db, "operations")
    with db.engine.begin() as conn:
        # rows from before read as nothing recorded (NOT_PROVIDED), no counter, no state
        assert tuple(
            conn.execute(
                text("SELECT hw_attestation, hw_security_level, hw_counter FROM registrations")
            ).one()
        ) == (None, None, None)
        conn.execute(
            text(
                "UPDATE registrations SET hw_attestation = 'VERIFIED', "
                "hw_security_level = 'SECURE_ENCLAVE', hw_counter = 4294967296"
            )
        )
        conn.execute(text("UPDATE operations SET wrapped_tpm_credential = :w"), {"w": b"\x02w"})
        assert (
            conn.execute(text("SELECT hw_counter FROM registrations")).scalar_one() == 2**32
        )  # BIGINT: App Attest counters are u32, with room
    command.downgrade(alembic_config(db.engine), "0007")
    assert not NEW["registrations"] & columns(db, "registrations")
    assert not NEW["operations"] & columns(db, "operations")
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT platform FROM registrations")).scalar_one() == "IOS"
        assert conn.execute(text("SELECT id FROM operations")).scalar_one() == "op-1"
    upgrade(db.engine, "0008")  # and up again
    assert NEW["registrations"] <= columns(db, "registrations")
