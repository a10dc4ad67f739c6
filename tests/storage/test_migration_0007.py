"""Revision 0007 (issue 16): signed results and the audit chain. Entries written before it
are sealed into the chain like new ones, oldest first, when the server first opens the
database. Down and up again keep every row. On SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, text

from keybound.server.events.chain import GENESIS
from keybound.server.services import Keybound
from keybound.storage.db import Database
from keybound.storage.migrations import alembic_config, upgrade


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url_before_0007(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres").fresh_database()
        db = Database(url)
        command.downgrade(alembic_config(db.engine), "0006")
    else:
        url = f"sqlite:///{tmp_path / 'kb.db'}"
        db = Database(url)
        upgrade(db.engine, "0006")
    with db.engine.begin() as conn:
        for n in range(3):
            conn.execute(
                text(
                    "INSERT INTO events (id, type, actor, outcome, created_at) "
                    "VALUES (:id, 'application.create', 'OPERATOR', 'SUCCESS', :at)"
                ),
                {"id": f"00000000-0000-4000-8000-00000000000{n}", "at": 1000 + n},
            )
    db.dispose()
    return url


def test_entries_older_than_the_chain_are_sealed_into_it(
    url_before_0007: str, tmp_path: Path
) -> None:
    kb = Keybound.open(url_before_0007, master_key_file=tmp_path / "master.key")  # migrates
    try:
        with kb.db.read() as conn:
            rows = conn.execute(
                text("SELECT seq, type, chain_seq, chain_prev FROM events ORDER BY chain_seq")
            ).all()
        assert rows[0].chain_prev == GENESIS
        assert [r.chain_seq for r in rows] == list(range(1, len(rows) + 1))
        older = [r.seq for r in rows if r.type == "application.create"]
        assert older == sorted(older) and len(older) == 3  # sealed oldest first
        kb.admin.create_application("bank")
        verified = kb.admin.audit_verify()
        assert (verified.unsealed, verified.entries) == (0, len(rows) + 1)
    finally:
        kb.close()


def test_downgrade_and_upgrade_keep_every_row(url_before_0007: str) -> None:
    db = Database(url_before_0007)
    upgrade(db.engine, "0007")
    command.downgrade(alembic_config(db.engine), "0006")
    names = set(inspect(db.engine).get_table_names())
    assert not {"result_keys", "audit_checkpoints", "audit_head"} & names
    assert "chain_hash" not in {c["name"] for c in inspect(db.engine).get_columns("events")}
    assert "result_jws" not in {c["name"] for c in inspect(db.engine).get_columns("operations")}
    upgrade(db.engine, "0007")
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM events")).scalar() == 3
    db.dispose()
