"""Revision 0006 (issue 14): activation secrets move to their own table as keyed hashes;
the unsalted ``operations.code_hash`` goes. Codes pending from before cannot be converted
(the user holds no hint, the hash is not keyed) and are invalidated -- FAILED with
``activation_code_invalid`` -- while every other operation is kept as it was; downgrading does
the same to activations issued since. On SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, text

from keybound.storage.db import Database
from keybound.storage.migrations import alembic_config, upgrade
from tests.storage.migrating import BACKENDS, database_at

MASTER = bytes(range(32))
HOUR = 3_600_000


@pytest.fixture(params=BACKENDS)
def db_at_0005(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    db = database_at(request, tmp_path, "0005", master_key=MASTER)
    yield db
    db.dispose()


def _operation(
    conn: Any,
    op_id: str,
    *,
    type_: str = "ACTIVATION",
    state: str = "PENDING",
    expires_at: int,
    **extra: Any,
) -> None:
    columns = {
        "id": op_id,
        "application_id": "app",
        "type": type_,
        "initiator": "BACKEND",
        "state": state,
        "user_id": "u",
        "device_id": f"dev-{op_id}",
        "expires_at": expires_at,
        "config": "{}",
        "created_at": 0,
        **extra,
    }
    conn.execute(
        text(
            f"INSERT INTO operations ({', '.join(columns)}) "
            f"VALUES ({', '.join(':' + c for c in columns)})"
        ),
        columns,
    )


def _operations(db: Database) -> dict[str, tuple[str, Any]]:
    with db.engine.connect() as conn:
        return {
            r.id: (r.state, json.loads(r.result) if r.result else None)
            for r in conn.execute(text("SELECT id, state, result FROM operations"))
        }


def test_0006_invalidates_old_codes_keeps_the_rest_and_goes_back(db_at_0005: Database) -> None:
    db = db_at_0005
    now = int(time.time() * 1000)
    old_hash = hashlib.sha256(b"app\x00483920").digest()  # the format being retired
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO applications VALUES ('app', '{}', 0, 0)"))
        conn.execute(
            text("INSERT INTO users (id, application_id, created_at) VALUES ('u', 'app', 0)")
        )
        _operation(conn, "pending-code", expires_at=now + HOUR, code_hash=old_hash)
        _operation(
            conn,
            "pending-reactivation",
            type_="REACTIVATION",
            expires_at=now + HOUR,
            code_hash=hashlib.sha256(b"app\x00111111").digest(),
        )
        _operation(
            conn,
            "expired-code",
            expires_at=now - HOUR,
            code_hash=hashlib.sha256(b"app\x00222222").digest(),
        )
        _operation(
            conn,
            "started",
            expires_at=now + HOUR,
            challenge=b"c" * 32,
            challenge_expires_at=now + HOUR,
        )
        _operation(conn, "auth", type_="AUTHENTICATION", expires_at=now + HOUR)
        _operation(
            conn, "done", state="COMPLETED", expires_at=now - HOUR, completed_at=1, result="{}"
        )
    before = _operations(db)

    upgrade(db.engine, "0006", master_key=MASTER)
    after = _operations(db)
    invalidated = ("FAILED", {"failureCode": "activation_code_invalid"})
    assert after["pending-code"] == after["pending-reactivation"] == invalidated
    for kept in ("expired-code", "started", "auth", "done"):  # reads EXPIRED as before, ...
        assert after[kept] == before[kept]
    inspector = inspect(db.engine)
    assert "code_hash" not in {c["name"] for c in inspector.get_columns("operations")}
    assert "ix_operations_code" not in {i["name"] for i in inspector.get_indexes("operations")}
    with db.engine.connect() as conn:  # (the head matching tables.py: tests/storage/test_db.py)
        assert conn.execute(text("SELECT count(*) FROM activation_secrets")).scalar() == 0

    # an activation issued under 0006, not started, then a downgrade
    with db.engine.begin() as conn:
        _operation(conn, "new", expires_at=now + HOUR)
        conn.execute(
            text(
                "INSERT INTO activation_secrets (operation_id, application_id, token_hash, hint, "
                "code_hash, attempts_left, expires_at) VALUES ('new', 'app', :t, 'ABCDEF', :c, 5, "
                ":e)"
            ),
            {"t": b"t" * 32, "c": b"c" * 32, "e": now + HOUR},
        )
    command.downgrade(alembic_config(db.engine, master_key=MASTER), "0005")
    back = _operations(db)
    assert back["new"] == invalidated
    assert {k: v for k, v in back.items() if k != "new"} == after
    inspector = inspect(db.engine)
    assert "activation_secrets" not in inspector.get_table_names()
    assert "code_hash" in {c["name"] for c in inspector.get_columns("operations")}
    assert "ix_operations_code" in {i["name"] for i in inspector.get_indexes("operations")}
    upgrade(db.engine, "0006", master_key=MASTER)  # and up again
