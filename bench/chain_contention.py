"""What the audit chain costs on PostgreSQL: event-writing commits per second with the
server's sealer at work (entries sealed into the chain moments after each commit, docs/
audit.md) and without it, at several concurrencies; and, for comparison, with writers taking
the chain's head in turn from their first event to their commit (the design not taken).

Usage:  .venv-bench/bin/python bench/chain_contention.py [--concurrency 1,4,16] [--seconds 5]

A private PostgreSQL with its durable defaults (fsync and synchronous commit on:
kbbench.pg), one keybound database, one unit of work per commit that writes one event (as a
finish does), run by ``--concurrency`` threads for ``--seconds`` each way, interleaved. On
SQLite the writer lock already serialises every write transaction and units seal their own
entries, so the chain adds no waiting there (bench/instructions.py counts its CPU).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def rate(kb: Any, threads: int, seconds: float) -> float:
    from keybound.server.events.model import Actor, EventType
    from keybound.server.unit import Unit, perform

    stop = time.monotonic() + seconds
    counts = [0] * threads

    def work(n: int) -> None:
        while time.monotonic() < stop:
            unit = Unit(
                kb.db, kb.clock, actor=Actor.OPERATOR, action=EventType.ADMIN_READ, identified=True
            )
            unit.emit(EventType.ADMIN_READ, payload={"writer": n})
            perform(unit, lambda u: None, noise=kb.noise, cause="bench")
            counts[n] += 1

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    start = time.monotonic()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(counts) / (time.monotonic() - start)


@contextmanager
def head_locked() -> Any:
    """The design not taken: every event-writing transaction takes the chain's head (a
    transaction-scoped advisory lock) before its insert, and so holds it to its commit."""
    from sqlalchemy import text

    import keybound.server.unit as unit_module

    original = unit_module.insert_events  # type: ignore[attr-defined]

    def locked(conn: Any, events: Any) -> None:
        if events:
            conn.execute(text("SELECT pg_advisory_xact_lock(7)"))
            conn.execute(text("SELECT chain_seq FROM audit_head WHERE id = 1"))
        original(conn, events)

    unit_module.insert_events = locked  # type: ignore[attr-defined]
    try:
        yield
    finally:
        unit_module.insert_events = original  # type: ignore[attr-defined]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    from kbbench.pg import BenchPostgres

    from keybound.server.services import Keybound

    levels = [int(c) for c in args.concurrency.split(",")]
    with BenchPostgres(lifetime=600) as pg, tempfile.TemporaryDirectory() as tmp:
        kb = Keybound.open(pg.fresh_database(), master_key_file=Path(tmp) / "master.key")
        rows = []
        try:
            for threads in levels:
                plain = rate(kb, threads, args.seconds)
                kb.audit.start_sealer()
                sealed = rate(kb, threads, args.seconds)
                kb.audit.stop_sealer()
                with head_locked():
                    locked = rate(kb, threads, args.seconds)
                kb.audit.seal()
                rows.append((threads, plain, sealed, locked))
                print(
                    f"[chain] concurrency {threads}: {plain:.0f}/s without sealing, "
                    f"{sealed:.0f}/s with the sealer, {locked:.0f}/s head-locked",
                    file=sys.stderr,
                )
            kb.admin.audit_verify()
        finally:
            kb.close()
    print(
        f"\nEvent-writing commits per second on PostgreSQL {pg.version} (fsync and "
        f"synchronous_commit on), {args.seconds:.0f} s per cell\n"
    )
    print("| concurrency | no sealing | with the sealer (ratio) | head locked to commit (ratio) |")
    print("|---:|---:|---:|---:|")
    for threads, plain, sealed, locked in rows:
        print(
            f"| {threads} | {plain:.0f} | {sealed:.0f} ({sealed / plain:.2f}) | "
            f"{locked:.0f} ({locked / plain:.2f}) |"
        )


if __name__ == "__main__":
    main()
