"""the outbox: webhook endpoints, secrets, subscriptions, deliveries, attempts; push (issue 16)

- ``webhook_endpoints``, ``webhook_secrets`` (wrapped under the master key),
  ``webhook_subscriptions``, ``webhook_deliveries`` (one per event and endpoint) and
  ``webhook_attempts`` (the delivery log);
- ``ix_events_delivery_pending``: the events an endpoint subscribed to, not yet fanned out;
- ``ix_operations_backend_expiry``: pending operations the relying party started, by expiry
  (maintenance ends them as EXPIRED with an ``operation.expired`` event);
- ``push_providers`` (credentials wrapped), ``push_tokens``, ``push_notifications``.

Nothing existing is rewritten: the new tables start empty, and the indexes cover rows that
exist (pending backend operations expire on the next maintenance run after the upgrade).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 10:00:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _id_type() -> sa.types.TypeEngine[int]:
    # the rowid on SQLite (as events.seq), a bigserial on PostgreSQL
    return sa.Integer() if op.get_bind().dialect.name == "sqlite" else sa.BigInteger()


def _where(condition: str) -> dict[str, Any]:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade() -> None:
    op.create_index(
        "ix_events_delivery_pending", "events", ["seq"], **_where("delivery = 'PENDING'")
    )
    op.create_index(
        "ix_operations_backend_expiry",
        "operations",
        ["expires_at"],
        **_where("state = 'PENDING' AND initiator = 'BACKEND'"),
    )
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("application_id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("disabled_at", sa.BigInteger(), nullable=True),
        sa.Column("disabled_reason", sa.String(length=16), nullable=True),
        sa.Column("breaker_failures", sa.Integer(), nullable=False),
        sa.Column("breaker_open_until", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
            name=op.f("fk_webhook_endpoints_application_id_applications"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_index("ix_webhook_endpoints_application", "webhook_endpoints", ["application_id"])
    op.create_table(
        "webhook_secrets",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("endpoint_id", sa.String(length=36), nullable=False),
        sa.Column("scheme", sa.String(length=8), nullable=False),
        sa.Column("wrapped_secret", sa.LargeBinary(), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_secrets_endpoint_id_webhook_endpoints"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_secrets")),
    )
    op.create_index("ix_webhook_secrets_endpoint", "webhook_secrets", ["endpoint_id"])
    op.create_table(
        "webhook_subscriptions",
        sa.Column("application_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=48), nullable=False),
        sa.Column("endpoint_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_subscriptions_endpoint_id_webhook_endpoints"),
        ),
        sa.PrimaryKeyConstraint(
            "application_id", "event_type", "endpoint_id", name=op.f("pk_webhook_subscriptions")
        ),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", _id_type(), autoincrement=True, nullable=False),
        sa.Column("endpoint_id", sa.String(length=36), nullable=False),
        sa.Column("event_seq", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_attempt_at", sa.BigInteger(), nullable=True),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("leased_until", sa.BigInteger(), nullable=True),
        sa.Column("last_attempt_at", sa.BigInteger(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=32), nullable=True),
        sa.Column("last_detail", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint(
            "endpoint_id", "event_seq", name="uq_webhook_deliveries_endpoint_event"
        ),
    )
    op.create_index(
        "ix_webhook_deliveries_pending",
        "webhook_deliveries",
        ["endpoint_id", "event_seq"],
        **_where("state = 'pending'"),
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", _id_type(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("endpoint_id", sa.String(length=36), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("attempted_at", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=32), nullable=True),
        sa.Column("detail", sa.String(length=200), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
    )
    op.create_index("ix_webhook_attempts_endpoint", "webhook_attempts", ["endpoint_id", "id"])
    op.create_table(
        "push_providers",
        sa.Column("application_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("wrapped_credentials", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
            name=op.f("fk_push_providers_application_id_applications"),
        ),
        sa.PrimaryKeyConstraint("application_id", "kind", name=op.f("pk_push_providers")),
    )
    op.create_table(
        "push_tokens",
        sa.Column("device_id", sa.String(length=36), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["registrations.id"], name=op.f("fk_push_tokens_device_id_registrations")
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_push_tokens")),
    )
    op.create_table(
        "push_notifications",
        sa.Column("id", _id_type(), autoincrement=True, nullable=False),
        sa.Column("application_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=36), nullable=False),
        sa.Column("operation_id", sa.String(length=36), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("leased_until", sa.BigInteger(), nullable=True),
        sa.Column("last_detail", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_notifications")),
    )
    op.create_index(
        "ix_push_notifications_pending",
        "push_notifications",
        ["next_attempt_at"],
        **_where("state = 'pending'"),
    )


def downgrade() -> None:
    # operations this revision's maintenance ended as EXPIRED go back to the stored state
    # the older code derives EXPIRED from
    op.execute("UPDATE operations SET state = 'PENDING' WHERE state = 'EXPIRED'")
    op.execute("UPDATE events SET delivery = NULL WHERE delivery IS NOT NULL")
    for table in (
        "push_notifications",
        "push_tokens",
        "push_providers",
        "webhook_attempts",
        "webhook_deliveries",
        "webhook_subscriptions",
        "webhook_secrets",
        "webhook_endpoints",
    ):
        op.drop_table(table)
    op.drop_index("ix_operations_backend_expiry", table_name="operations")
    op.drop_index("ix_events_delivery_pending", table_name="events")
