"""Shared pieces of keybound's load harness (bench/loadgen.py, bench/seed.py, bench/compare.py).

Modules: ``procs`` (CPU and memory from /proc), ``server`` (a real ``keybound serve`` on a fresh
SQLite file or a given database URL), ``pg`` (a private PostgreSQL server, started by the
tests' ``tests/pgserver.py``), ``seeding`` (bulk registrations), ``wire`` (a lean keep-alive
HTTP/1.1 client and protocol-level device), ``floor`` (the crypto floor), ``stats``
(percentiles, tables), ``chart`` (PNG).
"""
