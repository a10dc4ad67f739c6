"""Seed a keybound database with N registrations (users + ACTIVE registrations with real
P-256 public keys from a reused key pool), fast, straight into the database.

Usage:
  .venv-bench/bin/python bench/seed.py --database-url sqlite:////tmp/kb/keybound.db \\
        --application bench --registrations 1000000 [--pool 1000] [--batch 50000]
  .venv-bench/bin/python bench/seed.py --database-url postgresql+psycopg://USER@HOST:PORT/DB \\
        --registrations 1000000 --pool-file /tmp/kb/seedkeys.json

Incremental: tops the application up to N registrations (creates the application if needed;
migrates the schema). SQLite: executemany with synchronous=OFF for the load; PostgreSQL: COPY,
then VACUUM (ANALYZE). Prints rows/s, seconds and the database size. Stop the server first
(or not: SQLite WAL lets it run, but the timings then include its contention).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kbbench.seeding import seed


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--application", default="bench")
    ap.add_argument("--registrations", type=int, required=True, help="total to reach")
    ap.add_argument("--pool", type=int, default=1000, help="P-256 key pairs generated per kind")
    ap.add_argument("--batch", type=int, default=50_000, help="rows per transaction")
    ap.add_argument(
        "--pool-file",
        help="keep the key pool's private keys here (default: "
        "beside an SQLite database file; not kept for other databases)",
    )
    ap.add_argument("--json", help="write the result here")
    a = ap.parse_args()
    r = seed(
        a.database_url,
        a.application,
        a.registrations,
        pool=a.pool,
        batch=a.batch,
        pool_file=a.pool_file,
    )
    print(
        f"seeded {r['inserted']:,} registrations (+ users) in {r['seconds']:.1f} s "
        f"({r['rows_per_s']:,.0f} registrations/s; key pool {r['key_pool_seconds']:.2f} s); "
        f"now {r['total']:,}; database {r['db_bytes'] / 2**20:.0f} MiB"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
