"""The operator's attestation trust (server.attestation_trust; docs/protocol.md §6.5.4):
anchors added and removed by a directory, never anything else; the status list from a
file or a URL, cached, its age reported."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from keybound.attestation import AttestationFormat, TrustStore
from keybound.errors import ConfigurationInvalid
from keybound.server.attestation_trust import (
    ENV_REVOCATION_LIST,
    ENV_REVOCATION_REFRESH,
    ENV_TRUST_DIR,
    AttestationTrust,
)
from tests.attestation import factory

SHIPPED = {
    fmt: {a.key_sha256 for a in TrustStore.builtin(fmt).anchors} for fmt in AttestationFormat
}


def keys(store: TrustStore) -> set[str]:
    return {anchor.key_sha256 for anchor in store.anchors}


def test_without_configuration_only_the_shipped_anchors() -> None:
    trust = AttestationTrust.from_environment({})
    assert keys(trust.android) == SHIPPED[AttestationFormat.ANDROID_KEY]
    assert keys(trust.apple) == SHIPPED[AttestationFormat.APPLE_APP_ATTEST]
    assert keys(trust.tpm) == SHIPPED[AttestationFormat.TPM]
    assert trust.revocation is None and trust.revocation_list(dt.datetime.now(dt.UTC)) is None


def test_a_directory_adds_and_removes_anchors(tmp_path: Path) -> None:
    root = factory.issue(factory.name("Operator TPM CA"))
    (tmp_path / "tpm").mkdir()
    (tmp_path / "tpm" / "vendor.pem").write_bytes(root.pem())
    (tmp_path / "android").mkdir()
    rsa_root = sorted(SHIPPED[AttestationFormat.ANDROID_KEY])[0]
    (tmp_path / "android" / "removed-keys.txt").write_text(
        f"# retired by the operator\n{rsa_root.upper()}  # trailing comment\n\n"
    )
    (tmp_path / ".hidden").write_text("ignored")
    trust = AttestationTrust.from_environment({ENV_TRUST_DIR: str(tmp_path)})
    added = hashlib.sha256(root.spki).hexdigest()
    assert keys(trust.tpm) == SHIPPED[AttestationFormat.TPM] | {added}
    assert keys(trust.android) == SHIPPED[AttestationFormat.ANDROID_KEY] - {rsa_root}
    assert keys(trust.apple) == SHIPPED[AttestationFormat.APPLE_APP_ATTEST]
    assert any("tpm: 2 anchor(s)" in line for line in trust.summary())


@pytest.mark.parametrize(
    "layout",
    [
        {"andriod/root.pem": "pem"},  # a misspelt format
        {"android/root.crt": "pem"},  # not *.pem
        {"android/remove-keys.txt": "00"},  # a misspelt removal file
        {"apple/removed-keys.txt": "00" * 32},  # removing a key that is no anchor
        {"tpm/broken.pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
        {"tpm/empty.pem": ""},
    ],
)
def test_a_misconfigured_directory_stops_the_server(tmp_path: Path, layout: dict[str, str]) -> None:
    root = factory.issue(factory.name("Operator CA"))
    for name, content in layout.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(root.pem() if content == "pem" else content.encode())
    with pytest.raises(ConfigurationInvalid):
        AttestationTrust.configured(trust_dir=tmp_path)


def test_a_missing_directory_or_list_stops_the_server(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationInvalid):
        AttestationTrust.configured(trust_dir=tmp_path / "nowhere")
    with pytest.raises(ConfigurationInvalid):
        AttestationTrust.configured(revocation_list=str(tmp_path / "status.json"))
    (tmp_path / "status.json").write_text("{}")  # no entries object
    with pytest.raises(ConfigurationInvalid):
        AttestationTrust.configured(revocation_list=str(tmp_path / "status.json"))
    with pytest.raises(ConfigurationInvalid):
        AttestationTrust.configured(revocation_list="http://example.com/status")
    with pytest.raises(ConfigurationInvalid):  # plain http to a host that only looks local
        AttestationTrust.configured(revocation_list="http://127.0.0.1@example.invalid/status")
    with pytest.raises(ConfigurationInvalid):
        AttestationTrust.from_environment({ENV_REVOCATION_REFRESH: "hourly"})


def test_a_status_list_file_is_reread_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_text(json.dumps({"entries": {"1a": {"status": "REVOKED"}}}))
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=5)
    os.utime(path, (old.timestamp(), old.timestamp()))
    trust = AttestationTrust.from_environment(
        {ENV_REVOCATION_LIST: str(path), ENV_REVOCATION_REFRESH: "60"}
    )
    now = dt.datetime.now(dt.UTC)
    first = trust.revocation_list(now)
    assert first is not None and first.lookup(0x1A) is not None
    assert dt.timedelta(hours=4) < first.age(now) < dt.timedelta(hours=6)  # age: the file's
    assert trust.revocation_list(now + dt.timedelta(minutes=5)) is first  # unchanged file
    path.write_text(json.dumps({"entries": {"2b": {"status": "SUSPENDED"}}}))
    second = trust.revocation_list(now + dt.timedelta(minutes=10))
    assert second is not None and second.lookup(0x1A) is None and second.lookup(0x2B)
    path.unlink()  # a failed reload keeps the last good copy
    assert trust.revocation_list(now + dt.timedelta(minutes=20)) is second


@pytest.fixture
def status_server() -> Iterator[tuple[str, list[bytes]]]:
    """A real HTTP server on 127.0.0.1 serving the status list's JSON (the wire format of
    https://android.googleapis.com/attestation/status)."""
    served = [json.dumps({"entries": {"c0ffee": {"status": "REVOKED"}}}).encode()]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = served[-1]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/attestation/status", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.server
def test_a_status_list_url_is_fetched_on_use_and_refreshed(
    status_server: tuple[str, list[bytes]],
) -> None:
    url, served = status_server
    trust = AttestationTrust.configured(revocation_list=url, refresh_seconds=600)
    now = dt.datetime.now(dt.UTC)
    first = trust.revocation_list(now)
    assert first is not None and first.lookup(0xC0FFEE) is not None
    assert first.age(now) == dt.timedelta(0)
    served.append(json.dumps({"entries": {}}).encode())
    assert trust.revocation_list(now + dt.timedelta(minutes=5)) is first  # cached
    later = now + dt.timedelta(minutes=11)
    refreshed = trust.revocation_list(later)
    assert refreshed is not None and refreshed.lookup(0xC0FFEE) is None
    assert refreshed.age(later) == dt.timedelta(0)
