"""signed results and a tamper-evident audit trail (issue 16, items 1, 2 and 5)

- ``operations.result_jws``: the operation's signed result (docs/signed-results.md).
- ``result_keys``: the server's result-signing keys, private halves wrapped under the master
  key; they also sign the audit checkpoints.
- ``events.chain_seq`` / ``chain_prev`` / ``chain_hash``: the audit chain (docs/audit.md),
  with an index of the entries not sealed yet, and ``audit_head``, the chain's newest
  position and hash, starting at the genesis value (32 zero bytes). Entries written before
  this revision are sealed into the chain like new ones, oldest first, by the first seal.
- ``audit_checkpoints``: signed checkpoints of the chain (periodic, and where retention
  pruned a prefix).

A signature operation (operations.type ``SIGNATURE``) needs no schema change: its data to
sign is kept where a pre-operation context is.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _id_type() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("operations", sa.Column("result_jws", sa.Text(), nullable=True))
    op.add_column("events", sa.Column("chain_seq", sa.BigInteger(), nullable=True))
    op.add_column("events", sa.Column("chain_prev", sa.LargeBinary(length=32), nullable=True))
    op.add_column("events", sa.Column("chain_hash", sa.LargeBinary(length=32), nullable=True))
    op.create_index(
        "ix_events_unsealed",
        "events",
        ["seq"],
        unique=False,
        sqlite_where=sa.text("chain_hash IS NULL"),
        postgresql_where=sa.text("chain_hash IS NULL"),
    )
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("chain_seq", sa.BigInteger(), nullable=False),
        sa.Column("chain_hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.bulk_insert(head, [{"id": 1, "chain_seq": 0, "chain_hash": bytes(32)}])  # genesis
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", _id_type(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("chain_seq", sa.BigInteger(), nullable=False),
        sa.Column("chain_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("jws", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
    )
    op.create_index(
        "ix_audit_checkpoints_chain_seq", "audit_checkpoints", ["chain_seq"], unique=False
    )
    op.create_table(
        "result_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("public_jwk", sa.Text(), nullable=False),
        sa.Column("wrapped_private_key", sa.LargeBinary(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("retired_at", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_result_keys")),
    )


def downgrade() -> None:
    op.drop_table("result_keys")
    op.drop_index("ix_audit_checkpoints_chain_seq", table_name="audit_checkpoints")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_head")
    op.drop_index("ix_events_unsealed", table_name="events")
    _drop_column("events", "chain_hash")
    _drop_column("events", "chain_prev")
    _drop_column("events", "chain_seq")
    _drop_column("operations", "result_jws")


def _drop_column(table: str, column: str) -> None:
    if op.get_bind().dialect.name == "sqlite":  # native since SQLite 3.35; keeps the indexes
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    else:
        op.drop_column(table, column)
