"""The audit chain's hash, rebuilt from docs/audit.md with hashlib and struct alone (what an
auditor's own tool would do), and the verifier's diagnosis on hand-made chains."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import pytest

from keybound.server.events.chain import (
    GENESIS,
    AuditChainInvalid,
    Entry,
    FindingKind,
    entry_hash,
    verify_chain,
)

COLUMNS = (
    "id",
    "type",
    "application_id",
    "subject",
    "operation_id",
    "actor",
    "outcome",
    "code",
    "payload",
)


def documented_hash(prev: bytes, row: dict[str, Any]) -> bytes:
    """docs/audit.md: SHA-256(LP(label) || chain_prev || each column || created_at)."""
    label = b"keybound-audit-v1"
    out = struct.pack(">I", len(label)) + label + prev
    for name in COLUMNS:
        value = row[name]
        out += (
            b"\x00"
            if value is None
            else b"\x01" + struct.pack(">I", len(value.encode())) + value.encode()
        )
    return hashlib.sha256(out + struct.pack(">q", row["created_at"])).digest()


def row(n: int, **changes: Any) -> dict[str, Any]:
    return {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "type": "device.lock",
        "application_id": "bank",
        "subject": "d",
        "operation_id": None,
        "actor": "RELYING_PARTY",
        "outcome": "SUCCESS",
        "code": None,
        "payload": '{"why": "lost"}',
        "created_at": 1_750_000_000_000 + n,
        **changes,
    }


def chain(n: int) -> list[Entry]:
    entries, prev = [], GENESIS
    for i in range(1, n + 1):
        values = row(i)
        digest = entry_hash(prev, **values)
        entries.append(Entry(seq=i, chain_seq=i, chain_prev=prev, chain_hash=digest, **values))
        prev = digest
    return entries


def moved(entry: Entry, position: int) -> Entry:
    return Entry(**{**entry.__dict__, "chain_seq": position, "seq": position})


def test_the_hash_is_the_documented_one() -> None:
    values = row(1)
    assert entry_hash(GENESIS, **values) == documented_hash(GENESIS, values)
    # an absent column and an empty one are different entries
    assert entry_hash(GENESIS, **row(1, code=None)) != entry_hash(GENESIS, **row(1, code=""))
    # so are the same bytes split differently between two columns
    assert entry_hash(GENESIS, **row(1, subject="ab", code="c")) != entry_hash(
        GENESIS, **row(1, subject="a", code="bc")
    )


def test_an_intact_chain_with_entries_not_sealed_yet() -> None:
    pending = [
        Entry(seq=i, chain_seq=None, chain_prev=None, chain_hash=None, **row(i)) for i in (7, 8)
    ]
    verified = verify_chain([*chain(4), *pending], [], {"keys": []})
    assert (verified.entries, verified.unsealed, verified.first, verified.last) == (4, 2, 1, 4)


def diagnose(entries: list[Entry]) -> list[tuple[FindingKind, int | None]]:
    with pytest.raises(AuditChainInvalid) as info:
        verify_chain(entries, [], {"keys": []})
    return [(f.kind, f.position) for f in info.value.findings]


def test_diagnoses_on_hand_made_chains() -> None:
    entries = chain(6)
    # two adjacent entries swapped
    swapped = [*entries[:2], moved(entries[3], 3), moved(entries[2], 4), *entries[4:]]
    assert diagnose(swapped) == [(FindingKind.REORDERED, 3)]
    # the same entry stored twice: the copy forks the chain
    assert diagnose(
        [
            *entries[:3],
            moved(entries[2], 10),
            *[moved(e, e.chain_seq + 10) for e in entries[3:] if e.chain_seq],
        ]
    ) == [(FindingKind.INSERTED, 10)]
    # an entry edited and re-hashed, without rewriting the ones after it
    edited = dict(entries[2].__dict__, outcome="FAILURE")
    edited["chain_hash"] = entry_hash(
        edited["chain_prev"], **{k: edited[k] for k in (*COLUMNS, "created_at")}
    )
    assert diagnose([*entries[:2], Entry(**edited), *entries[3:]]) == [(FindingKind.REMOVED, 4)]
    # a hash without its position
    assert diagnose([*entries[:5], Entry(**{**entries[5].__dict__, "chain_seq": None})]) == [
        (FindingKind.UNCHAINED, None)
    ]
