"""The tamper-evident audit trail (docs/audit.md) on a real database: every unit of work
extends the chain, signed checkpoints anchor it, and `verify` finds each kind of edit -- an
edited payload, a deleted entry, two entries swapped, a forged entry inserted, an entry
written around the chain, an edited checkpoint, a consistently rewritten chain, a removed
tail -- and says where; in the database and in an export. Concurrent writers chain without
forking; retention replaces a pruned prefix with a signed checkpoint. SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import itertools
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select, update

from keybound.server.events.chain import (
    GENESIS,
    AuditChainInvalid,
    CheckpointKind,
    Entry,
    FindingKind,
    entry_hash,
)
from keybound.server.events.model import Actor, EventType
from keybound.server.events.results import ResultSigner, generate_signing_key, public_jwk
from keybound.server.services import Keybound
from keybound.server.services.audit import ExportInvalid, lines_of, verify_export
from keybound.server.services.retention import Retention
from keybound.server.unit import Unit, perform
from keybound.storage import tables as t
from tests.helpers import RelyingParty
from tests.server.services.test_authentication import activated

E = t.events
DAY = 86_400


def trail(rp: RelyingParty, n: int = 3) -> None:
    """Some history: an activation and a few authentications, reads and refusals."""
    device = activated(rp)
    for _ in range(n):
        assert device.authenticate().status_code == 200
    rp.call("GET", "/rp/v1/users/nobody", expect=404)  # an audited refusal


def entries(kb: Keybound) -> list[Any]:
    with kb.db.read() as conn:
        return list(conn.execute(select(E).order_by(E.c.seq)))


def findings(kb: Keybound) -> list[tuple[FindingKind, int | None]]:
    with pytest.raises(AuditChainInvalid) as info:
        kb.admin.audit_verify()
    return [(f.kind, f.seq) for f in info.value.findings]


def write(kb: Keybound, statement: Any) -> None:
    with kb.db.write() as conn:
        conn.execute(statement)


def columns(row: Any) -> dict[str, Any]:
    return {c: getattr(row, c) for c in ("id", "type", "application_id", "subject",
                                         "operation_id", "actor", "outcome", "code",
                                         "payload", "created_at")}


def forged_entry(prev: bytes, **changes: Any) -> dict[str, Any]:
    row = {"id": "00000000-0000-4000-8000-00000000f0f0", "type": "device.unlock",
           "application_id": "app", "subject": "someone", "operation_id": None,
           "actor": "OPERATOR", "outcome": "SUCCESS", "code": None, "payload": None,
           "created_at": 1, **changes}
    return {**row, "chain_prev": prev, "chain_hash": entry_hash(prev, **row)}


# -- the chain as written ---------------------------------------------------------------------

def test_every_entry_commits_to_the_one_before(rp: RelyingParty, kb: Keybound) -> None:
    trail(rp)
    rows = entries(kb)
    assert rows[0].chain_prev == GENESIS
    for before, after in itertools.pairwise(rows):
        assert after.chain_prev == before.chain_hash
    for row in rows:
        assert row.chain_hash == entry_hash(row.chain_prev, **columns(row))
    verified = kb.admin.audit_verify()
    assert (verified.entries, verified.legacy, verified.last_seq) == \
        (len(rows), 0, rows[-1].seq)
    assert verified.signed_up_to is None and verified.unsigned == len(rows)
    made = kb.admin.audit_checkpoint()
    assert made is not None and made.seq == rows[-1].seq
    assert kb.admin.audit_checkpoint() is None  # the head is signed already
    verified = kb.admin.audit_verify()
    assert (verified.signed_up_to, verified.unsigned, verified.checkpoints) == \
        (rows[-1].seq, 0, 1)


def test_the_running_server_signs_checkpoints_by_itself(rp: RelyingParty, kb: Keybound,
                                                        clock: Any) -> None:
    trail(rp, 1)
    clock.advance(61)  # the maintenance interval
    activated(rp)  # a device request pokes the housekeeping
    kb.maintenance.join()
    with kb.db.read() as conn:
        signed = conn.execute(select(t.audit_checkpoints.c.seq)).scalars().all()
    assert len(signed) == 1
    assert kb.admin.audit_verify().signed_up_to == signed[0]


# -- each kind of edit is found, and where ----------------------------------------------------

def edit_payload(kb: Keybound, rows: list[Any]) -> list[tuple[FindingKind, int | None]]:
    victim = next(r for r in rows[1:-1] if r.payload)
    write(kb, update(E).where(E.c.seq == victim.seq).values(
        payload=victim.payload.replace("VALID", "INVALID").replace("OK", "NOT_OK")
        if "VALID" in victim.payload or "OK" in victim.payload else victim.payload + " "))
    return [(FindingKind.EDITED, victim.seq)]


def edit_outcome(kb: Keybound, rows: list[Any]) -> list[tuple[FindingKind, int | None]]:
    victim = next(r for r in rows if r.outcome == "REJECTED")
    write(kb, update(E).where(E.c.seq == victim.seq).values(outcome="SUCCESS", code=None))
    return [(FindingKind.EDITED, victim.seq)]


def delete_entry(kb: Keybound, rows: list[Any]) -> list[tuple[FindingKind, int | None]]:
    write(kb, delete(E).where(E.c.seq == rows[2].seq))
    return [(FindingKind.REMOVED, rows[3].seq)]


def delete_first(kb: Keybound, rows: list[Any]) -> list[tuple[FindingKind, int | None]]:
    write(kb, delete(E).where(E.c.seq == rows[0].seq))  # no prune checkpoint allows it
    return [(FindingKind.REMOVED, rows[1].seq)]


def swap_two(kb: Keybound, rows: list[Any]) -> list[tuple[FindingKind, int | None]]:
    a, b = rows[2], rows[3]
    with kb.db.write() as conn:  # the two entries trade places (everything but seq)
        for target, source in ((a, b), (b, a)):
            conn.execute(update(E).where(E.c.seq == target.seq).values(
                **columns(source), chain_prev=source.chain_prev, chain_hash=source.chain_hash))
    return [(FindingKind.REORDERED, a.seq)]


def insert_forged(kb: Keybound, rows: list[Any]) -> list[tuple[FindingKind, int | None]]:
    """A forged entry that links correctly to the one before it: the tail is moved on to
    make room, as an attacker with the database would."""
    after = rows[2]
    with kb.db.write() as conn:
        for row in reversed(rows[3:]):
            conn.execute(update(E).where(E.c.seq == row.seq).values(seq=row.seq + 1000))
        conn.execute(insert(E).values(seq=after.seq + 1, **forged_entry(after.chain_hash)))
    return [(FindingKind.INSERTED, after.seq + 1)]


def insert_unchained(kb: Keybound, rows: list[Any]) -> list[tuple[FindingKind, int | None]]:
    forged = {k: v for k, v in forged_entry(GENESIS).items() if not k.startswith("chain_")}
    with kb.db.write() as conn:
        conn.execute(insert(E).values(seq=rows[-1].seq + 1, **forged))
    return [(FindingKind.UNCHAINED, rows[-1].seq + 1)]


def rewrite_chain(kb: Keybound, rows: list[Any]) -> list[tuple[FindingKind, int | None]]:
    """The whole chain rewritten consistently from an edited entry on: every link holds;
    only the signed checkpoint tells."""
    kb.admin.audit_checkpoint()
    prev = rows[1].chain_hash
    with kb.db.write() as conn:
        for row in rows[2:]:
            values = columns(row)
            if row.seq == rows[2].seq:
                values["created_at"] += 1
            new = entry_hash(prev, **values)
            conn.execute(update(E).where(E.c.seq == row.seq).values(
                **values, chain_prev=prev, chain_hash=new))
            prev = new
    return [(FindingKind.CHECKPOINT_MISMATCH, rows[-1].seq)]


def remove_tail(kb: Keybound, rows: list[Any]) -> list[tuple[FindingKind, int | None]]:
    kb.admin.audit_checkpoint()
    write(kb, delete(E).where(E.c.seq == rows[-1].seq))
    return [(FindingKind.CHECKPOINT_MISMATCH, rows[-1].seq)]


def edit_checkpoint_signature(kb: Keybound, rows: list[Any]
                              ) -> list[tuple[FindingKind, int | None]]:
    made = kb.admin.audit_checkpoint()
    assert made is not None
    head, body, signature = made.jws.split(".")
    claims = json.loads(_b64d(body))
    claims["seq"] = rows[1].seq  # "signed" an earlier head
    forged = f"{head}.{_b64e(json.dumps(claims).encode())}.{signature}"
    write(kb, update(t.audit_checkpoints).values(jws=forged, seq=rows[1].seq))
    return [(FindingKind.CHECKPOINT_INVALID, rows[1].seq)]


def edit_checkpoint_copy(kb: Keybound, rows: list[Any]) -> list[tuple[FindingKind, int | None]]:
    kb.admin.audit_checkpoint()
    write(kb, update(t.audit_checkpoints).values(chain_hash=rows[1].chain_hash))
    return [(FindingKind.CHECKPOINT_INVALID, rows[-1].seq)]


def sign_with_another_key(kb: Keybound, rows: list[Any]
                          ) -> list[tuple[FindingKind, int | None]]:
    """A checkpoint by a key the server never had (an attacker's) is no checkpoint."""
    from keybound.server.events.chain import CHECKPOINT_TYPE, checkpoint_claims

    attacker = ResultSigner([generate_signing_key()])
    jws = attacker.sign(checkpoint_claims(issuer="x", issued_at=0, kind=CheckpointKind.PERIODIC,
                                          seq=rows[-1].seq, chain_hash=rows[-1].chain_hash),
                        typ=CHECKPOINT_TYPE)
    write(kb, insert(t.audit_checkpoints).values(
        kind="PERIODIC", seq=rows[-1].seq, chain_hash=rows[-1].chain_hash, jws=jws,
        created_at=0))
    return [(FindingKind.CHECKPOINT_INVALID, rows[-1].seq)]


def _b64d(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64e(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


TAMPERING: dict[str, Callable[[Keybound, list[Any]], list[tuple[FindingKind, int | None]]]] = {
    "edit a payload": edit_payload, "edit an outcome": edit_outcome,
    "delete an entry": delete_entry, "delete the first entry": delete_first,
    "swap two entries": swap_two, "insert a forged entry": insert_forged,
    "insert an unchained entry": insert_unchained, "rewrite the chain": rewrite_chain,
    "remove the tail": remove_tail, "edit a checkpoint's signature": edit_checkpoint_signature,
    "edit a checkpoint's stored copy": edit_checkpoint_copy,
    "sign a checkpoint with another key": sign_with_another_key,
}


@pytest.mark.parametrize("tamper", TAMPERING.values(), ids=TAMPERING.keys())
def test_each_kind_of_edit_is_found_and_located(rp: RelyingParty, kb: Keybound,
                                                tamper: Any) -> None:
    trail(rp)
    rows = entries(kb)
    assert len(rows) >= 6
    expected = tamper(kb, rows)
    assert findings(kb) == expected


def test_the_cli_names_the_finding_and_fails(rp: RelyingParty, kb: Keybound,
                                             capsys: Any) -> None:
    from keybound.cli.server import _findings, _print_verified

    trail(rp)
    rows = entries(kb)
    _print_verified(kb.admin.audit_verify())
    assert "intact" in capsys.readouterr().out
    delete_entry(kb, rows)
    with pytest.raises(AuditChainInvalid) as info:
        kb.admin.audit_verify()
    assert _findings(info.value) == 1
    assert f"entry seq {rows[3].seq}: removed" in capsys.readouterr().out


# -- concurrency: one chain, never a fork -----------------------------------------------------

def event_unit(kb: Keybound, label: str) -> Unit:
    unit = Unit(kb.db, kb.clock, actor=Actor.OPERATOR, action=EventType.ADMIN_READ,
                identified=True)
    unit.emit(EventType.ADMIN_READ, payload={"writer": label})
    return unit


def test_a_second_writer_waits_for_the_first_to_commit(kb: Keybound) -> None:
    """Two transactions that write events at once: the second reads the chain's head only
    after the first committed, so it links to the first's entry (no fork)."""
    from keybound.server.repositories.events import insert_events

    first = event_unit(kb, "first")
    conn = first.write()
    insert_events(conn, first.events)  # holds the chain (PostgreSQL) or the writer lock
    first.events.clear()
    done = threading.Event()

    def second() -> None:
        perform(event_unit(kb, "second"), lambda u: None, noise=kb.noise, cause="test")
        done.set()

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.5)
    assert not done.is_set()  # blocked until the first commits
    first.commit()
    thread.join(10)
    assert done.is_set()
    rows = entries(kb)
    writers = [json.loads(r.payload)["writer"] for r in rows if r.payload and "writer" in r.payload]
    assert writers == ["first", "second"]
    assert rows[-1].chain_prev == rows[-2].chain_hash
    kb.admin.audit_verify()


def test_many_concurrent_writers_make_one_chain(kb: Keybound) -> None:
    def work(n: int) -> None:
        for i in range(10):
            perform(event_unit(kb, f"{n}.{i}"), lambda u: None, noise=kb.noise, cause="test")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    verified = kb.admin.audit_verify()
    assert verified.entries >= 60
    with kb.db.read() as conn:  # no two entries name the same previous one
        forks = conn.execute(select(E.c.chain_prev).group_by(E.c.chain_prev)
                             .having(func.count() > 1)).all()
    assert forks == []


# -- export -----------------------------------------------------------------------------------

def export(kb: Keybound) -> list[str]:
    out = io.StringIO()
    kb.admin.audit_export(out)
    return out.getvalue().splitlines(keepends=True)


def test_an_export_verifies_against_the_published_keys(rp: RelyingParty,
                                                       kb: Keybound) -> None:
    trail(rp)
    lines = export(kb)
    parsed, verified = verify_export(lines, jwks=rp.jwks())
    assert verified.unsigned == 0  # signed to its end: the export made the checkpoint
    assert parsed.entries[-1].seq == verified.last_seq == verified.signed_up_to
    # the export itself is audited (after it: the next export has it)
    assert entries(kb)[-1].type == "audit.export"


def test_an_edited_export_is_found_out(rp: RelyingParty, kb: Keybound) -> None:
    trail(rp)
    lines = export(kb)
    index = next(i for i, line in enumerate(lines) if '"outcome":"REJECTED"' in line)
    entry = json.loads(lines[index])["entry"]
    entry["outcome"], entry["code"] = "SUCCESS", None
    edited = [*lines[:index], json.dumps({"entry": entry}) + "\n", *lines[index + 1:]]
    with pytest.raises(AuditChainInvalid) as info:
        verify_export(edited, jwks=rp.jwks())
    assert [(f.kind, f.seq) for f in info.value.findings] == [(FindingKind.EDITED,
                                                              entry["seq"])]
    # a line dropped (and the count fixed up) breaks the chain where it was
    gone = 3  # an entry in the middle (line 0 is the header)
    dropped = [line for i, line in enumerate(lines) if i != gone]
    dropped[-1] = dropped[-1].replace(f'"entries":{len(entries_of(lines))}',
                                      f'"entries":{len(entries_of(lines)) - 1}')
    with pytest.raises(AuditChainInvalid) as info:
        verify_export(dropped, jwks=rp.jwks())
    assert [(f.kind, f.seq) for f in info.value.findings] == [
        (FindingKind.REMOVED, json.loads(lines[gone + 1])["entry"]["seq"])]
    # a cut export is refused as incomplete, not taken for a shorter trail
    with pytest.raises(ExportInvalid):
        verify_export(lines[:-3], jwks=rp.jwks())


def entries_of(lines: list[str]) -> list[Entry]:
    return [Entry.from_json(json.loads(line)["entry"]) for line in lines if '"entry"' in line]


def test_an_export_forged_with_its_own_keys_fails_against_the_servers(
        rp: RelyingParty, kb: Keybound) -> None:
    """The keys an export carries prove nothing by themselves: an auditor checks it against
    the server's JWKS it keeps (keybound audit verify --jwks)."""
    from keybound.server.events.chain import CHECKPOINT_TYPE, checkpoint_claims

    trail(rp)
    lines = export(kb)
    header = json.loads(lines[0])
    attacker = generate_signing_key()
    header["jwks"] = {"keys": [public_jwk(attacker)]}
    rows = entries_of(lines)
    rewritten, prev = [], GENESIS
    for row in rows:  # every entry rewritten, every link recomputed
        values = {**row.to_json(), "outcome": "SUCCESS"}
        new = Entry.from_json({**values, "chainPrev": None, "chainHash": None})
        digest = entry_hash(prev, id=new.id, type=new.type, application_id=new.application_id,
                            subject=new.subject, operation_id=new.operation_id,
                            actor=new.actor, outcome=new.outcome, code=new.code,
                            payload=new.payload, created_at=new.created_at)
        rewritten.append(json.dumps({"entry": {**values, "chainPrev": _b64e(prev),
                                               "chainHash": _b64e(digest)}}) + "\n")
        prev = digest
    token = ResultSigner([attacker]).sign(checkpoint_claims(
        issuer="x", issued_at=0, kind=CheckpointKind.PERIODIC, seq=rows[-1].seq,
        chain_hash=prev), typ=CHECKPOINT_TYPE)
    checkpoint = {"checkpoint": {"id": 1, "kind": "PERIODIC", "seq": rows[-1].seq,
                                 "chainHash": _b64e(prev), "jws": token, "createdAt": 0}}
    forged = [json.dumps(header) + "\n", *rewritten, json.dumps(checkpoint) + "\n",
              json.dumps({"end": {"entries": len(rows), "checkpoints": 1}}) + "\n"]
    verify_export(forged)  # consistent with the keys it carries ...
    with pytest.raises(AuditChainInvalid) as info:  # ... not with the server's
        verify_export(forged, jwks=rp.jwks())
    assert {f.kind for f in info.value.findings} == {FindingKind.CHECKPOINT_INVALID}


def test_a_kept_export_finds_a_history_rewritten_and_signed_anew(rp: RelyingParty,
                                                                 kb: Keybound) -> None:
    """Someone holding the master key can rewrite the chain and sign a new checkpoint over
    it: the database then verifies. An export the auditor kept from before does not agree."""
    trail(rp)
    kept = entries_of(export(kb))
    trail(rp, 1)
    rows = entries(kb)
    victim = next(r for r in rows if r.outcome == "REJECTED")
    prev = next(r.chain_hash for r in reversed(rows) if r.seq < victim.seq)
    with kb.db.write() as conn:
        for row in rows:
            if row.seq < victim.seq:
                continue
            values = columns(row)
            if row.seq == victim.seq:
                values.update(outcome="SUCCESS", code=None)
            new = entry_hash(prev, **values)
            conn.execute(update(E).where(E.c.seq == row.seq).values(
                **values, chain_prev=prev, chain_hash=new))
            prev = new
        conn.execute(delete(t.audit_checkpoints))
    kb.admin.audit_checkpoint()  # signed with the server's own key
    kb.admin.audit_verify()  # the database alone cannot tell
    with pytest.raises(AuditChainInvalid) as info:
        kb.admin.audit_verify(kept=kept)
    assert [(f.kind, f.seq) for f in info.value.findings] == [(FindingKind.DIVERGED,
                                                              victim.seq)]
    with pytest.raises(AuditChainInvalid):  # nor does a new export
        verify_export(export(kb), jwks=rp.jwks(), kept=kept)


def test_export_files_are_never_overwritten(rp: RelyingParty, kb: Keybound,
                                            tmp_path: Any) -> None:
    from keybound.cli.server import _export

    trail(rp, 1)
    target = tmp_path / "audit.jsonl"
    assert _export(kb.admin, str(target)) == 0
    with pytest.raises(FileExistsError):
        _export(kb.admin, str(target))
    with target.open(encoding="utf-8") as handle:
        verify_export(lines_of(handle), jwks=rp.jwks())


# -- retention keeps the chain verifiable -----------------------------------------------------

def test_a_pruned_prefix_is_replaced_by_a_signed_checkpoint(rp: RelyingParty, kb: Keybound,
                                                            clock: Any) -> None:
    trail(rp)
    old = entries(kb)
    clock.advance(100 * DAY)
    trail(rp, 1)
    pruned = kb.admin.prune(Retention(events_days=50))
    assert pruned.events == len(old)
    kept = entries(kb)
    assert kept[0].seq == old[-1].seq + 1
    with kb.db.read() as conn:
        checkpoints = conn.execute(select(t.audit_checkpoints)).all()
    assert ("PRUNE", old[-1].seq) in [(c.kind, c.seq) for c in checkpoints]
    assert min(c.seq for c in checkpoints) == old[-1].seq  # those of what went, went
    verified = kb.admin.audit_verify()
    assert (verified.pruned_up_to, verified.first_seq) == (old[-1].seq, kept[0].seq)
    verify_export(export(kb), jwks=rp.jwks())  # an export after pruning verifies too
    # but an entry deleted after the pruned prefix is no prune
    write(kb, delete(E).where(E.c.seq == kept[0].seq))
    assert findings(kb) == [(FindingKind.REMOVED, kept[1].seq)]


def test_an_interrupted_prune_still_verifies(rp: RelyingParty, kb: Keybound,
                                             clock: Any) -> None:
    """The checkpoint is committed before the first batch is deleted: a prune that stops
    half way leaves a trail that verifies, and the next prune finishes it."""
    trail(rp)
    old = entries(kb)
    clock.advance(100 * DAY)
    trail(rp, 1)
    batches = 0
    real_write = kb.db.write

    def stop_after_one_batch() -> Any:
        nonlocal batches
        batches += 1
        if batches == 3:  # the checkpoint's transaction, one batch, then the "crash"
            raise KeyboardInterrupt
        return real_write()

    kb.db.write = stop_after_one_batch  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        kb.audit.prune(int((clock() - 50 * DAY) * 1000), batch=2)
    kb.db.write = real_write  # type: ignore[method-assign]
    assert len(entries(kb)) < len(old) + len(entries(kb))  # something went, not all
    assert entries(kb)[0].seq == old[2].seq
    kb.admin.audit_verify()
    kb.admin.prune(Retention(events_days=50))
    assert kb.admin.audit_verify().first_seq == old[-1].seq + 1


def test_the_chains_head_is_never_pruned(kb: Keybound, clock: Any) -> None:
    perform(event_unit(kb, "only"), lambda u: None, noise=kb.noise, cause="test")
    clock.advance(500 * DAY)
    before = len(entries(kb))
    assert kb.audit.prune(int(clock() * 1000)) == before - 1
    perform(event_unit(kb, "next"), lambda u: None, noise=kb.noise, cause="test")
    rows = entries(kb)
    assert rows[-1].chain_prev == rows[-2].chain_hash  # links to the kept head
    kb.admin.audit_verify()
