"""seen_requests keyed by (expires_at, request_id): one B-tree per replay mark (issue 5)

The secure channel's replay mark was a primary key on ``request_id`` plus an index on
``expires_at`` for the purge: two B-trees written by every sealed request. A replay is the
same sealed bytes, so the same timestamp and, with the channel's fixed window, the same
expiry: a primary key of (expires_at, request_id) refuses it just the same, and, ordered by
expiry, is its own purge index. On SQLite the table stays WITHOUT ROWID (one B-tree in all).

A device-initiated authentication writes 12.5 WAL pages instead of 15.0 (one fewer per
commit); the handler's CPU per flow fell about 5 % (bench/server_path.py run side by side
with the 0003 layout, median of 4 pairs).
Every mark is kept across the rebuild in both directions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 02:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_COLUMNS = ("request_id", "expires_at")


def _create(name: str, key: list[str]) -> None:  # SQLite
    op.create_table(
        name,
        sa.Column("request_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*key, name=op.f("pk_seen_requests")),
        sqlite_with_rowid=False,
    )


def _rekey(*, by_expiry: bool) -> None:
    """SQLite cannot change a WITHOUT ROWID table's key in place: copy into a new table.
    PostgreSQL swaps the primary key constraint."""
    key = ["expires_at", "request_id"] if by_expiry else ["request_id"]
    if by_expiry:
        op.drop_index("ix_seen_requests_expires_at", table_name="seen_requests")
    if op.get_bind().dialect.name == "sqlite":
        _create("seen_requests_rebuilt", key)
        source = sa.table("seen_requests", *(sa.column(c) for c in _COLUMNS))
        target = sa.table("seen_requests_rebuilt", *(sa.column(c) for c in _COLUMNS))
        op.execute(sa.insert(target).from_select(_COLUMNS, sa.select(source)))
        op.drop_table("seen_requests")
        op.rename_table("seen_requests_rebuilt", "seen_requests")
    else:
        op.drop_constraint("pk_seen_requests", "seen_requests", type_="primary")
        op.create_primary_key("pk_seen_requests", "seen_requests", key)
    if not by_expiry:
        op.create_index(
            "ix_seen_requests_expires_at", "seen_requests", ["expires_at"], unique=False
        )


def upgrade() -> None:
    _rekey(by_expiry=True)


def downgrade() -> None:
    _rekey(by_expiry=False)
