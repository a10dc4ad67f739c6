"""Applications, their configuration, and relying-party API keys.

An API key is ``kb_<id>_<secret>``: ``id`` finds the row, the secret (256 random bits) is
stored only as its SHA-256 and compared in constant time. A key sees only its own
application.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from keybound.crypto import constant_time_equal
from keybound.errors import ConfigurationInvalid, InvalidState, NotFound, Unauthorized
from keybound.server.core.appconfig import AppConfig
from keybound.server.events.model import EventType
from keybound.server.records import ApiKeyRecord
from keybound.server.repositories import applications as apps
from keybound.server.unit import Unit
from keybound.storage.db import Database

APPLICATION_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_TOKEN = re.compile(r"^kb_([A-Za-z0-9]{16})_([A-Za-z0-9_-]{43})$")
_KEY_ID_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"


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


def _info(record: ApiKeyRecord) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=record.id,
        application_id=record.application_id,
        label=record.label,
        created_at=record.created_at,
        revoked_at=record.revoked_at,
    )


class Applications:
    def create(self, unit: Unit, application_id: str, config: AppConfig | None = None) -> AppConfig:
        if not APPLICATION_ID.match(application_id):
            raise ConfigurationInvalid(
                "application id must be 1-64 of a-z 0-9 . _ - and start with a letter or digit"
            )
        unit.about(application_id=application_id)
        config = config or AppConfig()
        conn = unit.write()
        if apps.config_text(conn, application_id) is not None:
            raise InvalidState(f"application {application_id!r} already exists")
        apps.insert_application(conn, application_id, config.to_stored(), unit.now)
        unit.emit(EventType.APPLICATION_CREATE, payload=config.to_json())
        return config

    def config(self, unit: Unit, application_id: str) -> AppConfig:
        with unit.read() as conn:
            raw = apps.config_text(conn, application_id)
        if raw is None:
            raise NotFound(f"no application {application_id!r}")
        return AppConfig.from_stored(raw)

    def ids(self, unit: Unit) -> list[str]:
        with unit.read() as conn:
            return apps.ids(conn)

    def update(self, unit: Unit, application_id: str, changes: dict[str, Any]) -> AppConfig:
        """Apply camelCase setting changes; they take effect for the next operation."""
        unit.about(application_id=application_id)
        conn = unit.write()
        raw = apps.config_text(conn, application_id)
        if raw is None:
            raise NotFound(f"no application {application_id!r}")
        new = AppConfig.from_stored(raw).updated(changes)
        apps.update_config(conn, application_id, new.to_stored(), unit.now)
        unit.emit(EventType.APPLICATION_UPDATE, payload=changes)
        return new

    # -- API keys -------------------------------------------------------------------------

    def create_api_key(self, unit: Unit, application_id: str, label: str = "") -> NewApiKey:
        unit.about(application_id=application_id)
        self.config(unit, application_id)  # NotFound if absent
        key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(16))
        secret = secrets.token_urlsafe(32)
        record = ApiKeyRecord(
            id=key_id,
            application_id=application_id,
            secret_hash=hashlib.sha256(secret.encode()).digest(),
            label=label,
            created_at=unit.now,
            revoked_at=None,
        )
        apps.insert_api_key(unit.write(), record)
        unit.emit(EventType.API_KEY_CREATE, payload={"keyId": key_id, "label": label})
        return NewApiKey(info=_info(record), token=f"kb_{key_id}_{secret}")

    def revoke_api_key(self, unit: Unit, key_id: str) -> None:
        application_id = apps.revoke_api_key(unit.write(), key_id, unit.now)
        if application_id is None:
            raise NotFound(f"no active API key {key_id!r}")
        unit.emit(
            EventType.API_KEY_REVOKE, application_id=application_id, payload={"keyId": key_id}
        )

    def list_api_keys(self, unit: Unit, application_id: str) -> list[ApiKeyInfo]:
        with unit.read() as conn:
            return [_info(r) for r in apps.api_keys(conn, application_id)]


def authenticate_api_key(db: Database, token: str) -> str:
    """The application id a bearer token belongs to; Unauthorized otherwise. Before any unit
    of work: who the caller is decides how its request is audited."""
    match = _TOKEN.match(token)
    if match is None:
        raise Unauthorized("missing or malformed API key (Authorization: Bearer kb_...)")
    key_id, secret = match.groups()
    with db.read() as conn:
        row = apps.api_key_secret(conn, key_id)
    digest = hashlib.sha256(secret.encode()).digest()
    stored = row.secret_hash if row is not None else bytes(32)
    if not constant_time_equal(digest, stored) or row is None or row.revoked_at is not None:
        raise Unauthorized("invalid or revoked API key")
    return row.application_id
