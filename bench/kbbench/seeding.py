"""Fast seeding: N users + N ACTIVE registrations with real P-256 public keys, inserted straight
into the database in big transactions.

Keys come from a pool (default 1000 software + 1000 hardware key pairs generated once, reused
round-robin, private keys kept in a pool file -- beside an SQLite database by default -- so
the benchmark can sign as any seeded registration); every registration gets its own random
device id and user id, exactly the columns a real activation writes
(``keybound.storage.tables.registrations``). On SQLite the rows go through the driver's
``executemany`` on one connection with ``synchronous=OFF`` for the load only; on PostgreSQL
through psycopg's ``COPY ... FROM STDIN`` (one COPY per table per batch transaction), then
``VACUUM (ANALYZE)`` of the two tables, as autovacuum would do shortly after such a load --
done here so that it does not run during a measurement; on any other database through
SQLAlchemy Core ``insert`` executemany. Seeding is incremental: it tops the application up to
``total`` registrations.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Connection, func, insert, select

from keybound import crypto
from keybound.storage import tables as t
from keybound.storage.db import Database

REG_COLUMNS = (
    "id",
    "application_id",
    "user_id",
    "state",
    "lock_reason",
    "failures",
    "sw_public_key",
    "sw_key_id",
    "hw_public_key",
    "hw_algorithm",
    "activation_hw_status",
    "pin_key",
    "platform",
    "os_version",
    "model",
    "generation",
    "created_at",
    "activated_at",
    "last_authenticated_at",
    "updated_at",
)
USER_COLUMNS = ("id", "application_id", "external_ref", "created_at")


def pool_path(db_url: str, pool_file: str | Path | None = None) -> Path | None:
    """Where the key pool's private keys are kept, so that the benchmark can authenticate as
    any seeded registration (seeded devices): ``pool_file`` if given, else beside an SQLite
    database file, else nowhere (None: the pool is generated and forgotten)."""
    if pool_file:
        return Path(pool_file)
    if not db_url.startswith("sqlite:///"):
        return None
    return Path(db_url.split("///", 1)[1] + ".seedkeys.json")


def load_or_make_pool(
    db_url: str, n: int, pool_file: str | Path | None = None
) -> tuple[list[Any], list[Any]]:
    """(software, hardware) private keys of the pool: read from the pool file if it exists,
    else generated and written there (0600)."""
    path = pool_path(db_url, pool_file)
    if path is not None and path.exists():
        data = json.loads(path.read_text())
        return ([load_key(h) for h in data["sw"]], [load_key(h) for h in data["hw"]])
    sw = [crypto.generate_p256() for _ in range(n)]
    hw = [crypto.generate_p256() for _ in range(n)]
    if path is not None:
        path.write_text(json.dumps({"sw": [_dump(k) for k in sw], "hw": [_dump(k) for k in hw]}))
        path.chmod(0o600)
    return sw, hw


def _dump(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).hex()


def load_key(text: str) -> Any:
    """A private key of the pool file (PKCS#8 DER, hex)."""
    return serialization.load_der_private_key(bytes.fromhex(text), password=None)


def key_pool(keys: list[Any]) -> list[tuple[bytes, bytes]]:
    """(SPKI DER, key id) of each key."""
    out = []
    for key in keys:
        der = crypto.public_der(key)
        out.append((der, crypto.key_id(der)))
    return out


def sample_seeded(
    db_url: str, application_id: str, n: int, pool: tuple[list[Any], list[Any]]
) -> list[tuple[str, int, int]]:
    """Up to ``n`` random seeded registrations never authenticated yet, as (device id,
    software pool index, hardware pool index)."""
    sw_idx = {kid: i for i, (_, kid) in enumerate(key_pool(pool[0]))}
    hw_idx = {der: i for i, (der, _) in enumerate(key_pool(pool[1]))}
    if not db_url.startswith("sqlite"):
        return _sample_seeded_sql(db_url, application_id, n, sw_idx, hw_idx)
    path = db_url.split("///", 1)[1]
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        top = con.execute("SELECT max(rowid) FROM registrations").fetchone()[0] or 0
        out: list[tuple[str, int, int]] = []
        seen: set[int] = set()
        rng = random.Random()
        for _ in range(50):
            want = [
                r
                for r in dict.fromkeys(rng.randint(1, top) for _ in range(2 * (n - len(out)) + 100))
                if r not in seen
            ]  # distinct rowids: a device must never be used twice
            seen.update(want)
            for chunk in range(0, len(want), 900):
                ids = want[chunk : chunk + 900]
                rows = con.execute(
                    "SELECT id, sw_key_id, hw_public_key FROM registrations WHERE rowid IN "
                    f"({','.join('?' * len(ids))}) AND application_id = ? AND model = 'seeded' "
                    "AND state = 'ACTIVE' AND last_authenticated_at IS NULL",
                    (*ids, application_id),
                ).fetchall()
                for dev, kid, hw in rows:
                    if kid in sw_idx and hw in hw_idx:
                        out.append((dev, sw_idx[kid], hw_idx[hw]))
            if len(out) >= n or len(seen) >= top:
                break
        return out[:n]
    finally:
        con.close()


def _sample_seeded_sql(
    db_url: str, application_id: str, n: int, sw_idx: dict[bytes, int], hw_idx: dict[bytes, int]
) -> list[tuple[str, int, int]]:
    """``sample_seeded`` on a server database: ORDER BY random() (one scan of the table)."""
    reg = t.registrations
    db = Database(db_url)
    try:
        with db.read() as conn:
            rows = conn.execute(
                select(reg.c.id, reg.c.sw_key_id, reg.c.hw_public_key)
                .where(
                    reg.c.application_id == application_id,
                    reg.c.model == "seeded",
                    reg.c.state == "ACTIVE",
                    reg.c.last_authenticated_at.is_(None),
                )
                .order_by(func.random())
                .limit(n)
            ).all()
    finally:
        db.dispose()
    return [
        (dev, sw_idx[bytes(kid)], hw_idx[bytes(hw)])
        for dev, kid, hw in rows
        if bytes(kid) in sw_idx and hw is not None and bytes(hw) in hw_idx
    ]


def count_registrations(db: Database, application_id: str) -> int:
    with db.read() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(t.registrations)
                .where(t.registrations.c.application_id == application_id)
            ).scalar_one()
        )


