"""Shared pieces of keybound's load harness (bench/loadgen.py, bench/seed.py, bench/compare.py,
bench/server_path.py).

Modules: ``procs`` (CPU and memory from /proc), ``server`` (a real ``keybound serve`` on a fresh
SQLite file or a given database URL), ``pg`` (a private PostgreSQL server, started by the
tests' ``tests/pgserver.py``), ``seeding`` (bulk registrations), ``wire`` (a lean keep-alive
HTTP/1.1 client and protocol-level device), ``load`` (the client processes), ``floor`` (the
crypto floor), ``stats`` (percentiles, tables), ``profile`` (py-spy summaries), ``chart``
(PNG), ``sdk_probe`` (the real SDK, one device, in its own process).
"""
