"""The tamper-evident audit trail (docs/audit.md): signed checkpoints of the chain that every
unit of work extends (repositories.events.insert_events), an export an auditor keeps, the
verification of the database or of an export, and retention that keeps the chain verifiable.

Checkpoints are made by the running server at most once per maintenance interval when the
chain has grown (server.services.maintenance), by ``keybound audit checkpoint``, before an
export, and where retention deletes a prefix (a PRUNE checkpoint). They are housekeeping,
not requests: they write no audit event (one would move the head they sign).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Final

from sqlalchemy import delete, select

from keybound.errors import MalformedRequest
from keybound.server.clock import Clock, now_ms
from keybound.server.events.chain import (
    CHECKPOINT_TYPE,
    CheckpointKind,
    Entry,
    VerifiedChain,
    checkpoint_claims,
    checkpoint_from_json,
    checkpoint_to_json,
    verify_chain,
)
from keybound.server.records import CheckpointRecord
from keybound.server.repositories import checkpoints as cps
from keybound.server.repositories import events as ev
from keybound.server.repositories import resultkeys as keys
from keybound.server.services.resultkeys import ResultKeys
from keybound.storage import tables as t
from keybound.storage.batches import DELETE_BATCH
from keybound.storage.db import Database

#: the first line of an export (docs/audit.md: the export file)
EXPORT_FORMAT: Final = "keybound-audit-export"
EXPORT_VERSION: Final = 1


@dataclass(frozen=True, kw_only=True)
class Exported:
    entries: int
    checkpoints: int
    last_seq: int | None


class ExportInvalid(MalformedRequest):
    """An export file that is not one, or not a whole one (truncated)."""


class AuditTrail:
    def __init__(self, db: Database, clock: Clock, results: ResultKeys) -> None:
        self._db = db
        self._clock = clock
        self._results = results

    # -- checkpoints ----------------------------------------------------------------------

    def checkpoint(self, kind: CheckpointKind = CheckpointKind.PERIODIC
                   ) -> CheckpointRecord | None:
        """Sign the chain's head, unless a checkpoint signs it already (None then)."""
        with self._db.read() as conn:
            found = ev.head(conn)
            newest = cps.newest_seq(conn)
        if found is None or (newest is not None and newest >= found[0]):
            return None
        return self._sign(kind, *found)

    def _sign(self, kind: CheckpointKind, seq: int, chain_hash: bytes) -> CheckpointRecord:
        now = now_ms(self._clock)
        jws = self._results.sign(checkpoint_claims(
            issuer=self._results.issuer(), issued_at=now // 1000, kind=kind, seq=seq,
            chain_hash=chain_hash), typ=CHECKPOINT_TYPE)
        with self._db.write() as conn:
            if kind is CheckpointKind.PRUNE:  # the checkpoints of what goes are replaced
                cps.delete_before(conn, seq)
            cps.insert_checkpoint(conn, kind=kind.value, seq=seq, chain_hash=chain_hash,
                                  jws=jws, created_at=now)
        return CheckpointRecord(id=0, kind=kind.value, seq=seq, chain_hash=chain_hash, jws=jws,
                                created_at=now)

    # -- retention ------------------------------------------------------------------------

    def prune(self, before: int, *, batch: int = DELETE_BATCH) -> int:
        """Delete the entries older than ``before`` that form a prefix of the chain, after a
        PRUNE checkpoint signs the newest of them (docs/audit.md: retention). The chain's
        head is never deleted. How many entries went."""
        with self._db.read() as conn:
            boundary = ev.prune_boundary(conn, before)
        if boundary is None:
            return 0
        seq, chain_hash = boundary
        if chain_hash is not None:  # entries older than the chain need no anchor
            self._sign(CheckpointKind.PRUNE, seq, chain_hash)
        e = t.events
        chosen = select(e.c.seq).where(e.c.seq <= seq).order_by(e.c.seq).limit(batch)
        total = 0
        while True:
            with self._db.write() as conn:
                deleted: int = conn.execute(delete(e).where(
                    e.c.seq.in_(chosen.scalar_subquery()))).rowcount
            total += deleted
            if deleted < batch:
                return total

    # -- verification and export ----------------------------------------------------------

    def all_keys_jwks(self) -> dict[str, Any]:
        """Every result-signing key ever made, publication ended or not: what the server
        itself trusts to check its own checkpoints."""
        with self._db.read() as conn:
            return {"keys": [json.loads(row.public_jwk) for row in keys.all_keys(conn)]}

    def verify(self, *, kept: Iterable[Entry] = ()) -> VerifiedChain:
        """The database's trail (which must still hold the entries of an earlier export
        ``kept``); raises AuditChainInvalid."""
        with self._db.read() as conn:
            checkpoints = cps.all_checkpoints(conn)
            return verify_chain((Entry.of(record) for record in ev.in_order(conn)),
                                checkpoints, self.all_keys_jwks(), kept=kept)

    def export(self, out: IO[str]) -> Exported:
        """Write the trail to ``out`` (JSON lines, docs/audit.md), its head signed first so
        the whole of it is anchored."""
        self.checkpoint()
        with self._db.read() as conn:
            found = ev.head(conn)
            last = None if found is None else found[0]
            out.write(_line({"format": EXPORT_FORMAT, "version": EXPORT_VERSION,
                             "issuer": self._results.issuer(),
                             "exportedAt": now_ms(self._clock),
                             "jwks": self.all_keys_jwks()}))
            entries = 0
            for record in ev.in_order(conn):
                if last is not None and record.seq > last:
                    break  # committed after the export began: the next export has it
                out.write(_line({"entry": Entry.of(record).to_json()}))
                entries += 1
            checkpoints = [c for c in cps.all_checkpoints(conn)
                           if last is None or c.seq <= last]
        for checkpoint in checkpoints:
            out.write(_line({"checkpoint": checkpoint_to_json(checkpoint)}))
        out.write(_line({"end": {"entries": entries, "checkpoints": len(checkpoints),
                                 "lastSeq": last}}))
        return Exported(entries=entries, checkpoints=len(checkpoints), last_seq=last)


