"""The public events: which change writes which event, in its own transaction, with what
data (docs/events.md), and operation.expired from maintenance, once per operation."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from sqlalchemy import select, text

from keybound import protocol as p
from keybound.server.events.model import Actor, Event, EventType, Outcome
from keybound.server.repositories import events as event_rows
from keybound.server.services import Keybound
from keybound.server.services.maintenance import expire_operations
from keybound.storage import tables as t
from keybound.storage.db import Database
from tests.conftest import FakeClock
from tests.helpers import RawDevice, RelyingParty, problem_code
from tests.server.services.test_resultkeys import jwcrypto_claims


def activated(rp: RelyingParty, **kwargs: Any) -> RawDevice:
    device = RawDevice(rp.http, rp.app_id)
    assert device.activate(rp.activation_code(), **kwargs).status_code == 200
    return device


def public(rp: RelyingParty, *types: str) -> list[dict[str, Any]]:
    query = "".join(f"&type={kind}" for kind in types)
    events: list[dict[str, Any]] = rp.call("GET", f"/rp/v1/events?limit=500{query}", expect=200)[
        "events"
    ]
    return events


def test_an_authentication_writes_one_event_and_no_more(rp: RelyingParty, kb: Keybound) -> None:
    device = activated(rp)
    with kb.db.read() as conn:
        before = conn.execute(text("SELECT count(*) FROM events")).scalar()
    assert device.authenticate().status_code == 200
    with kb.db.read() as conn:
        rows = conn.execute(
            select(t.events.c.type, t.events.c.actor, t.events.c.delivery)
            .where(t.events.c.seq > 0)
            .order_by(t.events.c.seq)
        ).all()
    assert len(rows) == before + 1  # the audit row is the public event: no second row
    assert tuple(rows[-1]) == ("operation.completed", "DEVICE", None)


def test_operation_events_carry_the_operation_as_the_relying_party_reads_it(make_rp: Any) -> None:
    rp = make_rp(enabledRiskData=["hwKeyServerResult"])
    device = activated(rp)
    started = rp.start_operation(
        device.device_id,
        postOperationContext={"content": "only-for-the-device", "mimeType": "text/plain"},
    )
    assert device.authenticate(operation_id=started["operationId"]).status_code == 200
    completed = public(rp, "operation.completed")[-1]
    assert completed["data"] == {"applicationId": rp.app_id, **rp.operation(started["operationId"])}
    # with the operation's signed result, verifiable by the receiver (docs/events.md §3)
    _, claims = jwcrypto_claims(completed["data"]["resultJws"], rp.jwks())
    assert (claims["operationId"], claims["state"]) == (started["operationId"], "COMPLETED")
    # risk as the application shows it: only the enabled attribute
    assert completed["data"]["riskData"] == {"hwKeyServerResult": "VALID"}
    assert "only-for-the-device" not in json.dumps(public(rp))


def test_failures_lock_and_say_so(make_rp: Any) -> None:
    rp = make_rp(amountFailuresAllowed=2)
    device = activated(rp)
    for _ in range(2):
        assert problem_code(device.authenticate(hw_mode="corrupt")) == "hardware_key_invalid"
    kinds = [
        (e["type"], e["data"].get("result", {}).get("failureCode"), e["data"].get("lockReason"))
        for e in public(rp)[2:]
    ]
    assert kinds == [
        ("operation.failed", "hardware_key_invalid", None),
        ("operation.failed", "hardware_key_invalid", None),
        ("device.locked", None, "FAILURES"),
    ]


def test_device_lifecycle_events(rp: RelyingParty) -> None:
    device = activated(rp)
    pending = rp.start_operation(device.device_id)
    path = f"/rp/v1/devices/{device.device_id}"
    rp.call("POST", f"{path}/lock", expect=200)
    rp.call("POST", f"{path}/lock", expect=200)  # already locked: nothing new happened
    rp.call("POST", f"{path}/unlock", expect=200)
    rp.call("POST", f"{path}/unlock", expect=200)  # already active: nothing new either
    rp.call("POST", f"{path}/deactivate", expect=200)
    rp.call("POST", f"{path}/deactivate", expect=200)
    events = public(rp)
    assert [e["type"] for e in events] == [
        "operation.completed",
        "device.activated",
        "device.operation_pending",
        "device.locked",
        "device.unlocked",
        "device.deactivated",
        "operation.failed",
    ]
    activated_event = events[1]["data"]
    assert activated_event == {
        "applicationId": rp.app_id,
        "deviceId": device.device_id,
        "userId": activated_event["userId"],
        "state": "ACTIVE",
        "reactivation": False,
        "hardwareKey": True,
        "platform": "ANDROID",
    }
    assert events[2]["data"]["operationId"] == pending["operationId"]
    failed = events[-1]["data"]
    assert failed["operationId"] == pending["operationId"]
    assert failed["result"] == {"failureCode": "device_inactive"}
    assert {e["data"]["deviceId"] for e in events} == {device.device_id}


def test_decline_and_reactivation(rp: RelyingParty) -> None:
    device = activated(rp)
    operation = rp.start_operation(device.device_id)
    start = device.start_auth(operation["operationId"])
    tbs = p.transcript(
        p.Purpose.DECLINE,
        application_id=rp.app_id,
        device_id=device.device_id,
        operation_id=start.operation_id,
        challenge=start.challenge,
        context_digest=p.context_hash(start.pre_operation_context),
        software_public_key=b"",
    )
    from keybound import crypto

    declined = device.post(
        p.DevicePaths.AUTHENTICATION_DECLINE,
        p.DeclineRequest(
            application_id=rp.app_id,
            device_id=device.device_id,
            operation_id=start.operation_id,
            software_key_id=crypto.key_id(crypto.public_der(device.sw)),
            software_signature=crypto.sign_p256(device.sw, tbs),
        ),
    )
    assert declined.status_code == 200
    issued = rp.call("POST", f"/rp/v1/devices/{device.device_id}/reactivation", expect=201)
    assert device.activate(issued).status_code == 200
    events = public(rp)
    assert events[3]["type"] == "operation.failed"
    assert events[3]["data"]["result"] == {"failureCode": "declined"}
    _, claims = jwcrypto_claims(events[3]["data"]["resultJws"], rp.jwks())
    assert (claims["state"], claims["failureCode"]) == ("FAILED", "declined")
    assert events[-1]["type"] == "device.activated"
    assert events[-1]["data"]["reactivation"] is True


def test_expired_operations_end_once_each(rp: RelyingParty, kb: Keybound, clock: FakeClock) -> None:
    device = activated(rp)
    backend = rp.start_operation(device.device_id)
    signature = rp.start_signature(device.device_id, "I agree to contract #4711")
    code = rp.activation_code()  # an activation code nobody uses
    device.start_auth()  # device-initiated, never finished: the relying party never saw it
    clock.advance(24 * 3600)
    # read before maintenance ran: EXPIRED derived, and signed by the read
    read_first = rp.operation(signature["operationId"])["resultJws"]
    results: list[int] = []

    def run() -> None:
        results.append(expire_operations(kb.db, kb.clock, kb.noise, kb.results))

    runners = [threading.Thread(target=run) for _ in range(3)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join()
    assert sum(results) == 3  # three maintenance runs at once, each operation once
    assert expire_operations(kb.db, kb.clock, kb.noise, kb.results) == 0
    expired = public(rp, "operation.expired")
    ended = sorted([backend["operationId"], signature["operationId"], code["operationId"]])
    assert sorted(e["data"]["operationId"] for e in expired) == ended
    assert {e["data"]["state"] for e in expired} == {"EXPIRED"}
    assert rp.operation(backend["operationId"])["state"] == "EXPIRED"
    with kb.db.read() as conn:
        actors = (
            conn.execute(select(t.events.c.actor).where(t.events.c.type == "operation.expired"))
            .scalars()
            .all()
        )
        stored = dict(
            conn.execute(
                select(t.operations.c.id, t.operations.c.result_jws).where(
                    t.operations.c.id.in_(ended)
                )
            ).all()
        )
    assert set(actors) == {Actor.SYSTEM.value}
    # each expiry is stored with its signed result, which the event carries; the one a read
    # signed first is kept, not replaced
    assert stored[signature["operationId"]] == read_first
    for event in expired:
        token = event["data"]["resultJws"]
        assert token == stored[event["data"]["operationId"]]
        _, claims = jwcrypto_claims(token, rp.jwks())
        assert (claims["operationId"], claims["state"]) == (event["data"]["operationId"], "EXPIRED")
        assert "completedAt" not in claims


def test_a_refused_request_writes_no_public_event(rp: RelyingParty) -> None:
    device = activated(rp)
    rp.call("POST", f"/rp/v1/devices/{device.device_id}/deactivate", expect=200)
    response = rp.http.post(f"/rp/v1/devices/{device.device_id}/lock", headers=rp.headers)
    assert problem_code(response) == "invalid_state"
    assert [e["type"] for e in public(rp)][-1] == "device.deactivated"


@pytest.mark.postgres
def test_postgresql_public_event_writers_take_the_lock_before_drawing_seq(postgres: Any) -> None:
    """What makes polling by seq safe on PostgreSQL (repositories/events.py): while a
    poller holds the lock, a writer of a public event waits before its seq is drawn."""
    db = Database(postgres.fresh_database())
    try:
        event = Event(
            type=EventType.DEVICE_LOCKED,
            actor=Actor.RELYING_PARTY,
            outcome=Outcome.SUCCESS,
            created_at=1,
            application_id="a",
            subject="d",
        )
        seq_before = _last_seq(db)
        inserted = threading.Event()
        with db.write() as poller:
            event_rows.settle(poller)  # the exclusive lock, held to the end of this block

            def write() -> None:
                with db.write() as conn:
                    event_rows.insert_events(conn, [event])
                inserted.set()

            writer = threading.Thread(target=write)
            writer.start()
            assert not inserted.wait(0.5)  # it waits for the lock ...
            assert _last_seq(db) == seq_before  # ... before it has drawn its seq
        writer.join(5)
        assert inserted.is_set() and _last_seq(db) == seq_before + 1
    finally:
        db.dispose()


def _last_seq(db: Database) -> int:
    with db.read() as conn:
        value = conn.execute(
            text("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_seq_seq")
        ).scalar()
    return int(value or 0)


def test_an_operators_change_is_heard_by_the_application(rp: RelyingParty, kb: Keybound) -> None:
    device = activated(rp)
    kb.admin.lock_device(rp.app_id, device.device_id)
    kb.admin.deactivate_device(rp.app_id, device.device_id)
    events = public(rp, "device.locked", "device.deactivated")
    assert [(e["type"], e["data"].get("lockReason")) for e in events] == [
        ("device.locked", "OPERATOR"),
        ("device.deactivated", "OPERATOR"),
    ]
