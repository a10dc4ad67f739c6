"""The tamper-evident audit trail (docs/audit.md): sealing entries into the chain, signed
checkpoints of it, an export an auditor keeps, the verification of the database or of an
export, and retention that keeps the chain verifiable.

Sealing: on SQLite a unit of work seals its own entries (repositories.events.insert_events);
on PostgreSQL a :class:`Sealer` thread in each server process seals what was committed,
within moments, a batch per transaction, one process at a time. Checkpoints are made by the
running server at most once per maintenance interval when the chain has grown
(server.services.maintenance), by ``keybound audit checkpoint``, before an export, and where
retention deletes a prefix (a PRUNE checkpoint). They are housekeeping, not requests: they
write no audit event (one would move the head they sign).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Final

from keybound.errors import MalformedRequest
from keybound.server.clock import Clock, now_ms
from keybound.server.events.chain import (
    CHECKPOINT_TYPE,
    GENESIS,
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
from keybound.storage.batches import DELETE_BATCH, delete_in_batches
from keybound.storage.db import Database

log = logging.getLogger("keybound.server.audit")

#: the first line of an export (docs/audit.md: the export file)
EXPORT_FORMAT: Final = "keybound-audit-export"
EXPORT_VERSION: Final = 1
#: entries sealed per transaction
SEAL_BATCH: Final = 1000
#: how often a PostgreSQL server's sealer looks for entries to seal (seconds)
SEAL_INTERVAL: Final = 0.2


@dataclass(frozen=True, kw_only=True)
class Exported:
    entries: int
    checkpoints: int
    last: int | None  # the last chain position exported


class ExportInvalid(MalformedRequest):
    """An export file that is not one, or not a whole one (truncated)."""


class AuditTrail:
    def __init__(self, db: Database, clock: Clock, results: ResultKeys) -> None:
        self._db = db
        self._clock = clock
        self._results = results
        self._sealer: Sealer | None = None

    # -- sealing --------------------------------------------------------------------------

    def seal(self, *, wait: bool = True) -> int:
        """Seal every entry written and not yet sealed; how many. Without ``wait`` it returns
        at once when another sealer is at work (PostgreSQL), which takes them."""
        with self._db.read() as conn:  # the usual answer, without a write transaction
            if not ev.any_unsealed(conn):
                return 0
        total = 0
        while True:
            with self._db.write() as conn:
                sealed = ev.seal(conn, limit=SEAL_BATCH, wait=wait)
            total += sealed or 0
            if sealed is None or sealed < SEAL_BATCH:
                return total

    def start_sealer(self) -> None:
        """PostgreSQL: seal in the background, within moments of each commit (SQLite needs
        none: units seal their own entries)."""
        if self._db.is_sqlite or self._sealer is not None:
            return
        self._sealer = Sealer(lambda: self.seal(wait=False))
        self._sealer.start()

    def stop_sealer(self) -> None:
        sealer, self._sealer = self._sealer, None
        if sealer is not None:
            sealer.stop()

    # -- checkpoints ----------------------------------------------------------------------

    def checkpoint(self, kind: CheckpointKind = CheckpointKind.PERIODIC) -> CheckpointRecord | None:
        """Sign the chain's head, unless a checkpoint signs it already (None then)."""
        self.seal()
        with self._db.read() as conn:
            head = ev.head(conn)
            newest = cps.newest_position(conn)
        if head.chain_hash == GENESIS or (newest is not None and newest >= head.chain_seq):
            return None
        return self._sign(kind, head.chain_seq, head.chain_hash)

    def _sign(self, kind: CheckpointKind, position: int, chain_hash: bytes) -> CheckpointRecord:
        now = now_ms(self._clock)
        jws = self._results.sign(
            checkpoint_claims(
                issuer=self._results.issuer(),
                issued_at=now // 1000,
                kind=kind,
                chain_seq=position,
                chain_hash=chain_hash,
            ),
            typ=CHECKPOINT_TYPE,
        )
        with self._db.write() as conn:
            if kind is CheckpointKind.PRUNE:  # the checkpoints of what goes are replaced
                cps.delete_before(conn, position)
            cps.insert_checkpoint(
                conn,
                kind=kind.value,
                chain_seq=position,
                chain_hash=chain_hash,
                jws=jws,
                created_at=now,
            )
        return CheckpointRecord(
            id=0,
            kind=kind.value,
            chain_seq=position,
            chain_hash=chain_hash,
            jws=jws,
            created_at=now,
        )

    # -- retention ------------------------------------------------------------------------

    def prune(self, before: int, *, batch: int = DELETE_BATCH) -> int:
        """Delete the entries older than ``before`` that form a prefix of the chain, after a
        PRUNE checkpoint signs the newest of them (docs/audit.md: retention). How many."""
        self.seal()
        with self._db.read() as conn:
            boundary = ev.prune_boundary(conn, before)
        if boundary is None:
            return 0
        position, chain_hash = boundary
        self._sign(CheckpointKind.PRUNE, position, chain_hash)
        e = t.events
        return delete_in_batches(
            self._db, e, (e.c.seq,), e.c.chain_seq <= position, batch=batch, order=e.c.chain_seq
        )

    # -- verification and export ----------------------------------------------------------

    def all_keys_jwks(self) -> dict[str, Any]:
        """Every result-signing key ever made, publication ended or not: what the server
        itself trusts to check its own checkpoints."""
        with self._db.read() as conn:
            return {"keys": [json.loads(row.public_jwk) for row in keys.all_keys(conn)]}

    def verify(self, *, kept: Iterable[Entry] = ()) -> VerifiedChain:
        """The database's trail (which must still hold the entries of an earlier export
        ``kept``), sealed first; raises AuditChainInvalid."""
        self.seal()
        with self._db.read() as conn:
            checkpoints = cps.all_checkpoints(conn)
            return verify_chain(
                (Entry.of(record) for record in ev.in_chain_order(conn)),
                checkpoints,
                self.all_keys_jwks(),
                kept=kept,
            )

    def export(self, out: IO[str]) -> Exported:
        """Write the trail to ``out`` (JSON lines, docs/audit.md), sealed and its head
        signed first, so the whole of it is anchored."""
        self.checkpoint()
        with self._db.read() as conn:
            last = ev.head(conn).chain_seq
            out.write(
                _line(
                    {
                        "format": EXPORT_FORMAT,
                        "version": EXPORT_VERSION,
                        "issuer": self._results.issuer(),
                        "exportedAt": now_ms(self._clock),
                        "jwks": self.all_keys_jwks(),
                    }
                )
            )
            entries = 0
            # sealed up to the head read above: what is sealed later, the next export has
            for record in ev.in_chain_order(conn, up_to=last):
                out.write(_line({"entry": Entry.of(record).to_json()}))
                entries += 1
            checkpoints = [c for c in cps.all_checkpoints(conn) if c.chain_seq <= last]
        for checkpoint in checkpoints:
            out.write(_line({"checkpoint": checkpoint_to_json(checkpoint)}))
        out.write(
            _line({"end": {"entries": entries, "checkpoints": len(checkpoints), "last": last}})
        )
        return Exported(entries=entries, checkpoints=len(checkpoints), last=last)


