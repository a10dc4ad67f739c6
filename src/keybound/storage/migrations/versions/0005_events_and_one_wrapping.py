"""events instead of audit_events; one wrapping format for secrets at rest (issue 13)

- ``audit_events`` becomes ``events``: every row gets an event id (what a webhook receiver
  deduplicates on), ``event`` is renamed ``type``, ``device_id`` ``subject`` and ``details``
  ``payload``, and a ``delivery`` state is added for the outbox.
- ``noise``: anonymous refusals, counted per window and cause (issue 14).
- ``settings``: the master key's fingerprint, among others.
- ``operations.challenge_issued_at``: tells a software key superseded after a challenge was
  issued (two ceremonies of one device overlapping) from a copy (docs/protocol.md §4.5).
- Secrets at rest are re-wrapped into the one format of keybound.server.secrets: E2E private
  keys (were AES-256-GCM under the master key itself) and PIN keys (were AES-256-GCM under an
  HKDF subkey, without a format byte); the post-operation context, stored in plaintext until
  now, is wrapped too (``wrapped_post_context``).

The re-wrapping needs the master key (``Database.migrate(master_key=...)``; ``keybound db
upgrade`` and ``keybound serve`` pass it). The formats are written out here, not imported,
so this revision keeps doing what it did when later ones change them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 14:00:00
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESGCMSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_NONCE = 12


def _lp(*fields: bytes) -> bytes:
    return b"".join(len(f).to_bytes(4, "big") + f for f in fields)


def _derive(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


class _Formats:
    """The old formats and the new one, frozen as of this revision."""

    def __init__(self, master: bytes) -> None:
        self.master = master
        self.v2 = AESGCMSIV(_derive(master, b"keybound/master/wrap"))
        self.pin_v1 = AESGCM(_derive(master, b"keybound pin-key wrapping v1"))
        self.e2e_v1 = AESGCM(master)
        self.fingerprint = _derive(master, b"keybound/master/fingerprint")[:12].hex()

    def wrap(self, purpose: str, secret: bytes, binding: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return (
            b"\x02"
            + nonce
            + self.v2.encrypt(nonce, secret, _lp(b"keybound/secret/v2", purpose.encode(), binding))
        )

    def unwrap(self, purpose: str, wrapped: bytes, binding: bytes) -> bytes:
        return self.v2.decrypt(
            wrapped[1 : 1 + _NONCE],
            wrapped[1 + _NONCE :],
            _lp(b"keybound/secret/v2", purpose.encode(), binding),
        )

    @staticmethod
    def e2e_binding(key_id: str, suite: str, public_key: bytes) -> bytes:
        return _lp(key_id.encode(), suite.encode(), public_key)

    def e2e_v1_aad(self, key_id: str, suite: str, public_key: bytes) -> bytes:
        return _lp(
            b"keybound/channel/v1/e2e-key-wrap",
            key_id.encode("ascii"),
            suite.encode("ascii"),
            public_key,
        )


def _formats(needed: bool) -> _Formats | None:
    master = context.config.attributes.get("master_key")
    if master is None:
        if needed:
            raise RuntimeError(
                "revision 0005 re-wraps secrets at rest and needs the master "
                "key: run `keybound db upgrade` (it reads the master key file)"
            )
        return None
    return _Formats(master)


def _convert(
    table: str,
    key: str,
    columns: tuple[str, ...],
    target: str,
    convert: Callable[[Any], bytes | None],
    where: sa.ColumnElement[bool],
) -> None:
    bind = op.get_bind()
    t = sa.table(table, *(sa.column(c) for c in {key, target, *columns}))
    for row in bind.execute(sa.select(*(t.c[c] for c in {key, *columns})).where(where)).all():
        bind.execute(
            sa.update(t).where(t.c[key] == row._mapping[key]).values({target: convert(row)})
        )


def _has_rows(table: str, where: str) -> bool:
    query = f"SELECT 1 FROM {table} WHERE {where} LIMIT 1"  # noqa: S608 - constants only
    return op.get_bind().execute(sa.text(query)).first() is not None


def _secrets_present() -> bool:
    return _has_rows("e2e_keys", "wrapped_private_key IS NOT NULL") or _has_rows(
        "registrations", "pin_key IS NOT NULL"
    )


def _fail(what: str) -> RuntimeError:
    return RuntimeError(
        f"{what} does not open under the master key given to the migration: "
        "is KEYBOUND_MASTER_KEY_FILE the file this database was created with?"
    )


def upgrade() -> None:
    op.create_table(
        "settings",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_settings")),
    )
    op.create_table(
        "noise",
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("cause", sa.String(length=96), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("window_start", "cause", name=op.f("pk_noise")),
    )
    _events_up()
    has_contexts = _has_rows("operations", "post_context IS NOT NULL")
    formats = _formats(_secrets_present() or has_contexts)
    if formats is not None:
        _rewrap_up(formats)
    op.add_column("operations", sa.Column("wrapped_post_context", sa.LargeBinary(), nullable=True))
    op.add_column("operations", sa.Column("challenge_issued_at", sa.BigInteger(), nullable=True))
    if has_contexts:
        assert formats is not None

        def wrap_context(row: Any) -> bytes:
            return formats.wrap(
                "post-operation-context", row.post_context.encode(), row.id.encode()
            )

        _convert(
            "operations",
            "id",
            ("post_context",),
            "wrapped_post_context",
            wrap_context,
            sa.column("post_context").is_not(None),
        )
    _drop_column("operations", "post_context")
    if formats is not None:
        op.get_bind().execute(
            sa.text("INSERT INTO settings (name, value) VALUES ('master_key_fingerprint', :fp)"),
            {"fp": formats.fingerprint},
        )


def _events_up() -> None:
    is_sqlite = op.get_bind().dialect.name == "sqlite"
    seq_type = sa.Integer() if is_sqlite else sa.BigInteger()
    op.create_table(
        "events",
        sa.Column("seq", seq_type, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=48), nullable=False),
        sa.Column("application_id", sa.String(length=64), nullable=True),
        sa.Column("subject", sa.String(length=64), nullable=True),
        sa.Column("operation_id", sa.String(length=36), nullable=True),
        sa.Column("actor", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=48), nullable=True),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("delivery", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_events")),
    )
    bind = op.get_bind()
    old = sa.table(
        "audit_events",
        *(
            sa.column(c)
            for c in (
                "id",
                "at",
                "application_id",
                "device_id",
                "operation_id",
                "actor",
                "event",
                "outcome",
                "code",
                "details",
            )
        ),
    )
    new = sa.table(
        "events",
        *(
            sa.column(c)
            for c in (
                "seq",
                "id",
                "type",
                "application_id",
                "subject",
                "operation_id",
                "actor",
                "outcome",
                "code",
                "payload",
                "created_at",
            )
        ),
    )
    rows = bind.execute(sa.select(old).order_by(old.c.id)).all()
    for start in range(0, len(rows), 1000):
        bind.execute(
            sa.insert(new),
            [
                {
                    "seq": r.id,
                    "id": str(uuid.uuid4()),
                    "type": r.event,
                    "application_id": r.application_id,
                    "subject": r.device_id,
                    "operation_id": r.operation_id,
                    "actor": r.actor,
                    "outcome": r.outcome,
                    "code": r.code,
                    "payload": r.details,
                    "created_at": r.at,
                }
                for r in rows[start : start + 1000]
            ],
        )
    if not is_sqlite and rows:
        bind.execute(
            sa.text(
                "SELECT setval(pg_get_serial_sequence('events', 'seq'), "
                "(SELECT max(seq) FROM events))"
            )
        )
    op.drop_table("audit_events")


def _rewrap_up(f: _Formats) -> None:
    def e2e(row: Any) -> bytes:
        blob = row.wrapped_private_key
        try:
            private = f.e2e_v1.decrypt(
                blob[1 : 1 + _NONCE],
                blob[1 + _NONCE :],
                f.e2e_v1_aad(row.key_id, row.suite, row.public_key),
            )
        except (InvalidTag, ValueError):
            raise _fail(f"E2E key {row.key_id}") from None
        return f.wrap(
            "e2e-private-key", private, f.e2e_binding(row.key_id, row.suite, row.public_key)
        )

    def pin(row: Any) -> bytes:
        try:
            key = f.pin_v1.decrypt(row.pin_key[:_NONCE], row.pin_key[_NONCE:], row.id.encode())
        except (InvalidTag, ValueError):
            raise _fail(f"the PIN key of device {row.id}") from None
        return f.wrap("pin-key", key, row.id.encode())

    _convert(
        "e2e_keys",
        "key_id",
        ("suite", "public_key", "wrapped_private_key"),
        "wrapped_private_key",
        e2e,
        sa.column("wrapped_private_key").is_not(None),
    )
    _convert("registrations", "id", ("pin_key",), "pin_key", pin, sa.column("pin_key").is_not(None))


def _drop_column(table: str, column: str) -> None:
    if op.get_bind().dialect.name == "sqlite":  # native since SQLite 3.35; keeps the indexes
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    else:
        op.drop_column(table, column)


def downgrade() -> None:
    has_contexts = _has_rows("operations", "wrapped_post_context IS NOT NULL")
    formats = _formats(_secrets_present() or has_contexts)
    op.add_column("operations", sa.Column("post_context", sa.Text(), nullable=True))
    if formats is not None:
        f = formats

        def unwrap_context(row: Any) -> Any:
            return f.unwrap(
                "post-operation-context", row.wrapped_post_context, row.id.encode()
            ).decode()

        _convert(
            "operations",
            "id",
            ("wrapped_post_context",),
            "post_context",
            unwrap_context,
            sa.column("wrapped_post_context").is_not(None),
        )

        def e2e(row: Any) -> bytes:
            private = f.unwrap(
                "e2e-private-key",
                row.wrapped_private_key,
                f.e2e_binding(row.key_id, row.suite, row.public_key),
            )
            nonce = secrets.token_bytes(_NONCE)
            return (
                b"\x01"
                + nonce
                + f.e2e_v1.encrypt(
                    nonce, private, f.e2e_v1_aad(row.key_id, row.suite, row.public_key)
                )
            )

        def pin(row: Any) -> bytes:
            key = f.unwrap("pin-key", row.pin_key, row.id.encode())
            nonce = secrets.token_bytes(_NONCE)
            return nonce + f.pin_v1.encrypt(nonce, key, row.id.encode())

        _convert(
            "e2e_keys",
            "key_id",
            ("suite", "public_key", "wrapped_private_key"),
            "wrapped_private_key",
            e2e,
            sa.column("wrapped_private_key").is_not(None),
        )
        _convert(
            "registrations", "id", ("pin_key",), "pin_key", pin, sa.column("pin_key").is_not(None)
        )
    _drop_column("operations", "wrapped_post_context")
    _drop_column("operations", "challenge_issued_at")
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("application_id", sa.String(length=64), nullable=True),
        sa.Column("device_id", sa.String(length=36), nullable=True),
        sa.Column("operation_id", sa.String(length=36), nullable=True),
        sa.Column("actor", sa.String(length=16), nullable=False),
        sa.Column("event", sa.String(length=48), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=48), nullable=True),
        sa.Column("details", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.execute(
        "INSERT INTO audit_events (id, at, application_id, device_id, operation_id, "
        "actor, event, outcome, code, details) SELECT seq, created_at, application_id, "
        "subject, operation_id, actor, type, outcome, code, payload FROM events"
    )
    if op.get_bind().dialect.name != "sqlite":
        op.execute(
            "SELECT setval(pg_get_serial_sequence('audit_events', 'id'), "
            "coalesce(max(id), 1), max(id) IS NOT NULL) FROM audit_events"
        )
    op.drop_table("events")
    op.drop_table("noise")
    op.drop_table("settings")
