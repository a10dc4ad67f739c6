"""Fast seeding: N users + N ACTIVE registrations with real P-256 public keys, inserted straight
into the database in big transactions.

Keys come from a pool (default 1000 software + 1000 hardware key pairs generated once, reused
round-robin, private keys kept beside the database so the benchmark can sign as any seeded
registration); every registration gets its own random device id and user id, exactly the
columns a real activation writes (``keybound.storage.tables.registrations``). On SQLite the
rows go through the driver's ``executemany`` on one connection with
``synchronous=OFF`` for the load only; on other databases (PostgreSQL, later) through
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
from sqlalchemy import func, insert, select

from keybound import crypto
from keybound.storage import tables as t
from keybound.storage.db import Database

REG_COLUMNS = ("id", "application_id", "user_id", "state", "lock_reason", "failures",
               "sw_public_key", "sw_key_id", "hw_public_key", "hw_algorithm",
               "activation_hw_status", "pin_key", "platform", "os_version", "model",
               "generation", "created_at", "activated_at", "last_authenticated_at",
               "updated_at")
USER_COLUMNS = ("id", "application_id", "external_ref", "created_at")


def pool_path(db_url: str) -> Path | None:
    """Where the key pool's private keys are kept (SQLite: beside the database file), so
    that the benchmark can authenticate as any seeded registration (``--devices seeded``)."""
    if not db_url.startswith("sqlite:///"):
        return None
    return Path(db_url.split("///", 1)[1] + ".seedkeys.json")


def load_or_make_pool(db_url: str, n: int) -> tuple[list[Any], list[Any]]:
    """(software, hardware) private keys of the pool: read from the pool file if it exists,
    else generated and written there (0600)."""
    path = pool_path(db_url)
    if path is not None and path.exists():
        data = json.loads(path.read_text())
        return ([_load(h) for h in data["sw"]], [_load(h) for h in data["hw"]])
    sw = [crypto.generate_p256() for _ in range(n)]
    hw = [crypto.generate_p256() for _ in range(n)]
    if path is not None:
        path.write_text(json.dumps({"sw": [_dump(k) for k in sw], "hw": [_dump(k) for k in hw]}))
        path.chmod(0o600)
    return sw, hw


def _dump(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).hex()


def _load(text: str) -> Any:
    return serialization.load_der_private_key(bytes.fromhex(text), password=None)


def key_pool(keys: list[Any]) -> list[tuple[bytes, bytes]]:
    """(SPKI DER, key id) of each key."""
    out = []
    for key in keys:
        der = crypto.public_der(key)
        out.append((der, crypto.key_id(der)))
    return out


def sample_seeded(db_url: str, application_id: str, n: int,
                  pool: tuple[list[Any], list[Any]]) -> list[tuple[str, int, int]]:
    """Up to ``n`` random seeded registrations never authenticated yet, as (device id,
    software pool index, hardware pool index)."""
    sw_idx = {kid: i for i, (_, kid) in enumerate(key_pool(pool[0]))}
    hw_idx = {der: i for i, (der, _) in enumerate(key_pool(pool[1]))}
    path = db_url.split("///", 1)[1]
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        top = con.execute("SELECT max(rowid) FROM registrations").fetchone()[0] or 0
        out: list[tuple[str, int, int]] = []
        seen: set[int] = set()
        rng = random.Random()
        for _ in range(50):
            want = [r for r in dict.fromkeys(rng.randint(1, top)
                                             for _ in range(2 * (n - len(out)) + 100))
                    if r not in seen]  # distinct rowids: a device must never be used twice
            seen.update(want)
            for chunk in range(0, len(want), 900):
                ids = want[chunk:chunk + 900]
                rows = con.execute(
                    "SELECT id, sw_key_id, hw_public_key FROM registrations WHERE rowid IN "
                    f"({','.join('?' * len(ids))}) AND application_id = ? AND model = 'seeded' "
                    "AND state = 'ACTIVE' AND last_authenticated_at IS NULL",
                    (*ids, application_id)).fetchall()
                for dev, kid, hw in rows:
                    if kid in sw_idx and hw in hw_idx:
                        out.append((dev, sw_idx[kid], hw_idx[hw]))
            if len(out) >= n or len(seen) >= top:
                break
        return out[:n]
    finally:
        con.close()


def count_registrations(db: Database, application_id: str) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(t.registrations).where(
            t.registrations.c.application_id == application_id)).scalar_one())


def _rows(application_id: str, start: int, n: int, sw: list[tuple[bytes, bytes]],
          hw: list[tuple[bytes, bytes]], now_ms: int) -> tuple[list[tuple[Any, ...]],
                                                               list[tuple[Any, ...]]]:
    users, regs = [], []
    k = len(sw)
    rnd = os.urandom(32 * n)
    for j in range(n):
        i = start + j
        user_id = str(uuid.UUID(bytes=rnd[32 * j:32 * j + 16], version=4))
        device_id = str(uuid.UUID(bytes=rnd[32 * j + 16:32 * j + 32], version=4))
        at = now_ms - (n - j)  # distinct, in the past
        s_der, s_id = sw[i % k]
        h_der, _ = hw[(i * 7 + 3) % k]
        users.append((user_id, application_id, f"seed-{i}", at))
        regs.append((device_id, application_id, user_id, "ACTIVE", None, 0, s_der, s_id, h_der,
                     "ES256", "OK", None, "ANDROID", "14", "seeded", 1, at, at, None, at))
    return users, regs


def seed(db_url: str, application_id: str, total: int, *, pool: int = 1000,
         batch: int = 50_000, log: Any = print) -> dict[str, Any]:
    """Top ``application_id`` up to ``total`` registrations (creating the application if it
    does not exist). Returns counts and timings."""
    from keybound.server.service import Keybound

    kb = Keybound.open(db_url)
    if application_id not in kb.applications.ids():
        kb.applications.create(application_id)
    db = kb.db
    have = count_registrations(db, application_id)
    todo = max(0, total - have)
    t0 = time.perf_counter()
    keys = load_or_make_pool(db_url, pool)
    sw, hw = key_pool(keys[0]), key_pool(keys[1])
    t_keys = time.perf_counter() - t0
    now_ms = int(time.time() * 1000)
    user_sql = (f"INSERT INTO users ({', '.join(USER_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(USER_COLUMNS))})")
    reg_sql = (f"INSERT INTO registrations ({', '.join(REG_COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(REG_COLUMNS))})")
    done = 0
    with db.engine.connect() as conn:
        if db.is_sqlite:
            raw = conn.connection.driver_connection  # sqlite3.Connection, autocommit mode
            raw.execute("PRAGMA synchronous=OFF")  # this connection only, for the bulk load
            raw.execute("PRAGMA cache_size=-524288")  # 512 MiB page cache for index inserts
            raw.execute("PRAGMA temp_store=MEMORY")
        while done < todo:
            n = min(batch, todo - done)
            users, regs = _rows(application_id, have + done, n, sw, hw, now_ms)
            if db.is_sqlite:
                raw.execute("BEGIN IMMEDIATE")
                raw.executemany(user_sql, users)
                raw.executemany(reg_sql, regs)
                raw.execute("COMMIT")
            else:
                with conn.begin():
                    conn.execute(insert(t.users), [dict(zip(USER_COLUMNS, u, strict=True))
                                                   for u in users])
                    conn.execute(insert(t.registrations),
                                 [dict(zip(REG_COLUMNS, r, strict=True)) for r in regs])
            done += n
            if log and (done % (batch * 4) == 0 or done == todo):
                el = time.perf_counter() - t0
                log(f"  seeded {have + done:>9,} registrations ({done / el:,.0f}/s)")
        if db.is_sqlite and todo:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            raw.execute("PRAGMA synchronous=NORMAL")
            # no ANALYZE: the server never runs it, so neither does the seeded database
    elapsed = time.perf_counter() - t0
    db.dispose()
    size = 0
    if db.is_sqlite:
        path = db.url.split("///", 1)[1]
        size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
    return {"application": application_id, "before": have, "inserted": todo,
            "total": have + todo, "seconds": elapsed, "key_pool_seconds": t_keys,
            "rows_per_s": todo / elapsed if elapsed and todo else 0.0,
            "db_bytes": size}
