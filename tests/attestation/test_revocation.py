"""Google's status list: the shared sample, hex/decimal keys, file and HTTP loading (a real
HTTP server on 127.0.0.1 serving the documented JSON), and the cache's reported age."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from keybound.attestation import RevocationCache, RevocationList, RevocationStatus
from keybound.errors import ConfigurationInvalid
from tests.attestation.vectors import VECTORS

STATUS = VECTORS / "android/revocation/status.json"
SUSPENDED_PEM = VECTORS / "android/revocation/suspended_cert_cc66e9a93713b6e643b26c15879786f7.pem"
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def test_shared_sample_lookups() -> None:
    listing = RevocationList.from_file(STATUS, fetched_at=T0)
    certificate = x509.load_pem_x509_certificate(SUSPENDED_PEM.read_bytes())
    entry = listing.lookup(certificate.serial_number)
    assert entry is not None and entry.status is RevocationStatus.SUSPENDED
    assert (entry.reason, entry.comment) == ("KEY_COMPROMISE", "Entry for testing only")
    assert listing.lookup(0xBADBEEF) is None
    for decimal in (
        "6681152659205225093",
        "8350192447815228107",
        "9408173275444922801",
        "11244410301401252959",
    ):
        found = listing.lookup(int(decimal))
        assert found is not None and found.status is RevocationStatus.REVOKED


def test_hex_keys_are_case_insensitive_and_unknown_statuses_refuse() -> None:
    body = {"entries": {"00ABCdef": {"status": "REVOKED"}, "12": {"status": "ON_HOLD"}}}
    listing = RevocationList.parse(json.dumps(body).encode(), fetched_at=T0, source="t")
    assert listing.lookup(0xABCDEF) is not None
    assert listing.lookup(0x12).status is RevocationStatus.REVOKED  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"{}",
        b'{"entries": []}',
        b'{"entries": {"xyz": {}}}',
        b'{"entries": {"ab": "REVOKED"}}',
        b"not json",
    ],
)
def test_malformed_lists_are_configuration_errors(body: bytes) -> None:
    with pytest.raises(ConfigurationInvalid):
        RevocationList.parse(body, fetched_at=T0, source="t")


def test_file_age_comes_from_mtime(tmp_path: Path) -> None:
    copy = tmp_path / "status.json"
    copy.write_bytes(STATUS.read_bytes())
    os.utime(copy, (T0.timestamp(), T0.timestamp()))
    listing = RevocationList.from_file(copy)
    assert listing.age(T0 + dt.timedelta(hours=5)) == dt.timedelta(hours=5)


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""
    status = 200
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(type(self).body)))
        self.end_headers()
        self.wfile.write(type(self).body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def status_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"body": STATUS.read_bytes(), "status": 200, "hits": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/attestation/status", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_fetch_and_cache_over_http(status_server: tuple[str, type[_Handler]]) -> None:
    url, handler = status_server
    cache = RevocationCache(
        lambda now: RevocationList.fetch(url, now=now), refresh_after=dt.timedelta(hours=1)
    )
    first = cache.current(T0)
    assert first is not None and first.lookup(0xCC66E9A93713B6E643B26C15879786F7) is not None
    assert cache.current(T0 + dt.timedelta(minutes=59)) is first and handler.hits == 1
    # the server breaks: the old list stays in use, and its growing age is visible
    handler.status = 503
    stale = cache.current(T0 + dt.timedelta(hours=2))
    assert stale is first and cache.last_error is not None and "503" in cache.last_error
    assert stale.age(T0 + dt.timedelta(hours=2)) == dt.timedelta(hours=2)
    handler.status = 200
    fresh = cache.current(T0 + dt.timedelta(hours=3))
    assert fresh is not first and fresh.age(T0 + dt.timedelta(hours=3)) == dt.timedelta(0)
    assert cache.last_error is None and handler.hits == 3


def test_only_https_or_loopback_urls() -> None:
    with pytest.raises(ConfigurationInvalid):
        RevocationList.fetch("http://example.com/status", now=T0)
    # the attack: plain http to another host whose URL starts like a loopback one
    for lookalike in ("http://127.0.0.1@example.invalid/status", "http://localhost.invalid/"):
        with pytest.raises(ConfigurationInvalid, match="must be https"):
            RevocationList.fetch(lookalike, now=T0)
