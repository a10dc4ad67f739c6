"""A database at an older revision, for the migration tests: a fresh PostgreSQL database
(the ``postgres`` fixture's) taken down to it, or a new SQLite file brought up to it."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command

from keybound.storage.db import Database
from keybound.storage.migrations import alembic_config, upgrade

#: the backends every migration test runs on
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def database_at(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    revision: str,
    *,
    master_key: bytes | None = None,
) -> Database:
    if request.param == "postgres":
        db = Database(request.getfixturevalue("postgres").fresh_database())
        command.downgrade(alembic_config(db.engine, master_key=master_key), revision)
    else:
        db = Database(f"sqlite:///{tmp_path / 'kb.db'}")
        upgrade(db.engine, revision, master_key=master_key)
    return db
