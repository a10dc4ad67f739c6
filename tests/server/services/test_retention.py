"""Retention (`keybound db prune`): ended operations, superseded keys, replay records, the
audit trail and the anonymous counts go when their time is up; pending operations and live
registrations never do."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from keybound.server.services import Keybound
from keybound.server.services.retention import Retention
from keybound.storage import tables as t
from tests.helpers import RawDevice, RelyingParty
from tests.server.services.test_authentication import activated

DAY = 86_400


def count(kb: Keybound, table: Any) -> int:
    with kb.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_prune_keeps_what_is_needed(rp: RelyingParty, kb: Keybound, clock: Any) -> None:
    device = activated(rp)
    for _ in range(3):
        assert device.authenticate().status_code == 200
    assert count(kb, t.superseded_keys) == 3
    ended_before = count(kb, t.operations)

    clock.advance(91 * DAY)
    pending = rp.start_operation(device.device_id)["operationId"]  # new, still pending
    pruned = kb.admin.prune(Retention(operations_days=90, superseded_keys_days=365))
    assert pruned.operations == ended_before  # activation + 3 authentications
    assert pruned.superseded_keys == 0
    assert rp.operation(pending)["state"] == "PENDING"

    # a copy of a key superseded within the retention period is still recognised
    copy_key = device.history[-1]
    clock.advance(300 * DAY)
    assert kb.admin.prune().superseded_keys == 3
    assert rp.call("GET", f"/rp/v1/operations/{pending}")["code"] == "not_found"
    # the device itself is untouched and keeps working
    assert device.authenticate().status_code == 200
    # a copy used after its retention ended is no longer recognised as a copy: it just fails
    stale = RawDevice(rp.http, rp.app_id, sw=copy_key, hw=None, device_id=device.device_id)
    response = stale.authenticate()
    assert response.json()["code"] == "authentication_failed"
    assert rp.device(device.device_id)["state"] == "ACTIVE"


def test_prune_keeps_replay_records_through_the_grace(kb: Keybound, clock: Any) -> None:
    from sqlalchemy import insert

    now_ms = int(clock() * 1000)
    with kb.db.write() as conn:
        conn.execute(
            insert(t.seen_requests),
            [
                {"request_id": b"a" * 16, "expires_at": now_ms - 5_000},  # within the grace
                {"request_id": b"b" * 16, "expires_at": now_ms - 60_000},  # long gone
                {"request_id": b"c" * 16, "expires_at": now_ms + 60_000},
            ],
        )  # live
    assert kb.admin.prune().seen_requests == 1
    with kb.db.read() as conn:
        kept = set(conn.execute(select(t.seen_requests.c.request_id)).scalars())
    assert kept == {b"a" * 16, b"c" * 16}


def test_an_expired_unused_activation_code_is_pruned(
    rp: RelyingParty, kb: Keybound, clock: Any
) -> None:
    code = rp.activation_code()
    clock.advance(100 * DAY)
    assert rp.operation(code["operationId"])["state"] == "EXPIRED"
    pruned = kb.admin.prune()  # its secrets first: they can start nothing any more
    assert (pruned.activation_secrets, pruned.operations) == (1, 1)
    assert rp.call("GET", f"/rp/v1/operations/{code['operationId']}")["code"] == "not_found"


def test_the_server_forgets_expired_activation_secrets_by_itself(
    rp: RelyingParty, kb: Keybound, clock: Any
) -> None:
    """Tokens and typed codes that can start nothing any more are erased by the running
    server's housekeeping, and give their hints back; a live one stays."""
    expired = rp.activation_code()
    clock.advance(901)  # the default lifetime, 900 s
    live = rp.activation_code()
    kb.maintenance.poke()
    assert kb.maintenance.running is not None
    kb.maintenance.running.join(timeout=30)
    with kb.db.read() as conn:
        kept = set(conn.execute(select(t.activation_secrets.c.operation_id)).scalars())
    assert kept == {live["operationId"]}
    assert rp.operation(expired["operationId"])["state"] == "EXPIRED"