def _line(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n"


@dataclass(frozen=True, kw_only=True)
class ParsedExport:
    issuer: str
    exported_at: int
    jwks: dict[str, Any]
    entries: list[Entry]
    checkpoints: list[CheckpointRecord]


def read_export(lines: Iterable[str]) -> ParsedExport:
    """Parse an export; raise :class:`ExportInvalid` for what is not a whole one."""
    items = iter(lines)
    header = _parse(next(items, ""), 1)
    if header.get("format") != EXPORT_FORMAT or header.get("version") != EXPORT_VERSION:
        raise ExportInvalid("not a keybound audit export (version 1)")
    entries: list[Entry] = []
    checkpoints: list[CheckpointRecord] = []
    end: dict[str, Any] | None = None
    for number, text in enumerate(items, start=2):
        if end is not None:
            raise ExportInvalid(f"line {number}: lines after the end")
        item = _parse(text, number)
        try:
            if "entry" in item:
                entries.append(Entry.from_json(item["entry"]))
            elif "checkpoint" in item:
                checkpoints.append(checkpoint_from_json(item["checkpoint"]))
            elif "end" in item:
                end = item["end"]
            else:
                raise ExportInvalid(f"line {number}: unknown line")
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportInvalid(f"line {number}: malformed ({type(exc).__name__})") from None
    # a cut export would verify as a shorter trail: its end line says how long it is
    if end is None or end.get("entries") != len(entries) \
            or end.get("checkpoints") != len(checkpoints):
        raise ExportInvalid("the export is incomplete: its end line is missing or does not "
                            "count its lines")
    return ParsedExport(issuer=str(header.get("issuer")),
                        exported_at=int(header.get("exportedAt", 0)),
                        jwks=dict(header.get("jwks") or {}), entries=entries,
                        checkpoints=checkpoints)


def _parse(text: str, number: int) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise ExportInvalid(f"line {number}: not JSON") from None
    if not isinstance(value, dict):
        raise ExportInvalid(f"line {number}: not a JSON object")
    return value


def verify_export(lines: Iterable[str], *, jwks: dict[str, Any] | None = None,
                  kept: Iterable[Entry] = ()) -> tuple[ParsedExport, VerifiedChain]:
    """Verify an export: against ``jwks`` (the keys the auditor trusts, e.g. fetched from
    the server's JWKS URL and kept) or, without it, the keys the export carries; it must
    still hold the entries of an earlier export ``kept``."""
    parsed = read_export(lines)
    return parsed, verify_chain(parsed.entries, parsed.checkpoints,
                                jwks if jwks is not None else parsed.jwks, kept=kept)


def lines_of(handle: IO[str]) -> Iterator[str]:
    for line in handle:
        if line.strip():
            yield line


__all__ = ["EXPORT_FORMAT", "AuditTrail", "ExportInvalid", "Exported", "ParsedExport",
           "lines_of", "read_export", "verify_export"]
