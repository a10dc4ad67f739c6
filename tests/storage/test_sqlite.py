"""The embedded database file (storage/sqlite.py): private whatever the umask (issue 14,
defect 6: they were created 0644 when the operator gave the directory)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy import text

from keybound.storage.db import Database


def modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}


def test_database_wal_shm_and_lock_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        db = Database(f"sqlite:///{tmp_path / 'kb.db'}")
        db.migrate()
        with db.write() as conn:  # the WAL and the shared-memory file exist from here on
            conn.execute(text("CREATE TABLE probe (x INTEGER)"))
        with db.read() as conn:
            conn.execute(text("SELECT 1")).all()
        found = modes(tmp_path)
        db.dispose()
    finally:
        os.umask(old)
    assert {"kb.db", "kb.db-wal", "kb.db-shm", "kb.db-lock"} <= set(found)
    assert all(mode == 0o600 for mode in found.values()), found


def test_an_existing_readable_database_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "kb.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    db.dispose()
    for name in ("kb.db", "kb.db-wal", "kb.db-shm"):
        if (tmp_path / name).exists():
            (tmp_path / name).chmod(0o644)
    Database(f"sqlite:///{path}").dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
