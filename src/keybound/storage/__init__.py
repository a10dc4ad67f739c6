"""Storage: SQLite (embedded default) or PostgreSQL, through SQLAlchemy Core and Alembic.

This module itself imports nothing heavy: the CLI reads these names without the server's
dependencies installed."""

from __future__ import annotations

from pathlib import Path

DEFAULT_DATA_DIR = Path.home() / ".keybound"
#: where ``keybound serve`` and the CLI take the database URL from when no flag gives it
ENV_DATABASE_URL = "KEYBOUND_DATABASE_URL"


def default_database_url() -> str:
    return f"sqlite:///{DEFAULT_DATA_DIR / 'keybound.db'}"
