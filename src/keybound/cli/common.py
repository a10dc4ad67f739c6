"""What the CLI's commands share."""

from __future__ import annotations

import argparse

from keybound.storage import ENV_DATABASE_URL

DATABASE_URL_HELP = (
    f"database URL: sqlite:///path/keybound.db or postgresql+psycopg://user:password@host/db "
    f"(default: ${ENV_DATABASE_URL}, else an embedded SQLite file at ~/.keybound/keybound.db, "
    "created on first use); before or after the command"
)


def with_database_option(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--database-url`` accepted after the command too (``keybound serve --database-url
    ...``); SUPPRESS, so a value given before the command is not overwritten."""
    parser.add_argument("--database-url", default=argparse.SUPPRESS, help=DATABASE_URL_HELP)
    return parser


def positive(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