def _rows(
    application_id: str,
    start: int,
    n: int,
    sw: list[tuple[bytes, bytes]],
    hw: list[tuple[bytes, bytes]],
    now_ms: int,
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    users, regs = [], []
    k = len(sw)
    rnd = os.urandom(32 * n)
    for j in range(n):
        i = start + j
        user_id = str(uuid.UUID(bytes=rnd[32 * j : 32 * j + 16], version=4))
        device_id = str(uuid.UUID(bytes=rnd[32 * j + 16 : 32 * j + 32], version=4))
        at = now_ms - (n - j)  # distinct, in the past
        s_der, s_id = sw[i % k]
        h_der, _ = hw[(i * 7 + 3) % k]
        users.append((user_id, application_id, f"seed-{i}", at))
        regs.append(
            (
                device_id,
                application_id,
                user_id,
                "ACTIVE",
                None,
                0,
                s_der,
                s_id,
                h_der,
                "ES256",
                "OK",
                None,
                "ANDROID",
                "14",
                "seeded",
                1,
                at,
                at,
                None,
                at,
            )
        )
    return users, regs


def seed(
    db_url: str,
    application_id: str,
    total: int,
    *,
    pool: int = 1000,
    batch: int = 50_000,
    log: Any = print,
    pool_file: str | Path | None = None,
) -> dict[str, Any]:
    """Top ``application_id`` up to ``total`` registrations (creating the application if it
    does not exist). ``pool_file``: where the key pool's private keys are kept (default:
    beside an SQLite database; not kept for other databases). Returns counts and timings."""
    from keybound.server.services import Keybound

    kb = Keybound.open(db_url)
    if application_id not in kb.admin.application_ids():
        kb.admin.create_application(application_id)
    db = kb.db
    have = count_registrations(db, application_id)
    todo = max(0, total - have)
    t0 = time.perf_counter()
    keys = load_or_make_pool(db_url, pool, pool_file)
    sw, hw = key_pool(keys[0]), key_pool(keys[1])
    t_keys = time.perf_counter() - t0
    now_ms = int(time.time() * 1000)
    done = 0
    t_vacuum = 0.0
    dialect = db.engine.dialect.name
    with db.engine.connect() as conn:
        load = (
            _SqliteLoad(conn)
            if db.is_sqlite
            else _CopyLoad(conn)
            if dialect == "postgresql"
            else _CoreLoad(conn)
        )
        while done < todo:
            n = min(batch, todo - done)
            users, regs = _rows(application_id, have + done, n, sw, hw, now_ms)
            load.insert(users, regs)
            done += n
            if log and (done % (batch * 4) == 0 or done == todo):
                el = time.perf_counter() - t0
                log(f"  seeded {have + done:>9,} registrations ({done / el:,.0f}/s)")
        if todo:
            t1 = time.perf_counter()
            load.finish()
            t_vacuum = time.perf_counter() - t1
    elapsed = time.perf_counter() - t0
    size = _db_bytes(db)
    db.dispose()
    return {
        "application": application_id,
        "backend": dialect,
        "before": have,
        "inserted": todo,
        "total": have + todo,
        "seconds": elapsed,
        "key_pool_seconds": t_keys,
        "finish_seconds": t_vacuum,
        "rows_per_s": todo / elapsed if elapsed and todo else 0.0,
        "db_bytes": size,
    }


_Rows = list[tuple[Any, ...]]


class _SqliteLoad:
    """The sqlite3 driver's executemany on one connection, ``synchronous=OFF`` meanwhile."""

    user_sql = (
        f"INSERT INTO users ({', '.join(USER_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(USER_COLUMNS))})"
    )
    reg_sql = (
        f"INSERT INTO registrations ({', '.join(REG_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(REG_COLUMNS))})"
    )

    def __init__(self, conn: Connection) -> None:
        raw = conn.connection.driver_connection  # sqlite3.Connection, autocommit mode
        assert raw is not None
        self.raw: Any = raw
        self.raw.execute("PRAGMA synchronous=OFF")  # this connection only, for the bulk load
        self.raw.execute("PRAGMA cache_size=-524288")  # 512 MiB page cache for index inserts
        self.raw.execute("PRAGMA temp_store=MEMORY")

    def insert(self, users: _Rows, regs: _Rows) -> None:
        self.raw.execute("BEGIN IMMEDIATE")
        self.raw.executemany(self.user_sql, users)
        self.raw.executemany(self.reg_sql, regs)
        self.raw.execute("COMMIT")

    def finish(self) -> None:
        self.raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        # the PRAGMAs above stay with this connection, which seed() discards (db.dispose())
        # no ANALYZE: the server never runs it, so neither does the seeded database


class _CopyLoad:
    """PostgreSQL: psycopg's COPY FROM STDIN (text format), one transaction per batch."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        raw = conn.connection.driver_connection  # psycopg.Connection
        assert raw is not None
        self.raw: Any = raw

    def insert(self, users: _Rows, regs: _Rows) -> None:
        with self.conn.begin(), self.raw.cursor() as cur:
            for table, columns, rows in (
                ("users", USER_COLUMNS, users),
                ("registrations", REG_COLUMNS, regs),
            ):
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)

    def finish(self) -> None:
        # VACUUM cannot run in a transaction block: a connection of its own, autocommit
        with self.conn.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM (ANALYZE) users, registrations")


class _CoreLoad:
    """Any other database: SQLAlchemy Core insert executemany."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def insert(self, users: _Rows, regs: _Rows) -> None:
        with self.conn.begin():
            self.conn.execute(
                insert(t.users), [dict(zip(USER_COLUMNS, u, strict=True)) for u in users]
            )
            self.conn.execute(
                insert(t.registrations), [dict(zip(REG_COLUMNS, r, strict=True)) for r in regs]
            )

    def finish(self) -> None:
        pass


def _db_bytes(db: Database) -> int:
    """The database's size on disk (SQLite: file + WAL; PostgreSQL: pg_database_size)."""
    if db.is_sqlite:
        path = db.url.split("///", 1)[1]
        return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
    if db.engine.dialect.name == "postgresql":
        with db.read() as conn:
            return int(
                conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one()
            )
    return 0
