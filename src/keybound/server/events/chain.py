"""The audit chain (docs/audit.md): every audit entry commits to the one before it, and
signed checkpoints anchor the chain, so an edited, removed, reordered or inserted entry is
found, and where.

Sealing gives each entry a position in the chain (``chain_seq``: 1, 2, 3, ...), the previous
entry's hash (``chain_prev``; :data:`GENESIS` for the first) and its own,
``chain_hash = SHA-256(LP(label) || chain_prev || entry)`` over the entry's immutable columns
as stored (:func:`entry_hash`). One chain for the whole database. A checkpoint is a compact
JWS by a result-signing key (``typ`` :data:`CHECKPOINT_TYPE`) over one position and its
``chainHash``: periodic ones bound how much of the chain's newest end can be rewritten
unseen; a PRUNE checkpoint is where retention deleted the positions up to it, and anchors
the entry after them.

Pure: no SQL, no I/O.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, NamedTuple

from keybound.errors import ErrorCode, KeyboundError
from keybound.protocol import b64u_decode, b64u_encode
from keybound.server.events.results import ResultInvalid, verify_compact
from keybound.server.records import CheckpointRecord, EventRecord

#: ``chain_prev`` of the first entry of a chain
GENESIS: Final = bytes(32)
LABEL: Final = b"keybound-audit-v1"
#: the JWS ``typ`` of a checkpoint: never mistaken for a signed result, or the reverse
CHECKPOINT_TYPE: Final = "keybound-audit-checkpoint+jwt"
_CHECKPOINT_CLAIMS: Final = ("iss", "iat", "kind", "chainSeq", "chainHash")


class CheckpointKind(StrEnum):
    PERIODIC = "PERIODIC"
    PRUNE = "PRUNE"  # the positions up to its own were deleted by retention


def _opt(value: str | None) -> bytes:
    """An optional text column: absent and empty stay distinct."""
    if value is None:
        return b"\x00"
    data = value.encode()
    return b"\x01" + struct.pack(">I", len(data)) + data


def entry_hash(
    prev: bytes,
    *,
    id: str,
    type: str,
    application_id: str | None,
    subject: str | None,
    operation_id: str | None,
    actor: str,
    outcome: str,
    code: str | None,
    payload: str | None,
    created_at: int,
) -> bytes:
    """``chain_hash`` of an entry: its immutable columns, as stored (``payload`` is the JSON
    text, hashed as it is, never re-encoded), after the previous entry's hash. ``seq`` and
    the position are not part of an entry (the links order the chain); ``delivery``
    changes as the outbox delivers."""
    return hashlib.sha256(
        b"".join(
            (
                struct.pack(">I", len(LABEL)),
                LABEL,
                prev,
                _opt(id),
                _opt(type),
                _opt(application_id),
                _opt(subject),
                _opt(operation_id),
                _opt(actor),
                _opt(outcome),
                _opt(code),
                _opt(payload),
                struct.pack(">q", created_at),
            )
        )
    ).digest()


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One audit entry as the chain sees it (an ``events`` row, or a line of an export)."""

    seq: int
    id: str
    type: str
    application_id: str | None
    subject: str | None
    operation_id: str | None
    actor: str
    outcome: str
    code: str | None
    payload: str | None
    created_at: int
    chain_seq: int | None
    chain_prev: bytes | None
    chain_hash: bytes | None

    @classmethod
    def of(cls, record: EventRecord) -> Entry:
        return cls(
            seq=record.seq,
            id=record.id,
            type=record.type,
            application_id=record.application_id,
            subject=record.subject,
            operation_id=record.operation_id,
            actor=record.actor,
            outcome=record.outcome,
            code=record.code,
            payload=record.payload,
            created_at=record.created_at,
            chain_seq=record.chain_seq,
            chain_prev=record.chain_prev,
            chain_hash=record.chain_hash,
        )

    def computed_hash(self) -> bytes | None:
        if self.chain_prev is None:
            return None
        return entry_hash(
            self.chain_prev,
            id=self.id,
            type=self.type,
            application_id=self.application_id,
            subject=self.subject,
            operation_id=self.operation_id,
            actor=self.actor,
            outcome=self.outcome,
            code=self.code,
            payload=self.payload,
            created_at=self.created_at,
        )

    def to_json(self) -> dict[str, Any]:
        """A line of an export (docs/audit.md): every hashed column, as stored."""
        return {
            "seq": self.seq,
            "id": self.id,
            "type": self.type,
            "applicationId": self.application_id,
            "subject": self.subject,
            "operationId": self.operation_id,
            "actor": self.actor,
            "outcome": self.outcome,
            "code": self.code,
            "payload": self.payload,
            "createdAt": self.created_at,
            "chainSeq": self.chain_seq,
            "chainPrev": None if self.chain_prev is None else b64u_encode(self.chain_prev),
            "chainHash": None if self.chain_hash is None else b64u_encode(self.chain_hash),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Entry:
        def raw(name: str) -> bytes | None:
            value = data[name]
            return None if value is None else b64u_decode(value)

        position = data["chainSeq"]
        return cls(
            seq=int(data["seq"]),
            id=data["id"],
            type=data["type"],
            application_id=data["applicationId"],
            subject=data["subject"],
            operation_id=data["operationId"],
            actor=data["actor"],
            outcome=data["outcome"],
            code=data["code"],
            payload=data["payload"],
            created_at=int(data["createdAt"]),
            chain_seq=None if position is None else int(position),
            chain_prev=raw("chainPrev"),
            chain_hash=raw("chainHash"),
        )


def checkpoint_claims(
    *, issuer: str, issued_at: int, kind: CheckpointKind, chain_seq: int, chain_hash: bytes
) -> dict[str, Any]:
    return {
        "iss": issuer,
        "iat": issued_at,
        "kind": kind.value,
        "chainSeq": chain_seq,
        "chainHash": b64u_encode(chain_hash),
    }


def checkpoint_to_json(record: CheckpointRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "kind": record.kind,
        "chainSeq": record.chain_seq,
        "chainHash": b64u_encode(record.chain_hash),
        "jws": record.jws,
        "createdAt": record.created_at,
    }


def checkpoint_from_json(data: Mapping[str, Any]) -> CheckpointRecord:
    return CheckpointRecord(
        id=int(data["id"]),
        kind=str(data["kind"]),
        chain_seq=int(data["chainSeq"]),
        chain_hash=b64u_decode(data["chainHash"]),
        jws=str(data["jws"]),
        created_at=int(data["createdAt"]),
    )


# --------------------------------------------------------------------------- verification


class FindingKind(StrEnum):
    """What :func:`verify_chain` found, at an entry or a checkpoint."""

    EDITED = "edited"  # the entry's columns do not match its own hash
    REMOVED = "removed"  # the entry this one follows is missing
    INSERTED = "inserted"  # the entry is not part of the chain (it forks it)
    REORDERED = "reordered"  # the entry is placed before the entry it follows
    UNCHAINED = "unchained"  # a hash without its position or predecessor
    CHECKPOINT_INVALID = "checkpoint_invalid"  # its signature, or its stored copy, is wrong
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"  # the chain does not reach the signed hash
    DIVERGED = "diverged"  # differs from (or lost) what an export kept from before records


@dataclass(frozen=True, kw_only=True)
class Finding:
    kind: FindingKind
    seq: int | None  # the entry's seq (None: a checkpoint's finding about a missing entry)
    position: int | None  # the chain position it concerns
    detail: str
    checkpoint_id: int | None = None

    def __str__(self) -> str:
        where = (
            f"entry seq {self.seq}" if self.seq is not None else f"chain position {self.position}"
        )
        if self.checkpoint_id is not None:
            where = f"checkpoint {self.checkpoint_id} ({where})"
        return f"{where}: {self.kind.value}: {self.detail}"


class AuditChainInvalid(KeyboundError):
    """The audit trail was altered; ``findings`` says what and where, in chain order."""

    code = ErrorCode.AUDIT_CHAIN_INVALID

    def __init__(self, findings: list[Finding]) -> None:
        super().__init__(
            f"{len(findings)} finding(s), first: {findings[0]}",
            findings=[str(finding) for finding in findings],
        )
        self.findings = findings


@dataclass(frozen=True, kw_only=True)
class VerifiedChain:
    entries: int  # sealed entries, each checked
    unsealed: int  # entries written, not yet sealed into the chain (moments old)
    first: int | None  # the first and last chain positions present
    last: int | None
    checkpoints: int  # valid checkpoints
    signed_up_to: int | None  # the newest position a checkpoint anchors
    pruned_up_to: int | None  # the position of the newest PRUNE checkpoint
    unsigned: int  # sealed entries after signed_up_to: anchored by no signature yet


@dataclass(frozen=True, kw_only=True)
class _Checked:
    position: int
    kind: CheckpointKind
    chain_hash: bytes


class _Link(NamedTuple):
    """An entry's place in the chain: all :func:`verify_chain` keeps of it once its columns
    are checked, so a long trail is held as hashes only."""

    position: int
    seq: int
    prev: bytes
    hash: bytes


def verify_chain(
    entries: Iterable[Entry],
    checkpoints: Iterable[CheckpointRecord],
    jwks: Mapping[str, Any],
    *,
    kept: Iterable[Entry] = (),
) -> VerifiedChain:
    """Check every entry and checkpoint; raise :class:`AuditChainInvalid` with every finding,
    else say how much is anchored by a signature. ``jwks``: the result-signing keys' public
    keys (docs/audit.md: which to trust). ``kept``: the entries of an earlier export an
    auditor kept, which the trail must still hold (or have pruned)."""
    findings: list[Finding] = []
    checked = _checkpoints(checkpoints, jwks, findings)
    prune = max(
        (c for c in checked if c.kind is CheckpointKind.PRUNE),
        key=lambda c: c.position,
        default=None,
    )
    links: list[_Link] = []
    unsealed = 0
    for entry in entries:
        if entry.chain_hash is None:
            unsealed += 1  # written, not sealed yet: the sealer takes it next
            continue
        if entry.chain_seq is None or entry.chain_prev is None:
            findings.append(
                Finding(
                    kind=FindingKind.UNCHAINED,
                    seq=entry.seq,
                    position=None,
                    detail="a hash without its chain position or predecessor",
                )
            )
            continue
        # an entry's columns must give its own hash (docs/audit.md: edited)
        if entry.computed_hash() != entry.chain_hash:
            findings.append(
                Finding(
                    kind=FindingKind.EDITED,
                    seq=entry.seq,
                    position=entry.chain_seq,
                    detail="its columns do not match its hash",
                )
            )
        links.append(_Link(entry.chain_seq, entry.seq, entry.chain_prev, entry.chain_hash))
    links.sort()
    findings.extend(_links(links, prune))
    signed_up_to = _anchors(checked, links, prune, findings)
    findings.extend(_diverged(kept, links, prune))
    if findings:
        raise AuditChainInvalid(
            sorted(
                findings, key=lambda f: (f.position if f.position is not None else -1, f.kind.value)
            )
        )
    return VerifiedChain(
        entries=len(links),
        unsealed=unsealed,
        first=links[0].position if links else None,
        last=links[-1].position if links else None,
        checkpoints=len(checked),
        signed_up_to=signed_up_to,
        pruned_up_to=prune.position if prune else None,
        unsigned=sum(1 for link in links if signed_up_to is None or link.position > signed_up_to),
    )


def _checkpoints(
    checkpoints: Iterable[CheckpointRecord], jwks: Mapping[str, Any], findings: list[Finding]
) -> list[_Checked]:
    checked: list[_Checked] = []
    for record in checkpoints:

        def invalid(detail: str, record: CheckpointRecord = record) -> None:
            findings.append(
                Finding(
                    kind=FindingKind.CHECKPOINT_INVALID,
                    seq=None,
                    position=record.chain_seq,
                    checkpoint_id=record.id,
                    detail=detail,
                )
            )

        try:
            signed = verify_compact(record.jws, jwks, expected_type=CHECKPOINT_TYPE)
            claims = json.loads(signed.payload)
        except ResultInvalid as exc:
            invalid(f"its signature does not verify ({exc.check.value})")
            continue
        except ValueError:
            invalid("its payload is not JSON")
            continue
        if not isinstance(claims, dict) or any(name not in claims for name in _CHECKPOINT_CLAIMS):
            invalid("its payload lacks checkpoint claims")
            continue
        try:
            kind, position = CheckpointKind(claims["kind"]), claims["chainSeq"]
            chain_hash = b64u_decode(claims["chainHash"])
        except (ValueError, TypeError):
            invalid("its claims are malformed")
            continue
        # the stored copy (what the server reads to prune and index) is the signed one
        if type(position) is not int or (position, chain_hash, kind.value) != (
            record.chain_seq,
            record.chain_hash,
            record.kind,
        ):
            invalid("its stored position, hash or kind differ from what it signs")
            continue
        checked.append(_Checked(position=position, kind=kind, chain_hash=chain_hash))
    return checked


def _links(links: list[_Link], prune: _Checked | None) -> list[Finding]:
    """Follow each entry to the one it names as previous (docs/audit.md: the diagnosis)."""
    findings: list[Finding] = []
    position: dict[bytes, int] = {}
    children: dict[bytes, list[_Link]] = defaultdict(list)
    for link in links:
        position.setdefault(link.hash, link.position)
        children[link.prev].append(link)
    last = links[-1].position if links else None
    for link in links:
        parent = position.get(link.prev)
        if parent is None:
            if link.prev == GENESIS:
                continue
            if prune is not None and (
                link.position <= prune.position or link.prev == prune.chain_hash
            ):
                continue  # follows entries retention deleted (docs/audit.md: retention)
            findings.append(
                Finding(
                    kind=FindingKind.REMOVED,
                    seq=link.seq,
                    position=link.position,
                    detail="the entry it follows is missing (removed, or "
                    "rewritten with another hash)",
                )
            )
        elif parent > link.position:
            findings.append(
                Finding(
                    kind=FindingKind.REORDERED,
                    seq=link.seq,
                    position=link.position,
                    detail=f"placed before chain position {parent}, which it follows",
                )
            )
    for siblings in children.values():
        if len(siblings) < 2:
            continue  # one chain: every entry names a different previous entry
        continuing = [s for s in siblings if s.hash in children or s.position == last]
        keep = continuing[0] if continuing else siblings[0]
        findings.extend(
            Finding(
                kind=FindingKind.INSERTED,
                seq=sibling.seq,
                position=sibling.position,
                detail=f"forks the chain: entry seq {keep.seq} follows the same entry",
            )
            for sibling in siblings
            if sibling is not keep
        )
    return findings


def _anchors(
    checked: list[_Checked], links: list[_Link], prune: _Checked | None, findings: list[Finding]
) -> int | None:
    """Every checkpoint must find its signed hash at its position; the newest that does is
    how far the chain is anchored by a signature."""
    by_position = {link.position: link for link in links}
    signed_up_to: int | None = None
    for checkpoint in checked:
        entry = by_position.get(checkpoint.position)
        if entry is None:
            if prune is not None and checkpoint.position <= prune.position:
                continue  # its entry was pruned (the PRUNE checkpoint anchors what follows)
            findings.append(
                Finding(
                    kind=FindingKind.CHECKPOINT_MISMATCH,
                    seq=None,
                    position=checkpoint.position,
                    detail="the entry it signs is missing",
                )
            )
            continue
        if entry.hash != checkpoint.chain_hash:
            findings.append(
                Finding(
                    kind=FindingKind.CHECKPOINT_MISMATCH,
                    seq=entry.seq,
                    position=checkpoint.position,
                    detail="the chain was rewritten up to this entry",
                )
            )
            continue
        signed_up_to = max(signed_up_to or checkpoint.position, checkpoint.position)
    if prune is not None and signed_up_to is None:
        signed_up_to = prune.position
    return signed_up_to


def _diverged(kept: Iterable[Entry], links: list[_Link], prune: _Checked | None) -> list[Finding]:
    """What an earlier export recorded must still be there, with the same hash: a chain
    rewritten and signed anew (by someone holding the signing key) diverges from it. The
    first divergence is reported: everything after it follows from it."""
    by_position = {link.position: link.hash for link in links}
    recorded = sorted(
        (e for e in kept if e.chain_seq is not None and e.chain_hash),
        key=lambda e: e.chain_seq or 0,
    )
    for entry in recorded:
        assert entry.chain_seq is not None
        current = by_position.get(entry.chain_seq)
        if current is None and prune is not None and entry.chain_seq <= prune.position:
            continue  # pruned since
        if current != entry.chain_hash:
            return [
                Finding(
                    kind=FindingKind.DIVERGED,
                    seq=entry.seq,
                    position=entry.chain_seq,
                    detail="the kept export recorded another entry here"
                    if current
                    else "the kept export's entry is missing",
                )
            ]
    return []


__all__ = [
    "CHECKPOINT_TYPE",
    "GENESIS",
    "AuditChainInvalid",
    "CheckpointKind",
    "Entry",
    "Finding",
    "FindingKind",
    "VerifiedChain",
    "checkpoint_claims",
    "checkpoint_from_json",
    "checkpoint_to_json",
    "entry_hash",
    "verify_chain",
]