def test_prune_deletes_in_bounded_batches(
    rp: RelyingParty, kb: Keybound, clock: Any, monkeypatch: Any
) -> None:
    """Each batch is its own write transaction, so a running server's requests get the
    database in between; the totals are the same as in one go."""
    device = activated(rp)
    for _ in range(5):
        assert device.authenticate().status_code == 200
    ended = count(kb, t.operations)
    now_ms = int(clock() * 1000)
    with kb.db.write() as conn:
        conn.execute(
            t.seen_requests.insert(),
            [{"request_id": bytes([i]) * 16, "expires_at": now_ms - 60_000} for i in range(5)],
        )
    writes = 0
    real_write = kb.db.write

    def counting_write() -> Any:
        nonlocal writes
        writes += 1
        return real_write()

    seen, events = count(kb, t.seen_requests), count(kb, t.events)
    kb.audit.stop_sealer()  # PostgreSQL: its writes are not the prune's
    kb.audit.seal()  # as the server's sealer does moments after each commit
    monkeypatch.setattr(kb.db, "write", counting_write)
    clock.advance(500 * DAY)
    pruned = kb.admin.prune(batch=2)
    assert (pruned.operations, pruned.superseded_keys, pruned.seen_requests, pruned.events) == (
        ended,
        5,
        seen,
        events,
    )
    assert count(kb, t.operations) == 0 and count(kb, t.superseded_keys) == 0
    assert count(kb, t.seen_requests) == 0
    # ceil((n + 1) / 2) batches per table (the last one finds fewer than 2; the activation
    # was started, so no secret is left: one batch), then one each for the noise counts, the
    # three (empty) webhook-log tables and the expired post-operation contexts, plus the
    # prune's event; the events' batches come after the signed checkpoint that replaces
    # them (one write)
    assert (
        writes
        == (ended // 2 + 1)
        + (5 // 2 + 1)
        + (seen // 2 + 1)
        + (1 + events // 2 + 1)
        + 1
        + 1
        + 3
        + 1
        + 1
    )


def test_the_audit_trail_and_the_noise_counts_have_their_own_retention(
    rp: RelyingParty, kb: Keybound, clock: Any
) -> None:
    activated(rp)
    rp.call("GET", "/rp/v1/users/nobody", expect=404)  # an audited refusal
    rp.http.get("/no/such/path")  # anonymous: counted
    kb.noise.flush()
    events, noise = count(kb, t.events), count(kb, t.noise)
    assert events > 0 and noise == 1
    clock.advance(31 * DAY)
    assert kb.admin.prune(Retention(events_days=400, noise_days=30)).noise == 1
    clock.advance(370 * DAY)
    assert kb.admin.prune(Retention(events_days=0)).events == 0  # 0 keeps it for ever
    pruned = kb.admin.prune(Retention(events_days=400))
    assert pruned.events == events  # what was there 401 days ago
    with kb.db.read() as conn:
        kept = conn.execute(select(t.events.c.type)).scalars().all()
    assert kept == ["db.prune"] * 3  # the three prunes' own events, all younger


def test_a_post_operation_context_that_was_never_released_is_erased(
    rp: RelyingParty, kb: Keybound, clock: Any
) -> None:
    device = activated(rp)
    op = rp.start_operation(
        device.device_id,
        postOperationContext={"content": "secret receipt", "mimeType": "text/plain"},
    )["operationId"]
    with kb.db.read() as conn:
        stored = conn.execute(
            select(t.operations.c.wrapped_post_context).where(t.operations.c.id == op)
        ).scalar_one()
    assert stored is not None and b"secret receipt" not in stored  # wrapped at rest
    clock.advance(600)  # the operation expired unanswered
    assert kb.admin.prune().post_contexts == 1
    with kb.db.read() as conn:
        assert (
            conn.execute(
                select(t.operations.c.wrapped_post_context).where(t.operations.c.id == op)
            ).scalar_one()
            is None
        )
