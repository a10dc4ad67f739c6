"""The tamper-evident audit trail (docs/audit.md) on a real database: every entry is sealed
into the chain, signed checkpoints anchor it, and `verify` finds each kind of edit -- an
edited payload or outcome, a deleted entry, two entries swapped, a forged entry inserted, an
entry unsealed to be edited, an edited checkpoint, a consistently rewritten chain, a removed
tail -- and says where; in the database and in an export. Concurrent writers and sealers
never fork it, and on PostgreSQL no writer waits for another's commit; retention replaces a
pruned prefix with a signed checkpoint. SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
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
    CHECKPOINT_TYPE,
    GENESIS,
    AuditChainInvalid,
    CheckpointKind,
    Entry,
    FindingKind,
    checkpoint_claims,
    entry_hash,
)
from keybound.server.events.model import Actor, EventType
from keybound.server.events.results import ResultSigner, generate_signing_key, public_jwk
from keybound.server.repositories.events import insert_events
from keybound.server.services import Keybound
from keybound.server.services.audit import AuditTrail, ExportInvalid, lines_of, verify_export
from keybound.server.services.retention import Retention
from keybound.server.unit import Unit, perform
from keybound.storage import tables as t
from tests.helpers import RelyingParty
from tests.server.services.test_authentication import activated

E = t.events
DAY = 86_400
Place = tuple[FindingKind, int | None, int | None]  # kind, entry seq, chain position


def trail(rp: RelyingParty, n: int = 3) -> None:
    """Some history: an activation and a few authentications, reads and refusals."""
    device = activated(rp)
    for _ in range(n):
        assert device.authenticate().status_code == 200
    rp.call("GET", "/rp/v1/users/nobody", expect=404)  # an audited refusal


def entries(kb: Keybound) -> list[Any]:
    """Every entry, sealed (what the sealer does moments after commit on PostgreSQL), in
    chain order."""
    kb.audit.seal()
    with kb.db.read() as conn:
        return list(conn.execute(select(E).order_by(E.c.chain_seq)))


def findings(kb: Keybound) -> list[Place]:
    with pytest.raises(AuditChainInvalid) as info:
        kb.admin.audit_verify()
    return [(f.kind, f.seq, f.position) for f in info.value.findings]


def at(kind: FindingKind, row: Any) -> Place:
    return kind, row.seq, row.chain_seq


def write(kb: Keybound, statement: Any) -> None:
    with kb.db.write() as conn:
        conn.execute(statement)


def columns(row: Any) -> dict[str, Any]:
    return {
        c: getattr(row, c)
        for c in (
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
    }


def forged_entry(prev: bytes, **changes: Any) -> dict[str, Any]:
    row = {
        "id": "00000000-0000-4000-8000-00000000f0f0",
        "type": "device.unlock",
        "application_id": "app",
        "subject": "someone",
        "operation_id": None,
        "actor": "OPERATOR",
        "outcome": "SUCCESS",
        "code": None,
        "payload": None,
        "created_at": 1,
        **changes,
    }
    return {**row, "chain_prev": prev, "chain_hash": entry_hash(prev, **row)}


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- the chain as written ---------------------------------------------------------------------


def test_every_entry_commits_to_the_one_before(rp: RelyingParty, kb: Keybound) -> None:
    trail(rp)
    rows = entries(kb)
    assert rows[0].chain_prev == GENESIS
    assert [r.chain_seq for r in rows] == list(range(1, len(rows) + 1))
    for before, after in itertools.pairwise(rows):
        assert after.chain_prev == before.chain_hash
    for row in rows:
        assert row.chain_hash == entry_hash(row.chain_prev, **columns(row))
    verified = kb.admin.audit_verify()
    assert (verified.entries, verified.unsealed, verified.last) == (
        len(rows),
        0,
        rows[-1].chain_seq,
    )
    assert verified.signed_up_to is None and verified.unsigned == len(rows)
    made = kb.admin.audit_checkpoint()
    assert made is not None and made.chain_seq == rows[-1].chain_seq
    assert kb.admin.audit_checkpoint() is None  # the head is signed already
    verified = kb.admin.audit_verify()
    assert (verified.signed_up_to, verified.unsigned, verified.checkpoints) == (
        rows[-1].chain_seq,
        0,
        1,
    )


def test_the_running_server_signs_checkpoints_by_itself(
    rp: RelyingParty, kb: Keybound, clock: Any
) -> None:
    trail(rp, 1)
    clock.advance(61)  # the maintenance interval
    activated(rp)  # a device request pokes the housekeeping
    kb.maintenance.join()
    with kb.db.read() as conn:
        signed = conn.execute(select(t.audit_checkpoints.c.chain_seq)).scalars().all()
    assert len(signed) == 1
    assert kb.admin.audit_verify().signed_up_to == signed[0]


# -- each kind of edit is found, and where ----------------------------------------------------


def edit_payload(kb: Keybound, rows: list[Any]) -> list[Place]:
    victim = next(r for r in rows[1:-1] if r.payload)
    write(kb, update(E).where(E.c.seq == victim.seq).values(payload=victim.payload + " "))
    return [at(FindingKind.EDITED, victim)]


def edit_outcome(kb: Keybound, rows: list[Any]) -> list[Place]:
    victim = next(r for r in rows if r.outcome == "REJECTED")
    write(kb, update(E).where(E.c.seq == victim.seq).values(outcome="SUCCESS", code=None))
    return [at(FindingKind.EDITED, victim)]


def delete_entry(kb: Keybound, rows: list[Any]) -> list[Place]:
    write(kb, delete(E).where(E.c.seq == rows[2].seq))
    return [at(FindingKind.REMOVED, rows[3])]


def delete_first(kb: Keybound, rows: list[Any]) -> list[Place]:
    write(kb, delete(E).where(E.c.seq == rows[0].seq))  # no prune checkpoint allows it
    return [at(FindingKind.REMOVED, rows[1])]


def swap_two(kb: Keybound, rows: list[Any]) -> list[Place]:
    a, b = rows[2], rows[3]
    with kb.db.write() as conn:  # the two entries trade places (all but seq and position)
        for target, source in ((a, b), (b, a)):
            conn.execute(
                update(E)
                .where(E.c.seq == target.seq)
                .values(
                    **columns(source), chain_prev=source.chain_prev, chain_hash=source.chain_hash
                )
            )
    return [at(FindingKind.REORDERED, a)]


def insert_forged(kb: Keybound, rows: list[Any]) -> list[Place]:
    """A forged entry that links correctly to the one before it, the positions after it
    moved on to make room, as an attacker with the database would."""
    after = rows[2]
    with kb.db.write() as conn:
        conn.execute(
            update(E).where(E.c.chain_seq > after.chain_seq).values(chain_seq=E.c.chain_seq + 1)
        )
        conn.execute(
            insert(E).values(
                seq=rows[-1].seq + 1000,
                chain_seq=after.chain_seq + 1,
                **forged_entry(after.chain_hash),
            )
        )
    return [(FindingKind.INSERTED, rows[-1].seq + 1000, after.chain_seq + 1)]


def unseal_to_edit(kb: Keybound, rows: list[Any]) -> list[Place]:
    """An entry edited and stripped of its chain values, hoping to be sealed anew as a new
    one: it is, at the end, but the gap where it was stays."""
    victim = rows[2]
    write(
        kb,
        update(E)
        .where(E.c.seq == victim.seq)
        .values(outcome="FAILURE", chain_seq=None, chain_prev=None, chain_hash=None),
    )
    return [at(FindingKind.REMOVED, rows[3])]


def rewrite_chain(kb: Keybound, rows: list[Any]) -> list[Place]:
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
            conn.execute(
                update(E)
                .where(E.c.seq == row.seq)
                .values(**values, chain_prev=prev, chain_hash=new)
            )
            prev = new
    return [at(FindingKind.CHECKPOINT_MISMATCH, rows[-1])]


def remove_tail(kb: Keybound, rows: list[Any]) -> list[Place]:
    kb.admin.audit_checkpoint()
    write(kb, delete(E).where(E.c.seq == rows[-1].seq))
    return [(FindingKind.CHECKPOINT_MISMATCH, None, rows[-1].chain_seq)]


def edit_checkpoint_signature(kb: Keybound, rows: list[Any]) -> list[Place]:
    made = kb.admin.audit_checkpoint()
    assert made is not None
    head, body, signature = made.jws.split(".")
    claims = json.loads(b64d(body))
    claims["chainSeq"] = rows[1].chain_seq  # "signed" an earlier head
    forged = f"{head}.{b64e(json.dumps(claims).encode())}.{signature}"
    write(kb, update(t.audit_checkpoints).values(jws=forged, chain_seq=rows[1].chain_seq))
    return [(FindingKind.CHECKPOINT_INVALID, None, rows[1].chain_seq)]


def edit_checkpoint_copy(kb: Keybound, rows: list[Any]) -> list[Place]:
    kb.admin.audit_checkpoint()
    write(kb, update(t.audit_checkpoints).values(chain_hash=rows[1].chain_hash))
    return [(FindingKind.CHECKPOINT_INVALID, None, rows[-1].chain_seq)]


def sign_with_another_key(kb: Keybound, rows: list[Any]) -> list[Place]:
    """A checkpoint by a key the server never had (an attacker's) is no checkpoint."""
    attacker = ResultSigner([generate_signing_key()])
    jws = attacker.sign(
        checkpoint_claims(
            issuer="x",
            issued_at=0,
            kind=CheckpointKind.PERIODIC,
            chain_seq=rows[-1].chain_seq,
            chain_hash=rows[-1].chain_hash,
        ),
        typ=CHECKPOINT_TYPE,
    )
    write(
        kb,
        insert(t.audit_checkpoints).values(
            kind="PERIODIC",
            chain_seq=rows[-1].chain_seq,
            chain_hash=rows[-1].chain_hash,
            jws=jws,
            created_at=0,
        ),
    )
    return [(FindingKind.CHECKPOINT_INVALID, None, rows[-1].chain_seq)]


TAMPERING: dict[str, Callable[[Keybound, list[Any]], list[Place]]] = {
    "edit a payload": edit_payload,
    "edit an outcome": edit_outcome,
    "delete an entry": delete_entry,
    "delete the first entry": delete_first,
    "swap two entries": swap_two,
    "insert a forged entry": insert_forged,
    "unseal an entry to edit it": unseal_to_edit,
    "rewrite the chain": rewrite_chain,
    "remove the tail": remove_tail,
    "edit a checkpoint's signature": edit_checkpoint_signature,
    "edit a checkpoint's stored copy": edit_checkpoint_copy,
    "sign a checkpoint with another key": sign_with_another_key,
}


@pytest.mark.parametrize("tamper", TAMPERING.values(), ids=TAMPERING.keys())
def test_each_kind_of_edit_is_found_and_located(
    rp: RelyingParty, kb: Keybound, tamper: Any
) -> None:
    trail(rp)
    rows = entries(kb)
    assert len(rows) >= 6
    expected = tamper(kb, rows)
    assert findings(kb) == expected


def test_the_cli_names_the_finding_and_fails(rp: RelyingParty, kb: Keybound, capsys: Any) -> None:
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
    unit = Unit(kb.db, kb.clock, actor=Actor.OPERATOR, action=EventType.ADMIN_READ, identified=True)
    unit.emit(EventType.ADMIN_READ, payload={"writer": label})
    return unit


def writers(rows: list[Any]) -> list[str]:
    return [json.loads(r.payload)["writer"] for r in rows if r.payload and "writer" in r.payload]


def test_two_writers_at_once(kb: Keybound, backend: str) -> None:
    """On PostgreSQL a writer never waits for another's commit (entries are sealed after
    it); on SQLite writers take turns anyway. Either way the two entries end up in one
    chain, each after the other."""
    first = event_unit(kb, "first")
    insert_events(first.write(), first.events)  # written, not committed
    first.events.clear()
    done = threading.Event()

    def second() -> None:
        perform(event_unit(kb, "second"), lambda u: None, noise=kb.noise, cause="test")
        done.set()

    thread = threading.Thread(target=second)
    thread.start()
    if backend == "postgres":
        assert done.wait(10)  # committed while the first is still open
        kb.audit.seal()  # the second is sealed; the first is not visible yet
    else:
        time.sleep(0.5)
        assert not done.is_set()  # SQLite's writers queue on the writer lock
    first.commit()
    thread.join(10)
    rows = entries(kb)
    assert sorted(writers(rows)) == ["first", "second"]
    assert writers(rows) == (["second", "first"] if backend == "postgres" else ["first", "second"])
    assert rows[-1].chain_prev == rows[-2].chain_hash
    kb.admin.audit_verify()


def test_many_writers_and_sealers_make_one_chain(kb: Keybound) -> None:
    stop = threading.Event()
    others = [AuditTrail(kb.db, kb.clock, kb.results) for _ in range(3)]  # other processes'

    def work(n: int) -> None:
        for i in range(10):
            perform(event_unit(kb, f"{n}.{i}"), lambda u: None, noise=kb.noise, cause="test")

    def seal(trail: AuditTrail) -> None:
        while not stop.is_set():
            trail.seal()

    sealers = [threading.Thread(target=seal, args=(o,)) for o in others]
    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in [*sealers, *threads]:
        thread.start()
    for thread in threads:
        thread.join(60)
    stop.set()
    for thread in sealers:
        thread.join(60)
    verified = kb.admin.audit_verify()
    assert verified.entries >= 60 and verified.unsealed == 0
    with kb.db.read() as conn:  # no two entries name the same previous one, or position
        for column in (E.c.chain_prev, E.c.chain_seq):
            assert (
                conn.execute(select(column).group_by(column).having(func.count() > 1)).all() == []
            )


# -- export -----------------------------------------------------------------------------------


def export(kb: Keybound) -> list[str]:
    out = io.StringIO()
    kb.admin.audit_export(out)
    return out.getvalue().splitlines(keepends=True)


def entries_of(lines: list[str]) -> list[Entry]:
    return [Entry.from_json(json.loads(line)["entry"]) for line in lines if '"entry"' in line]


def test_an_export_verifies_against_the_published_keys(rp: RelyingParty, kb: Keybound) -> None:
    trail(rp)
    lines = export(kb)
    parsed, verified = verify_export(lines, jwks=rp.jwks())
    assert verified.unsigned == 0  # signed to its end: the export made the checkpoint
    assert parsed.entries[-1].chain_seq == verified.last == verified.signed_up_to
    # the export itself is audited (after it: the next export has it)
    assert entries(kb)[-1].type == "audit.export"


def test_an_edited_export_is_found_out(rp: RelyingParty, kb: Keybound) -> None:
    trail(rp)
    lines = export(kb)
    index = next(i for i, line in enumerate(lines) if '"outcome":"REJECTED"' in line)
    entry = json.loads(lines[index])["entry"]
    entry["outcome"], entry["code"] = "SUCCESS", None
    edited = [*lines[:index], json.dumps({"entry": entry}) + "\n", *lines[index + 1 :]]
    with pytest.raises(AuditChainInvalid) as info:
        verify_export(edited, jwks=rp.jwks())
    assert [(f.kind, f.seq) for f in info.value.findings] == [(FindingKind.EDITED, entry["seq"])]
    # a line dropped (and the count fixed up) breaks the chain where it was
    gone = 3  # an entry in the middle (line 0 is the header)
    count = len(entries_of(lines))
    dropped = [line for i, line in enumerate(lines) if i != gone]
    dropped[-1] = dropped[-1].replace(f'"entries":{count}', f'"entries":{count - 1}')
    with pytest.raises(AuditChainInvalid) as info:
        verify_export(dropped, jwks=rp.jwks())
    assert [(f.kind, f.seq) for f in info.value.findings] == [
        (FindingKind.REMOVED, json.loads(lines[gone + 1])["entry"]["seq"])
    ]
    # a cut export is refused as incomplete, not taken for a shorter trail
    with pytest.raises(ExportInvalid):
        verify_export(lines[:-3], jwks=rp.jwks())


def test_an_export_forged_with_its_own_keys_fails_against_the_servers(
    rp: RelyingParty, kb: Keybound
) -> None:
    """The keys an export carries prove nothing by themselves: an auditor checks it against
    the server's JWKS it keeps (keybound audit verify --jwks)."""
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
        digest = entry_hash(
            prev,
            id=new.id,
            type=new.type,
            application_id=new.application_id,
            subject=new.subject,
            operation_id=new.operation_id,
            actor=new.actor,
            outcome=new.outcome,
            code=new.code,
            payload=new.payload,
            created_at=new.created_at,
        )
        rewritten.append(
            json.dumps({"entry": {**values, "chainPrev": b64e(prev), "chainHash": b64e(digest)}})
            + "\n"
        )
        prev = digest
    last = rows[-1].chain_seq
    assert last is not None
    token = ResultSigner([attacker]).sign(
        checkpoint_claims(
            issuer="x", issued_at=0, kind=CheckpointKind.PERIODIC, chain_seq=last, chain_hash=prev
        ),
        typ=CHECKPOINT_TYPE,
    )
    checkpoint = {
        "checkpoint": {
            "id": 1,
            "kind": "PERIODIC",
            "chainSeq": last,
            "chainHash": b64e(prev),
            "jws": token,
            "createdAt": 0,
        }
    }
    forged = [
        json.dumps(header) + "\n",
        *rewritten,
        json.dumps(checkpoint) + "\n",
        json.dumps({"end": {"entries": len(rows), "checkpoints": 1}}) + "\n",
    ]
    verify_export(forged)  # consistent with the keys it carries ...
    with pytest.raises(AuditChainInvalid) as info:  # ... not with the server's
        verify_export(forged, jwks=rp.jwks())
    assert {f.kind for f in info.value.findings} == {FindingKind.CHECKPOINT_INVALID}


def test_a_kept_export_finds_a_history_rewritten_and_signed_anew(
    rp: RelyingParty, kb: Keybound
) -> None:
    """Someone holding the master key can rewrite the chain and sign a new checkpoint over
    it: the database then verifies. An export the auditor kept from before does not agree."""
    trail(rp)
    kept = entries_of(export(kb))
    trail(rp, 1)
    rows = entries(kb)
    victim = next(r for r in rows if r.outcome == "REJECTED")
    prev = next(r.chain_hash for r in reversed(rows) if r.chain_seq < victim.chain_seq)
    with kb.db.write() as conn:
        for row in rows:
            if row.chain_seq < victim.chain_seq:
                continue
            values = columns(row)
            if row.seq == victim.seq:
                values.update(outcome="SUCCESS", code=None)
            new = entry_hash(prev, **values)
            conn.execute(
                update(E)
                .where(E.c.seq == row.seq)
                .values(**values, chain_prev=prev, chain_hash=new)
            )
            prev = new
        conn.execute(update(t.audit_head).values(chain_hash=prev))
        conn.execute(delete(t.audit_checkpoints))
    kb.admin.audit_checkpoint()  # signed with the server's own key
    kb.admin.audit_verify()  # the database alone cannot tell
    with pytest.raises(AuditChainInvalid) as info:
        kb.admin.audit_verify(kept=kept)
    assert [(f.kind, f.seq) for f in info.value.findings] == [(FindingKind.DIVERGED, victim.seq)]
    with pytest.raises(AuditChainInvalid):  # nor does a new export
        verify_export(export(kb), jwks=rp.jwks(), kept=kept)


def test_export_files_are_never_overwritten(rp: RelyingParty, kb: Keybound, tmp_path: Any) -> None:
    from keybound.cli.server import _export

    trail(rp, 1)
    target = tmp_path / "audit.jsonl"
    assert _export(kb.admin, str(target)) == 0
    with pytest.raises(FileExistsError):
        _export(kb.admin, str(target))
    with target.open(encoding="utf-8") as handle:
        verify_export(lines_of(handle), jwks=rp.jwks())


# -- retention keeps the chain verifiable -----------------------------------------------------


def test_a_pruned_prefix_is_replaced_by_a_signed_checkpoint(
    rp: RelyingParty, kb: Keybound, clock: Any
) -> None:
    trail(rp)
    old = entries(kb)
    clock.advance(100 * DAY)
    trail(rp, 1)
    pruned = kb.admin.prune(Retention(events_days=50))
    assert pruned.events == len(old)
    kept = entries(kb)
    assert kept[0].chain_seq == old[-1].chain_seq + 1
    with kb.db.read() as conn:
        checkpoints = conn.execute(select(t.audit_checkpoints)).all()
    assert ("PRUNE", old[-1].chain_seq) in [(c.kind, c.chain_seq) for c in checkpoints]
    assert min(c.chain_seq for c in checkpoints) == old[-1].chain_seq  # the older went
    verified = kb.admin.audit_verify()
    assert (verified.pruned_up_to, verified.first) == (old[-1].chain_seq, kept[0].chain_seq)
    verify_export(export(kb), jwks=rp.jwks())  # an export after pruning verifies too
    # but an entry deleted after the pruned prefix is no prune
    write(kb, delete(E).where(E.c.seq == kept[0].seq))
    assert findings(kb) == [at(FindingKind.REMOVED, kept[1])]


def test_an_interrupted_prune_still_verifies(rp: RelyingParty, kb: Keybound, clock: Any) -> None:
    """The checkpoint is committed before the first batch is deleted: a prune that stops
    half way leaves a trail that verifies, and the next prune finishes it."""
    trail(rp)
    old = entries(kb)
    clock.advance(100 * DAY)
    trail(rp, 1)
    kb.audit.stop_sealer()  # PostgreSQL: its writes are not the prune's
    kb.maintenance.join()  # nor are the housekeeping's the requests above may have started
    entries(kb)  # sealed: the prune's own seal finds nothing to write
    writes = 0
    real_write = kb.db.write

    def stop_after_one_batch() -> Any:
        nonlocal writes
        writes += 1
        if writes == 3:  # the checkpoint's transaction, one batch, then the "crash"
            raise KeyboardInterrupt
        return real_write()

    kb.db.write = stop_after_one_batch  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        kb.audit.prune(int((clock() - 50 * DAY) * 1000), batch=2)
    kb.db.write = real_write  # type: ignore[method-assign]
    assert entries(kb)[0].chain_seq == old[2].chain_seq  # two went, the rest stayed
    kb.admin.audit_verify()
    kb.admin.prune(Retention(events_days=50))
    assert kb.admin.audit_verify().first == old[-1].chain_seq + 1


def test_a_trail_pruned_to_nothing_goes_on_from_the_signed_head(kb: Keybound, clock: Any) -> None:
    perform(event_unit(kb, "old"), lambda u: None, noise=kb.noise, cause="test")
    old = entries(kb)
    clock.advance(500 * DAY)
    assert kb.audit.prune(int(clock() * 1000)) == len(old)
    assert entries(kb) == []
    perform(event_unit(kb, "next"), lambda u: None, noise=kb.noise, cause="test")
    (row,) = entries(kb)
    assert (row.chain_seq, row.chain_prev) == (old[-1].chain_seq + 1, old[-1].chain_hash)
    assert kb.admin.audit_verify().pruned_up_to == old[-1].chain_seq
