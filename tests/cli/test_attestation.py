"""``keybound attestation check|anchors`` and ``keybound serve``'s trust options, run as a
user would (a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from keybound.cli import build_parser
from tests.attestation import factory

MANIFEST = Path(__file__).resolve().parents[1] / "vectors" / "attestation" / "manifest.json"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keybound.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_check_on_the_shared_manifest_prints_only_matches() -> None:
    done = run("attestation", "check", str(MANIFEST))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    ids = {e["id"] for section in ("android", "apple", "tpm") for e in manifest[section]}
    assert ids <= {line["id"] for line in lines}
    assert all(line["match"] is True for line in lines)
    assert all({"id", "expected", "got", "match", "reason"} <= set(line) for line in lines)


def test_check_exit_status_on_a_mismatch_and_an_unusable_manifest(tmp_path: Path) -> None:
    assert run("attestation", "check", str(tmp_path / "missing.json")).returncode == 2
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    assert run("attestation", "check", str(empty)).returncode == 1  # nothing checked


def test_anchors_lists_shipped_and_configured_ones(tmp_path: Path) -> None:
    root = factory.issue(factory.name("Operator Android Root"))
    (tmp_path / "android").mkdir()
    (tmp_path / "android" / "operator.pem").write_bytes(root.pem())
    done = run("attestation", "anchors", env={"KEYBOUND_ATTESTATION_TRUST_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert {(line["format"], line["source"]) for line in lines} == {
        ("android-key", "shipped"),
        ("android-key", "configured"),
        ("apple-appattest", "shipped"),
        ("tpm", "shipped"),
    }
    (tmp_path / "android" / "removed-keys.txt").write_text("00" * 32)
    refused = run("attestation", "anchors", "--trust-dir", str(tmp_path))
    assert refused.returncode == 2 and "configuration_invalid" in refused.stderr


def test_serve_takes_the_trust_options() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--attestation-trust-dir",
            "/etc/kb/trust",
            "--attestation-revocation-list",
            "/var/kb/status.json",
        ]
    )
    assert (args.attestation_trust_dir, args.attestation_revocation_list) == (
        "/etc/kb/trust",
        "/var/kb/status.json",
    )