class Sealer:
    """A PostgreSQL server process's background sealer: every :data:`SEAL_INTERVAL` it seals
    what units committed (a cheap indexed look when there is nothing)."""

    def __init__(self, seal: Any, *, interval: float = SEAL_INTERVAL) -> None:
        self._seal = seal
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keybound-sealer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._seal()
            except Exception:  # pragma: no cover - tried again at the next interval
                log.exception("sealing the audit chain failed")
        try:
            self._seal()  # what the last requests wrote
        except Exception:  # pragma: no cover
            log.exception("sealing the audit chain failed")


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
    if (
        end is None
        or end.get("entries") != len(entries)
        or end.get("checkpoints") != len(checkpoints)
    ):
        raise ExportInvalid(
            "the export is incomplete: its end line is missing or does not count its lines"
        )
    return ParsedExport(
        issuer=str(header.get("issuer")),
        exported_at=int(header.get("exportedAt", 0)),
        jwks=dict(header.get("jwks") or {}),
        entries=entries,
        checkpoints=checkpoints,
    )


def _parse(text: str, number: int) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise ExportInvalid(f"line {number}: not JSON") from None
    if not isinstance(value, dict):
        raise ExportInvalid(f"line {number}: not a JSON object")
    return value


def verify_export(
    lines: Iterable[str], *, jwks: dict[str, Any] | None = None, kept: Iterable[Entry] = ()
) -> tuple[ParsedExport, VerifiedChain]:
    """Verify an export: against ``jwks`` (the keys the auditor trusts, e.g. fetched from
    the server's JWKS URL and kept) or, without it, the keys the export carries; it must
    still hold the entries of an earlier export ``kept``."""
    parsed = read_export(lines)
    return parsed, verify_chain(
        parsed.entries, parsed.checkpoints, jwks if jwks is not None else parsed.jwks, kept=kept
    )


def lines_of(handle: IO[str]) -> Iterator[str]:
    for line in handle:
        if line.strip():
            yield line


__all__ = [
    "EXPORT_FORMAT",
    "AuditTrail",
    "ExportInvalid",
    "Exported",
    "ParsedExport",
    "Sealer",
    "lines_of",
    "read_export",
    "verify_export",
]
