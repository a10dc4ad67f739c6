"""Alembic migrations, run programmatically (``Database.migrate``) or with ``keybound db``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

HERE = Path(__file__).parent


def alembic_config(engine: Engine | None = None, *, master_key: bytes | None = None) -> Config:
    """``master_key``: for revisions that re-wrap secrets at rest (0005)."""
    cfg = Config()
    if master_key is not None:
        cfg.attributes["master_key"] = master_key
    cfg.set_main_option("script_location", str(HERE))
    if engine is not None:
        cfg.attributes["engine"] = engine
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def upgrade(engine: Engine, revision: str = "head", *, master_key: bytes | None = None) -> None:
    command.upgrade(alembic_config(engine, master_key=master_key), revision)
