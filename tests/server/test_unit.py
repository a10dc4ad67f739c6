"""The unit of work (server/unit.py): the replay mark, the changes and the events of one
request commit together or not at all, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from keybound.errors import CeremonyFailed, ErrorCode, NotFound
from keybound.server.events.model import Actor, EventType, Outcome
from keybound.server.records import UserRecord
from keybound.server.repositories import applications as apps
from keybound.server.repositories import events as event_rows
from keybound.server.repositories import users
from keybound.server.services import Keybound
from keybound.server.unit import Replayed, ReplayMark, Unit, perform
from keybound.storage import tables as t

CAUSE = "test"


@pytest.fixture
def service(kb: Keybound) -> Iterator[Keybound]:
    kb.admin.create_application("bank")
    yield kb


def counts(kb: Keybound) -> dict[str, int]:
    with kb.db.read() as conn:
        return {
            name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            for name, table in (
                ("marks", t.seen_requests),
                ("users", t.users),
                ("events", t.events),
            )
        }


def unit(kb: Keybound, *, mark: bytes | None = b"m" * 16, identified: bool = False) -> Unit:
    replay = None if mark is None else ReplayMark(request_id=mark, expires_at=10**13)
    return Unit(
        kb.db,
        kb.clock,
        actor=Actor.DEVICE,
        action=EventType.USER_CREATE,
        mark=replay,
        application_id="bank",
        identified=identified,
    )


def create_user(u: Unit, user_id: str = "u1") -> str:
    users.insert_user(
        u.write(),
        UserRecord(id=user_id, application_id="bank", external_ref=None, created_at=u.now),
    )
    u.emit(EventType.USER_CREATE, subject=user_id)
    return user_id


class Boom(Exception):
    pass


def test_a_unit_commits_its_mark_changes_and_events_in_one_transaction(service: Keybound) -> None:
    before = counts(service)
    u = unit(service)
    create_user(u)
    assert counts(service) == before  # nothing visible before the commit
    u.commit()
    assert counts(service) == {k: v + 1 for k, v in before.items()}


def test_a_read_only_unit_stores_its_mark_alone(service: Keybound) -> None:
    before = counts(service)
    u = unit(service)
    with u.read() as conn:
        assert apps.config_text(conn, "bank") is not None
    perform(u, lambda _: None, noise=service.noise, cause=CAUSE)
    assert counts(service) == {**before, "marks": before["marks"] + 1}


@pytest.mark.parametrize(
    "where", ["after the mark", "after the change", "after the events", "while writing the events"]
)
def test_a_failure_anywhere_after_the_mark_leaves_nothing_half_written(
    service: Keybound, where: str, monkeypatch: Any
) -> None:
    """Whatever fails -- the service after the unit opened its transaction (and stored the
    mark), after its change, after its events, or the event INSERTs themselves -- neither
    the mark, nor the change, nor any event row stays."""
    before = counts(service)

    def call(u: Unit) -> None:
        u.write()
        if where == "after the mark":
            raise Boom
        create_user(u)
        if where == "after the change":
            raise Boom
        u.emit(EventType.USER_CREATE, subject="second event")
        if where == "after the events":
            raise Boom

    if where == "while writing the events":
        real = event_rows.insert_events

        def half(conn: Any, events: Any) -> None:
            real(conn, events[:1])  # the first event row is written, then the fault
            raise Boom

        monkeypatch.setattr("keybound.server.unit.insert_events", half)
    with pytest.raises(Boom):
        perform(unit(service), call, noise=service.noise, cause=CAUSE)
    assert counts(service) == before
    # and the same request goes through afterwards: the mark was not kept
    monkeypatch.undo()
    perform(unit(service), create_user, noise=service.noise, cause=CAUSE)
    assert counts(service) == {k: v + 1 for k, v in before.items()}


def test_a_refusal_rolls_back_and_keeps_only_the_mark_and_its_record(service: Keybound) -> None:
    """An identified actor's refusal is an event; an anonymous one is counted. Either way its
    change is gone and its mark stays, so the refused request cannot be replayed."""
    before = counts(service)

    def refused(u: Unit) -> None:
        create_user(u)
        raise NotFound("no such thing")

    with pytest.raises(NotFound):
        perform(unit(service, identified=True), refused, noise=service.noise, cause=CAUSE)
    after = counts(service)
    assert after == {
        "marks": before["marks"] + 1,
        "users": before["users"],
        "events": before["events"] + 1,
    }
    with service.db.read() as conn:
        last = event_rows.latest(conn, application_id="bank", limit=1)[0]
    assert (last.type, last.outcome, last.code) == ("user.create", "REJECTED", "not_found")
    with pytest.raises(NotFound):
        perform(unit(service, mark=b"n" * 16), refused, noise=service.noise, cause=CAUSE)
    assert counts(service) == {**after, "marks": after["marks"] + 1}
    counted = {r.cause: r.total for r in service.admin.noise(since_ms=0)}
    assert counted == {f"{CAUSE}:not_found": 1}
    with pytest.raises(Replayed):
        perform(unit(service, mark=b"n" * 16), create_user, noise=service.noise, cause=CAUSE)


def test_a_failed_ceremony_commits_its_outcome_then_refuses(service: Keybound) -> None:
    before = counts(service)

    def failed(u: Unit) -> None:
        create_user(u)  # stands for a counted failure or a lock
        u.emit(EventType.AUTHENTICATION_FINISH, outcome=Outcome.FAILURE, code="pin_invalid")
        raise CeremonyFailed("wrong PIN", code=ErrorCode.PIN_INVALID)

    with pytest.raises(CeremonyFailed):
        perform(unit(service), failed, noise=service.noise, cause=CAUSE)
    assert counts(service) == {
        "marks": before["marks"] + 1,
        "users": before["users"] + 1,
        "events": before["events"] + 2,
    }


def test_a_replay_changes_nothing_even_after_writing(service: Keybound) -> None:
    perform(unit(service), create_user, noise=service.noise, cause=CAUSE)
    before = counts(service)
    for call in (lambda u: create_user(u, "u2"), lambda u: None):
        with pytest.raises(Replayed):
            perform(unit(service), call, noise=service.noise, cause=CAUSE)
    assert counts(service) == before
    assert {r.cause: r.total for r in service.admin.noise(since_ms=0)} == {f"{CAUSE}:replayed": 2}


def test_after_commit_runs_only_once_committed(service: Keybound) -> None:
    ran: list[str] = []

    def call(u: Unit, fail: bool) -> None:
        create_user(u, f"user-{fail}")
        u.after_commit(lambda: ran.append(f"committed {fail}"))
        if fail:
            raise Boom

    with pytest.raises(Boom):
        perform(unit(service, mark=None), lambda u: call(u, True), noise=service.noise, cause=CAUSE)
    perform(unit(service, mark=None), lambda u: call(u, False), noise=service.noise, cause=CAUSE)
    assert ran == ["committed False"]
