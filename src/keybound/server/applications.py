"""Applications, their configuration, and relying-party API keys.

An API key is ``kb_<id>_<secret>``: ``id`` finds the row, the secret is stored only as its
SHA-256 and compared in constant time. A key sees only its own application.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from keybound.crypto import constant_time_equal
from keybound.errors import ConfigurationInvalid, InvalidState, NotFound, Unauthorized
from keybound.server import audit
from keybound.server.appconfig import AppConfig
from keybound.storage import tables as t
from keybound.storage.db import Clock, Database, now_ms
from keybound.storage.prepared import Prepared

APPLICATION_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_TOKEN = re.compile(r"^kb_([A-Za-z0-9]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, kw_only=True)
class ApiKeyInfo:
    key_id: str
    application_id: str
    label: str
    created_at: int
    revoked_at: int | None


@dataclass(frozen=True, kw_only=True)
class NewApiKey:
    info: ApiKeyInfo
    token: str  # shown once, never stored


_SELECT_API_KEY = Prepared(select(
    t.api_keys.c.application_id, t.api_keys.c.secret_hash, t.api_keys.c.revoked_at).where(
    t.api_keys.c.id == bindparam("id")))
_SELECT_CONFIG = Prepared(select(t.applications.c.config).where(
    t.applications.c.id == bindparam("application_id")))


def load_config_text(conn: Connection, application_id: str) -> str | None:
    """The application's configuration as stored (the text operations snapshot)."""
    raw: str | None = _SELECT_CONFIG.scalar(conn, {"application_id": application_id})
    return raw


def load_config(conn: Connection, application_id: str) -> AppConfig | None:
    raw = load_config_text(conn, application_id)
    return None if raw is None else AppConfig.from_stored(raw)


class Applications:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def create(self, application_id: str, config: AppConfig | None = None) -> AppConfig:
        if not APPLICATION_ID.match(application_id):
            raise ConfigurationInvalid(
                "application id must be 1-64 of a-z 0-9 . _ - and start with a letter or digit"
            )
        config = config or AppConfig()
        now = now_ms(self.clock)
        with self.db.write() as conn:
            if load_config(conn, application_id) is not None:
                raise InvalidState(f"application {application_id!r} already exists")
            conn.execute(
                insert(t.applications).values(
                    id=application_id,
                    config=json.dumps(config.to_json()),
                    created_at=now,
                    updated_at=now,
                )
            )
            audit.record(conn, at=now, actor=audit.Actor.OPERATOR, event="application.create",
                         outcome=audit.Outcome.SUCCESS, application_id=application_id,
                         details=config.to_json())
        return config

    def config(self, application_id: str) -> AppConfig:
        with self.db.read() as conn:
            config = load_config(conn, application_id)
        if config is None:
            raise NotFound(f"no application {application_id!r}")
        return config

    def ids(self) -> list[str]:
        with self.db.read() as conn:
            return list(conn.execute(select(t.applications.c.id).order_by("id")).scalars())

    def update(self, application_id: str, changes: dict[str, Any]) -> AppConfig:
        """Apply camelCase setting changes; they take effect for the next operation."""
        now = now_ms(self.clock)
        with self.db.write() as conn:
            current = load_config(conn, application_id)
            if current is None:
                raise NotFound(f"no application {application_id!r}")
            new = current.updated(changes)
            conn.execute(
                update(t.applications)
                .where(t.applications.c.id == application_id)
                .values(config=json.dumps(new.to_json()), updated_at=now)
            )
            audit.record(conn, at=now, actor=audit.Actor.OPERATOR, event="application.update",
                         outcome=audit.Outcome.SUCCESS, application_id=application_id,
                         details=changes)
        return new

    # -- API keys ---------------------------------------------------------------------------

    def create_api_key(self, application_id: str, label: str = "") -> NewApiKey:
        self.config(application_id)  # NotFound if absent
        key_id = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789")
                         for _ in range(16))
        secret = secrets.token_urlsafe(32)
        now = now_ms(self.clock)
        with self.db.write() as conn:
            conn.execute(
                insert(t.api_keys).values(
                    id=key_id,
                    application_id=application_id,
                    secret_hash=hashlib.sha256(secret.encode()).digest(),
                    label=label,
                    created_at=now,
                )
            )
            audit.record(conn, at=now, actor=audit.Actor.OPERATOR, event="api_key.create",
                         outcome=audit.Outcome.SUCCESS, application_id=application_id,
                         details={"keyId": key_id, "label": label})
        info = ApiKeyInfo(key_id=key_id, application_id=application_id, label=label,
                          created_at=now, revoked_at=None)
        return NewApiKey(info=info, token=f"kb_{key_id}_{secret}")

    def revoke_api_key(self, key_id: str) -> None:
        now = now_ms(self.clock)
        with self.db.write() as conn:
            row = conn.execute(
                update(t.api_keys)
                .where(t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
                .returning(t.api_keys.c.application_id)
            ).first()
            if row is None:
                raise NotFound(f"no active API key {key_id!r}")
            audit.record(conn, at=now, actor=audit.Actor.OPERATOR, event="api_key.revoke",
                         outcome=audit.Outcome.SUCCESS, application_id=row.application_id,
                         details={"keyId": key_id})

    def list_api_keys(self, application_id: str) -> list[ApiKeyInfo]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(t.api_keys)
                .where(t.api_keys.c.application_id == application_id)
                .order_by(t.api_keys.c.created_at)
            ).all()
        return [
            ApiKeyInfo(key_id=r.id, application_id=r.application_id, label=r.label,
                       created_at=r.created_at, revoked_at=r.revoked_at)
            for r in rows
        ]

    def authenticate(self, token: str) -> str:
        """The application id a bearer token belongs to; Unauthorized otherwise."""
        match = _TOKEN.match(token)
        if match is None:
            raise Unauthorized("missing or malformed API key")
        key_id, secret = match.groups()
        with self.db.read() as conn:
            row = _SELECT_API_KEY.first(conn, {"id": key_id})
        digest = hashlib.sha256(secret.encode()).digest()
        stored = row.secret_hash if row is not None else bytes(32)
        if not constant_time_equal(digest, stored) or row is None or row.revoked_at is not None:
            raise Unauthorized("invalid or revoked API key")
        return str(row.application_id)
