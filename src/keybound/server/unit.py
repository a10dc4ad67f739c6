"""The unit of work: everything one request writes, committed together or not at all.

Every request -- a device ceremony, a relying-party call, an operator command -- runs its
service call inside one :class:`Unit`, through :func:`perform`, the one place a request's
transaction commits:

- the service reads through ``unit.read()``, checks, then writes through ``unit.write()``,
  which opens the unit's one write transaction (and stores the secure channel's replay mark
  first, docs/channel.md §6);
- the service records what it did with ``unit.emit(...)``: event rows (the audit trail, and
  the outbox next), written in the same transaction at commit;
- :func:`perform` commits on success, and also when the service raises
  :class:`~keybound.errors.CeremonyFailed` (a ceremony that ran and failed: its counted
  failure or lock is the outcome). Any other error rolls everything back; the refusal is then
  recorded -- as an event if the actor is identified, else counted as anonymous noise
  (server.events.noise) -- with the replay mark, so a refused request cannot be replayed
  either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from sqlalchemy import Connection, insert
from sqlalchemy.exc import IntegrityError

from keybound.channel import DecryptionFailed
from keybound.errors import CeremonyFailed, KeyboundError
from keybound.server.clock import Clock, now_ms
from keybound.server.events.model import Actor, Event, EventType, Outcome
from keybound.server.events.noise import NoiseCounter
from keybound.server.repositories.events import insert_events
from keybound.storage import tables as t
from keybound.storage.db import Database
from keybound.storage.prepared import Prepared

T = TypeVar("T")

_INSERT_MARK: Final = Prepared(insert(t.seen_requests))  # every sealed request writes one


@dataclass(frozen=True, kw_only=True)
class ReplayMark:
    """A sealed request's id, remembered until it expires (docs/channel.md §6)."""

    request_id: bytes
    expires_at: int  # ms


class Replayed(DecryptionFailed):
    """The request's replay mark is stored already: it was seen before."""


class Unit:
    """One request's transaction, replay mark and events (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        actor: Actor,
        action: EventType,
        mark: ReplayMark | None = None,
        application_id: str | None = None,
        identified: bool = False,
    ) -> None:
        self.db = db
        self.clock = clock
        self.now = now_ms(clock)
        self.actor = actor
        self.action = action
        self.mark = mark
        self.application_id = application_id
        self.device_id: str | None = None
        self.operation_id: str | None = None
        #: the actor proved who it is (an API key, a device's signature): its refusals are
        #: audited; before that they are anonymous noise
        self.identified = identified
        self.events: list[Event] = []
        self._after_commit: list[Callable[[], None]] = []
        self._stack: ExitStack | None = None
        self._conn: Connection | None = None

    # -- what the request is about (for its refusal's event) ------------------------------

    def about(
        self,
        *,
        application_id: str | None = None,
        device_id: str | None = None,
        operation_id: str | None = None,
    ) -> None:
        self.application_id = application_id or self.application_id
        self.device_id = device_id or self.device_id
        self.operation_id = operation_id or self.operation_id

    def identify(self) -> None:
        """The device proved possession of a key of the registration it names."""
        self.identified = True

    # -- reading and writing ----------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (the write transaction, once that is open)."""
        if self._conn is not None:
            yield self._conn
            return
        with self.db.read() as conn:
            yield conn

    def write(self) -> Connection:
        """The unit's write transaction, opened on first use with the replay mark."""
        if self._conn is None:
            stack = ExitStack()
            conn = stack.enter_context(self.db.write())
            self._stack, self._conn = stack, conn
            if self.mark is not None:
                try:
                    self._insert_mark(conn)
                except Replayed as exc:
                    self.rollback(exc)
                    raise
        return self._conn

    def _insert_mark(self, conn: Connection) -> None:
        assert self.mark is not None
        try:
            _INSERT_MARK.rowcount(
                conn, {"request_id": self.mark.request_id, "expires_at": self.mark.expires_at}
            )
        except IntegrityError:
            self.mark = None  # stored by the request this one replays
            raise Replayed() from None

    def emit(
        self,
        type: EventType,
        *,
        outcome: Outcome = Outcome.SUCCESS,
        code: str | None = None,
        application_id: str | None = None,
        subject: str | None = None,
        operation_id: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        """Record an event; it is written with the unit's changes, at commit."""
        self.events.append(
            Event(
                type=type,
                actor=self.actor,
                outcome=outcome,
                created_at=self.now,
                code=code,
                application_id=application_id or self.application_id,
                subject=subject or self.device_id,
                operation_id=operation_id or self.operation_id,
                payload=payload,
            )
        )

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the unit has committed (e.g. to drop a cache it changed)."""
        self._after_commit.append(callback)

    # -- the end: perform() calls exactly one of these ------------------------------------

    def commit(self) -> None:
        if self._conn is None and self.mark is None and not self.events:
            self._committed()
            return  # wrote nothing: no transaction
        conn = self.write()
        try:
            insert_events(conn, self.events)
        except BaseException as exc:
            self.rollback(exc)
            raise
        self._close(None)
        self._committed()

    def _committed(self) -> None:
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    def rollback(self, exc: BaseException) -> None:
        self.events.clear()
        self._after_commit.clear()
        if self._stack is not None:
            self._close(exc)

    def _close(self, exc: BaseException | None) -> None:
        stack, self._stack, self._conn = self._stack, None, None
        assert stack is not None
        if exc is None:
            stack.close()  # COMMIT
        else:
            stack.__exit__(type(exc), exc, exc.__traceback__)  # ROLLBACK

    def refused(self, exc: KeyboundError, noise: NoiseCounter, cause: str) -> None:
        """After a rollback: the refusal, and the replay mark, in a transaction of their own.
        An identified actor's refusal is an event; an anonymous one is counted."""
        if self.identified:
            self.emit(self.action, outcome=Outcome.REJECTED, code=exc.code.value)
        else:
            noise.count(f"{cause}:{exc.code.value}", self.now)
        try:
            self.commit()
        except Replayed:
            self.rollback(DecryptionFailed())


def perform(unit: Unit, call: Callable[[Unit], T], *, noise: NoiseCounter, cause: str) -> T:
    """Run ``call`` in ``unit``; the one place a request's transaction commits (see the
    module docstring). ``cause`` names the route for anonymous refusals' counts."""
    try:
        result = call(unit)
    except CeremonyFailed:
        unit.commit()
        raise
    except Replayed as exc:
        unit.rollback(exc)
        noise.count(f"{cause}:replayed", unit.now)
        raise
    except KeyboundError as exc:
        unit.rollback(exc)
        unit.refused(exc, noise, cause)
        raise
    except BaseException as exc:
        unit.rollback(exc)
        raise
    try:
        unit.commit()
    except Replayed:
        noise.count(f"{cause}:replayed", unit.now)
        raise
    return result
