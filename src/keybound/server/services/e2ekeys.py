"""E2E keys: the server's secure-channel key pairs, per application (docs/channel.md §7, §9).

A key is created INACTIVE or ACTIVE, becomes ACTIVE once (its pin can ship before that), and
is RETIRED for good; several keys of one application may be ACTIVE at once, so a rotation
needs no downtime. Private keys are stored only wrapped under the master key
(server.secrets); the wrapped blob is erased when a key is retired. Nothing in this module
returns, prints or logs a private key or the master key.

The hot path uses :class:`Keyring`: key id -> application and key, from an in-process
snapshot of the ACTIVE keys.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from cryptography.hazmat.primitives.asymmetric import x25519

from keybound.channel import (
    DEFAULT_SUITE,
    ChannelPin,
    ChannelSuite,
    E2EKey,
    InvalidPin,
    KeyState,
    KeyStorageError,
    generate_e2e_key,
)
from keybound.channel.framing import lp
from keybound.errors import ConfigurationInvalid, InvalidState, NotFound
from keybound.server.events.model import EventType
from keybound.server.records import E2EKeyRecord
from keybound.server.repositories import applications as apps
from keybound.server.repositories import e2ekeys as keys
from keybound.server.secrets import Purpose, SecretBox
from keybound.server.unit import Unit
from keybound.storage.db import Database

log = logging.getLogger("keybound.server.e2ekeys")

KEYRING_TTL_SECONDS: Final = 5.0
KEYRING_MISS_RELOAD_SECONDS: Final = 1.0


class E2EKeyState(StrEnum):
    INACTIVE = "INACTIVE"  # stored, pin exportable, opens nothing yet
    ACTIVE = "ACTIVE"  # opens requests
    RETIRED = "RETIRED"  # opens nothing, ever again; private key erased


@dataclass(frozen=True, kw_only=True)
class E2EKeyInfo:
    """What may be shown about an E2E key: everything but the private key. Times in ms."""

    key_id: str
    application_id: str
    suite: ChannelSuite
    state: E2EKeyState
    public_key: bytes
    created_at: int
    activated_at: int | None
    retired_at: int | None


def _info(row: E2EKeyRecord) -> E2EKeyInfo:
    return E2EKeyInfo(
        key_id=row.key_id,
        application_id=row.application_id,
        suite=ChannelSuite(row.suite),
        state=E2EKeyState(row.state),
        public_key=row.public_key,
        created_at=row.created_at,
        activated_at=row.activated_at,
        retired_at=row.retired_at,
    )


def wrap_binding(key_id: str, suite: ChannelSuite, public_key: bytes) -> bytes:
    """What a wrapped E2E private key is bound to (server.secrets)."""
    return lp(key_id.encode(), suite.value.encode(), public_key)


# --------------------------------------------------------------------------- hot path


@dataclass(frozen=True, kw_only=True)
class _Snapshot:
    keys: Mapping[str, tuple[str, E2EKey]]
    loaded_at: float  # monotonic


class Keyring:
    """key id -> (application id, E2EKey) for the ACTIVE keys, from an in-process snapshot.

    The snapshot is reloaded when older than ``ttl`` seconds, and on a miss when older than
    ``miss_reload`` seconds (so a key activated by another process is found within about a
    second of its first use, while unknown key ids cost at most one query per interval).
    Keys already unwrapped are reused across reloads. This process's own activate/retire
    invalidate the snapshot at once; another process's take effect within ``ttl``.
    """

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        *,
        ttl: float = KEYRING_TTL_SECONDS,
        miss_reload: float = KEYRING_MISS_RELOAD_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._box = box
        self._ttl = ttl
        self._miss_reload = miss_reload
        self._monotonic = monotonic
        self._snapshot = _Snapshot(keys={}, loaded_at=float("-inf"))
        self._lock = threading.Lock()
        self._unusable: set[str] = set()

    def lookup(self, key_id: str) -> tuple[str, E2EKey] | None:
        snapshot = self._snapshot
        age = self._monotonic() - snapshot.loaded_at
        if age > self._ttl:
            return self._reload(snapshot).keys.get(key_id)  # fresh: a miss is a miss
        found = snapshot.keys.get(key_id)
        if found is None and age > self._miss_reload:
            found = self._reload(snapshot).keys.get(key_id)
        return found

    def invalidate(self) -> None:
        with self._lock:
            self._snapshot = _Snapshot(keys={}, loaded_at=float("-inf"))

    def _reload(self, seen: _Snapshot) -> _Snapshot:
        with self._lock:
            if self._snapshot is not seen:  # another thread reloaded meanwhile
                return self._snapshot
            loaded_at = self._monotonic()
            with self._db.read() as conn:
                rows = keys.in_state(conn, E2EKeyState.ACTIVE.value)
            found: dict[str, tuple[str, E2EKey]] = {}
            for row in rows:
                entry = seen.keys.get(row.key_id) or self._unwrap(row)
                if entry is not None:
                    found[row.key_id] = entry
            self._snapshot = _Snapshot(keys=found, loaded_at=loaded_at)
            return self._snapshot

    def _unwrap(self, row: E2EKeyRecord) -> tuple[str, E2EKey] | None:
        try:
            suite = ChannelSuite(row.suite)
            private = self._box.unwrap(
                Purpose.E2E_PRIVATE_KEY,
                row.wrapped_private_key or b"",
                binding=wrap_binding(row.key_id, suite, row.public_key),
            )
            key = E2EKey(
                key_id=row.key_id,
                suite=suite,
                private_key=private,
                public_key=row.public_key,
                state=KeyState.ACTIVE,
                created_at=row.created_at // 1000,
            )
        except (KeyStorageError, ValueError) as exc:
            if row.key_id not in self._unusable:  # say it once, without key material
                self._unusable.add(row.key_id)
                log.error(
                    "E2E key %s is unusable (%s); its requests will fail",
                    row.key_id,
                    getattr(exc, "detail", type(exc).__name__),
                )
            return None
        return row.application_id, key


# --------------------------------------------------------------------------- management


class E2EKeys:
    """Create, list, activate, retire E2E keys and export their pins; every change audited."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        self.box = box
        self.keyring = Keyring(db, box)

    def create(
        self,
        unit: Unit,
        application_id: str,
        *,
        suite: ChannelSuite = DEFAULT_SUITE,
        active: bool = True,
    ) -> E2EKeyInfo:
        unit.about(application_id=application_id)
        key = generate_e2e_key(ChannelSuite(suite), now=unit.now // 1000)
        state = E2EKeyState.ACTIVE if active else E2EKeyState.INACTIVE
        record = E2EKeyRecord(
            key_id=key.key_id,
            application_id=application_id,
            suite=key.suite.value,
            public_key=key.public_key,
            wrapped_private_key=self.box.wrap(
                Purpose.E2E_PRIVATE_KEY,
                key.private_key,
                binding=wrap_binding(key.key_id, key.suite, key.public_key),
            ),
            state=state.value,
            created_at=unit.now,
            activated_at=unit.now if active else None,
            retired_at=None,
        )
        conn = unit.write()
        if apps.config_text(conn, application_id) is None:
            raise NotFound(f"no application {application_id!r}")
        keys.insert_key(conn, record)
        unit.emit(
            EventType.E2E_KEY_CREATE,
            subject=key.key_id,
            payload={"keyId": key.key_id, "suite": key.suite.value, "state": state.value},
        )
        unit.after_commit(self.keyring.invalidate)
        return _info(record)

    def get(self, unit: Unit, key_id: str) -> E2EKeyInfo:
        with unit.read() as conn:
            row = keys.get_public(conn, key_id)
        if row is None:
            raise NotFound(f"no E2E key {key_id!r}")
        return _info(row)

    def list(self, unit: Unit, application_id: str) -> list[E2EKeyInfo]:
        with unit.read() as conn:
            return [_info(row) for row in keys.of_application(conn, application_id)]

    def activate(self, unit: Unit, key_id: str) -> E2EKeyInfo:
        """INACTIVE -> ACTIVE (one atomic UPDATE); anything else is INVALID_STATE."""
        return self._transition(
            unit,
            key_id,
            E2EKeyState.ACTIVE,
            from_states=(E2EKeyState.INACTIVE,),
            event=EventType.E2E_KEY_ACTIVATE,
            stamp="activated_at",
        )

    def retire(self, unit: Unit, key_id: str) -> E2EKeyInfo:
        """INACTIVE or ACTIVE -> RETIRED for good; the wrapped private key is erased."""
        return self._transition(
            unit,
            key_id,
            E2EKeyState.RETIRED,
            from_states=(E2EKeyState.INACTIVE, E2EKeyState.ACTIVE),
            event=EventType.E2E_KEY_RETIRE,
            stamp="retired_at",
            erase_private=True,
        )

    @staticmethod
    def check_server_url(server_url: str) -> None:
        """Raise CONFIGURATION_INVALID unless ``server_url`` can go into a pin (§8)."""
        probe = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
        try:
            ChannelPin(
                application_id="probe",
                server_url=server_url,
                key_id="probe",
                suite=ChannelSuite.X25519_SHA256_AES128GCM,
                public_key=probe,
            )
        except InvalidPin as exc:
            raise ConfigurationInvalid(exc.detail) from None

    def pin(self, unit: Unit, key_id: str, *, server_url: str) -> ChannelPin:
        """The pin an app built for this key's application ships (§8). Not for RETIRED keys."""
        info = self.get(unit, key_id)
        if info.state is E2EKeyState.RETIRED:
            raise InvalidState(f"E2E key {key_id} is retired; create a new key")
        try:
            pin = ChannelPin(
                application_id=info.application_id,
                server_url=server_url,
                key_id=info.key_id,
                suite=info.suite,
                public_key=info.public_key,
            )
        except InvalidPin as exc:
            raise ConfigurationInvalid(exc.detail) from None
        unit.emit(
            EventType.E2E_KEY_EXPORT_PIN,
            application_id=info.application_id,
            subject=key_id,
            payload={"keyId": key_id, "serverUrl": server_url},
        )
        return pin

    def _transition(
        self,
        unit: Unit,
        key_id: str,
        target: E2EKeyState,
        *,
        from_states: tuple[E2EKeyState, ...],
        event: EventType,
        stamp: str,
        erase_private: bool = False,
    ) -> E2EKeyInfo:
        conn = unit.write()
        application_id = keys.transition(
            conn,
            key_id,
            to=target.value,
            from_states=tuple(s.value for s in from_states),
            stamp=stamp,
            now=unit.now,
            erase_private=erase_private,
        )
        if application_id is None:
            current = keys.state_of(conn, key_id)
            if current is None:
                raise NotFound(f"no E2E key {key_id!r}")
            raise InvalidState(f"E2E key {key_id} is {current}; cannot make it {target}")
        unit.emit(
            event,
            application_id=application_id,
            subject=key_id,
            payload={"keyId": key_id, "state": target.value},
        )
        unit.after_commit(self.keyring.invalidate)
        return self.get(unit, key_id)
