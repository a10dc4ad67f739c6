"""E2E keys: the server's secure-channel key pairs, per application (docs/channel.md §7, §9).

A key is created INACTIVE or ACTIVE, becomes ACTIVE once (its pin can ship before that), and
is RETIRED for good; several keys of one application may be ACTIVE at once, so a rotation
needs no downtime. Private keys are stored only wrapped under the master key (AES-256-GCM,
:func:`keybound.channel.wrap_private_key`); the wrapped blob is erased when a key is retired.
Nothing in this module returns, prints or logs a private key or the master key.

The hot path uses :class:`Keyring` (key id -> application and key, from an in-process snapshot
of the ACTIVE keys) and :class:`SqlReplayGuard` (request ids in ``seen_requests``, shared by
every server process on the database).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import x25519
from sqlalchemy import Row, insert, select, update
from sqlalchemy.engine import make_url

from keybound.channel import (
    DEFAULT_SUITE,
    ChannelPin,
    ChannelSuite,
    DecryptionFailed,
    E2EKey,
    InvalidPin,
    KeyState,
    KeyStorageError,
    generate_e2e_key,
    load_or_create_master_key,
    unwrap_private_key,
    wrap_private_key,
)
from keybound.errors import ConfigurationInvalid, InvalidState, NotFound
from keybound.server import audit
from keybound.server.applications import load_config
from keybound.storage import tables as t
from keybound.storage.batches import DELETE_BATCH, delete_in_batches
from keybound.storage.db import DEFAULT_DATA_DIR, Clock, Database, now_ms
from keybound.storage.prepared import Prepared

log = logging.getLogger("keybound.server.e2ekeys")

ENV_MASTER_KEY_FILE: Final = "KEYBOUND_MASTER_KEY_FILE"
MASTER_KEY_FILE_NAME: Final = "master.key"
KEYRING_TTL_SECONDS: Final = 5.0
KEYRING_MISS_RELOAD_SECONDS: Final = 1.0
REPLAY_PURGE_INTERVAL_SECONDS: Final = 60.0
REPLAY_PURGE_GRACE_MS: Final = 10_000


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


def master_key_path(database_url: str, environ: Mapping[str, str] = os.environ) -> Path:
    """``$KEYBOUND_MASTER_KEY_FILE``; else ``master.key`` beside a SQLite database file; else
    ``~/.keybound/master.key``."""
    configured = environ.get(ENV_MASTER_KEY_FILE)
    if configured:
        return Path(configured).expanduser()
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).expanduser().resolve().parent / MASTER_KEY_FILE_NAME
    return DEFAULT_DATA_DIR / MASTER_KEY_FILE_NAME


class MasterKey:
    """The master key file, read (or created, 0600) on first use; never logged or returned
    through any API."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MasterKey(path={str(self.path)!r})"

    def get(self) -> bytes:
        with self._lock:
            if self._key is None:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._key = load_or_create_master_key(self.path)
            return self._key


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
        master_key: MasterKey,
        *,
        ttl: float = KEYRING_TTL_SECONDS,
        miss_reload: float = KEYRING_MISS_RELOAD_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._master_key = master_key
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
                rows = conn.execute(
                    select(t.e2e_keys).where(t.e2e_keys.c.state == E2EKeyState.ACTIVE.value)
                ).all()
            keys: dict[str, tuple[str, E2EKey]] = {}
            for row in rows:
                entry = seen.keys.get(row.key_id) or self._unwrap(row)
                if entry is not None:
                    keys[row.key_id] = entry
            self._snapshot = _Snapshot(keys=keys, loaded_at=loaded_at)
            return self._snapshot

    def _unwrap(self, row: Row[Any]) -> tuple[str, E2EKey] | None:
        try:
            suite = ChannelSuite(row.suite)
            private = unwrap_private_key(
                self._master_key.get(), row.wrapped_private_key or b"",
                key_id=row.key_id, suite=suite, public_key=row.public_key,
            )
            key = E2EKey(key_id=row.key_id, suite=suite, private_key=private,
                         public_key=row.public_key, state=KeyState.ACTIVE,
                         created_at=row.created_at // 1000)
        except (KeyStorageError, ValueError) as exc:
            if row.key_id not in self._unusable:  # say it once, without key material
                self._unusable.add(row.key_id)
                log.error("E2E key %s is unusable (%s); its requests will fail",
                          row.key_id, getattr(exc, "detail", type(exc).__name__))
            return None
        return str(row.application_id), key


class SqlReplayGuard:
    """:class:`keybound.channel.ReplayGuard` on the ``seen_requests`` table (§6).

    The primary key makes check-and-remember one atomic INSERT, so every server process that
    shares the database refuses a request any of them has seen. The key is (expiry, request
    id): a replay is the same sealed bytes, so the same timestamp and, since every server
    opens requests with the channel's one window (DEFAULT_WINDOW_SECONDS), the same expiry.
    Ordered by expiry, the key is also what the purge deletes by (migration 0004). Expired
    ids are deleted now and then (at most once per ``purge_interval`` per process),
    ``REPLAY_PURGE_GRACE_MS`` after they expire so that a clock a little behind never meets
    a forgotten id.
    """

    def __init__(
        self, db: Database, clock: Clock, *, purge_interval: float = REPLAY_PURGE_INTERVAL_SECONDS
    ) -> None:
        self._db = db
        self._clock = clock
        self._purge_interval = purge_interval
        self._last_purge = clock()
        self._purge_lock = threading.Lock()
        self.purging: threading.Thread | None = None  # the last purge (tests join it)

    def check_and_remember(self, request_id: bytes, expires_at: int) -> None:
        """Remember a request id until it expires; DecryptionFailed if it was seen."""
        with self.remembering(request_id, expires_at):
            pass

    @contextmanager
    def remembering(self, request_id: bytes, expires_at: int) -> Iterator[None]:
        """Handle a request inside the block: its id is stored by the first write
        transaction the handler commits (the replay mark and the change it guards are
        stored together, in one commit), or alone at the end when the handler wrote
        nothing. A seen id raises DecryptionFailed and rolls that transaction back."""
        with self._db.riding(_INSERT_SEEN, {"request_id": request_id,
                                            "expires_at": expires_at * 1000},
                             conflict=_replayed):
            yield
        self._maybe_purge()

    def _maybe_purge(self) -> None:
        now = self._clock()
        if now - self._last_purge < self._purge_interval or not self._purge_lock.acquire(
                blocking=False):
            return
        self._last_purge = now
        # in the background: a minute of expired ids is a long DELETE, and the request that
        # happens to trigger it (maybe on the event loop, docs/channel.md §11.1) must not
        # wait for it
        self.purging = threading.Thread(target=self._purge, args=(int(now * 1000),),
                                        name="keybound-replay-purge", daemon=True)
        self.purging.start()

    def _purge(self, at_ms: int) -> None:
        try:
            purge_seen_requests(self._db, at_ms)
        except Exception:  # pragma: no cover - retried at the next interval
            log.exception("purging expired request ids failed")
        finally:
            self._purge_lock.release()


_INSERT_SEEN = Prepared(insert(t.seen_requests))  # every sealed request writes one row


def _replayed() -> DecryptionFailed:
    exc = DecryptionFailed()
    exc.fields["audited"] = True  # the secure channel audits it, as a decryption failure
    return exc


def purge_seen_requests(db: Database, at_ms: int, *, batch: int = DELETE_BATCH) -> int:
    """Forget request ids past their expiry plus REPLAY_PURGE_GRACE_MS (so a server whose
    clock is a little behind never meets a forgotten id); returns how many. In write
    transactions of at most ``batch`` rows (storage.batches)."""
    seen = t.seen_requests
    expired = seen.c.expires_at < at_ms - REPLAY_PURGE_GRACE_MS
    return delete_in_batches(db, seen, (seen.c.expires_at, seen.c.request_id), expired,
                             batch=batch)


# --------------------------------------------------------------------------- management


def _info(row: Row[Any]) -> E2EKeyInfo:
    return E2EKeyInfo(
        key_id=row.key_id, application_id=row.application_id, suite=ChannelSuite(row.suite),
        state=E2EKeyState(row.state), public_key=row.public_key, created_at=row.created_at,
        activated_at=row.activated_at, retired_at=row.retired_at,
    )


_PUBLIC_COLUMNS: Final = [c for c in t.e2e_keys.c if c.name != "wrapped_private_key"]


class E2EKeys:
    """Create, list, activate, retire E2E keys and export their pins; every change audited."""

    def __init__(self, db: Database, clock: Clock, master_key: MasterKey) -> None:
        self.db = db
        self.clock = clock
        self.master_key = master_key
        self.keyring = Keyring(db, master_key)
        self.replay_guard = SqlReplayGuard(db, clock)

    def create(self, application_id: str, *, suite: ChannelSuite = DEFAULT_SUITE,
               active: bool = True) -> E2EKeyInfo:
        now = now_ms(self.clock)
        key = generate_e2e_key(ChannelSuite(suite), now=now // 1000)
        state = E2EKeyState.ACTIVE if active else E2EKeyState.INACTIVE
        wrapped = wrap_private_key(self.master_key.get(), key)
        with self.db.write() as conn:
            if load_config(conn, application_id) is None:
                raise NotFound(f"no application {application_id!r}")
            conn.execute(insert(t.e2e_keys).values(
                key_id=key.key_id, application_id=application_id, suite=key.suite.value,
                public_key=key.public_key, wrapped_private_key=wrapped, state=state.value,
                created_at=now, activated_at=now if active else None))
            audit.record(conn, at=now, actor=audit.Actor.OPERATOR, event="e2e_key.create",
                         outcome=audit.Outcome.SUCCESS, application_id=application_id,
                         details={"keyId": key.key_id, "suite": key.suite.value,
                                  "state": state.value})
        self.keyring.invalidate()
        return self.get(key.key_id)

    def get(self, key_id: str) -> E2EKeyInfo:
        with self.db.read() as conn:
            row = conn.execute(
                select(*_PUBLIC_COLUMNS).where(t.e2e_keys.c.key_id == key_id)).first()
        if row is None:
            raise NotFound(f"no E2E key {key_id!r}")
        return _info(row)

    def list(self, application_id: str) -> list[E2EKeyInfo]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(*_PUBLIC_COLUMNS)
                .where(t.e2e_keys.c.application_id == application_id)
                .order_by(t.e2e_keys.c.created_at, t.e2e_keys.c.key_id)).all()
        return [_info(row) for row in rows]

    def activate(self, key_id: str) -> E2EKeyInfo:
        """INACTIVE -> ACTIVE (one atomic UPDATE); anything else is INVALID_STATE."""
        return self._transition(key_id, E2EKeyState.ACTIVE, from_states=(E2EKeyState.INACTIVE,),
                                event="e2e_key.activate", stamp="activated_at")

    def retire(self, key_id: str) -> E2EKeyInfo:
        """INACTIVE or ACTIVE -> RETIRED for good; the wrapped private key is erased."""
        return self._transition(key_id, E2EKeyState.RETIRED,
                                from_states=(E2EKeyState.INACTIVE, E2EKeyState.ACTIVE),
                                event="e2e_key.retire", stamp="retired_at",
                                wrapped_private_key=None)

    @staticmethod
    def check_server_url(server_url: str) -> None:
        """Raise CONFIGURATION_INVALID unless ``server_url`` can go into a pin (§8)."""
        probe = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
        try:
            ChannelPin(application_id="probe", server_url=server_url, key_id="probe",
                       suite=ChannelSuite.X25519_SHA256_AES128GCM, public_key=probe)
        except InvalidPin as exc:
            raise ConfigurationInvalid(exc.detail) from None

    def pin(self, key_id: str, *, server_url: str) -> ChannelPin:
        """The pin an app built for this key's application ships (§8). Not for RETIRED keys."""
        info = self.get(key_id)
        if info.state is E2EKeyState.RETIRED:
            raise InvalidState(f"E2E key {key_id} is retired; create a new key")
        try:
            pin = ChannelPin(application_id=info.application_id, server_url=server_url,
                             key_id=info.key_id, suite=info.suite, public_key=info.public_key)
        except InvalidPin as exc:
            raise ConfigurationInvalid(exc.detail) from None
        audit.record_alone(self.db, at=now_ms(self.clock), actor=audit.Actor.OPERATOR,
                           event="e2e_key.export_pin", outcome=audit.Outcome.SUCCESS,
                           application_id=info.application_id,
                           details={"keyId": key_id, "serverUrl": server_url})
        return pin

    def _transition(self, key_id: str, target: E2EKeyState, *,
                    from_states: tuple[E2EKeyState, ...], event: str, stamp: str,
                    **changes: object) -> E2EKeyInfo:
        now = now_ms(self.clock)
        with self.db.write() as conn:
            row = conn.execute(
                update(t.e2e_keys)
                .where(t.e2e_keys.c.key_id == key_id,
                       t.e2e_keys.c.state.in_([s.value for s in from_states]))
                .values(state=target.value, **{stamp: now}, **changes)
                .returning(t.e2e_keys.c.application_id)).first()
            if row is None:
                current = conn.execute(
                    select(t.e2e_keys.c.state).where(t.e2e_keys.c.key_id == key_id)
                ).scalar_one_or_none()
                if current is None:
                    raise NotFound(f"no E2E key {key_id!r}")
                raise InvalidState(f"E2E key {key_id} is {current}; cannot make it {target}")
            audit.record(conn, at=now, actor=audit.Actor.OPERATOR, event=event,
                         outcome=audit.Outcome.SUCCESS, application_id=row.application_id,
                         details={"keyId": key_id, "state": target.value})
        self.keyring.invalidate()
        return self.get(key_id)
