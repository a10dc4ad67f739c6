"""The keybound command line, run as a user would (a real subprocess, a real database)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "keybound.cli",
            "--database-url",
            f"sqlite:///{tmp_path / 'cli.db'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_app_lifecycle(tmp_path: Path) -> None:
    created = run(
        tmp_path,
        "app",
        "create",
        "bank",
        "hwKeyValidationStrategy=REQUIRED",
        "activationCodeLength=8",
    )
    assert created.returncode == 0, created.stderr
    config = json.loads(created.stdout)
    assert config["hwKeyValidationStrategy"] == "REQUIRED"
    assert config["activationCodeLength"] == 8
    updated = run(tmp_path, "app", "update", "bank", "enabledRiskData=hwKeyServerResult")
    assert json.loads(updated.stdout)["enabledRiskData"] == ["hwKeyServerResult"]
    shown = json.loads(run(tmp_path, "app", "show", "bank").stdout)
    assert shown["activationCodeLength"] == 8
    assert run(tmp_path, "app", "list").stdout.split() == ["bank"]


def test_errors_are_clear(tmp_path: Path) -> None:
    bad = run(tmp_path, "app", "create", "bank", "amountFailuresAllowed=lots")
    assert bad.returncode == 2
    assert "configuration_invalid" in bad.stderr
    missing = run(tmp_path, "app", "show", "nope")
    assert missing.returncode == 2
    assert "not_found" in missing.stderr
    dup = run(tmp_path, "app", "create", "bank")
    assert dup.returncode == 0
    assert run(tmp_path, "app", "create", "bank").returncode == 2


def test_api_keys(tmp_path: Path) -> None:
    assert run(tmp_path, "app", "create", "bank").returncode == 0
    created = run(tmp_path, "api-key", "create", "bank", "--label", "backend")
    token = created.stdout.strip()
    assert token.startswith("kb_")
    key_id = token.split("_")[1]
    listed = run(tmp_path, "api-key", "list", "bank").stdout
    assert key_id in listed and "active" in listed and token not in listed
    assert run(tmp_path, "api-key", "revoke", key_id).returncode == 0
    assert "revoked" in run(tmp_path, "api-key", "list", "bank").stdout
    assert run(tmp_path, "api-key", "revoke", key_id).returncode == 2
    events = [json.loads(line) for line in run(tmp_path, "audit").stdout.splitlines()]
    assert [(e["type"], e["outcome"]) for e in events] == [
        ("signing_key.create", "SUCCESS"),  # the first result-signing key, at the first start
        ("application.create", "SUCCESS"),
        ("api_key.create", "SUCCESS"),
        ("api_key.revoke", "SUCCESS"),
        ("api_key.revoke", "REJECTED"),
    ]  # the operator's refusal
    assert all(token.split("_", 2)[2] not in json.dumps(e) for e in events)


def test_help_lists_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "keybound.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("serve", "demo", "app", "api-key", "signing-key", "device", "audit", "db"):
        assert command in out


def test_db_prune(tmp_path: Path) -> None:
    assert run(tmp_path, "app", "create", "bank").returncode == 0
    done = run(tmp_path, "db", "prune", "--operations-days", "30")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "operations": 0,
        "supersededKeys": 0,
        "seenRequests": 0,
        "events": 0,
        "noise": 0,
        "postContexts": 0,
        "webhookLog": 0,
        "activationSecrets": 0,
    }
    assert run(tmp_path, "db", "prune", "--operations-days", "0").returncode == 2
    assert run(tmp_path, "db", "prune", "--events-days", "0").returncode == 0  # keep for ever


def test_options_may_follow_the_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'after.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "keybound.cli", "app", "create", "bank", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "keybound.cli", "app", "list", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert listed.stdout.split() == ["bank"]
    assert (tmp_path / "after.db").exists()


def test_an_invalid_setting_value_lists_the_valid_ones(tmp_path: Path) -> None:
    done = run(tmp_path, "app", "create", "x", "hwKeyValidationStrategy=FOO")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "keybound: configuration_invalid: invalid value for hwKeyValidationStrategy: 'FOO'; "
        "expected one of SUPPORTED, RISK_PARAMS, REQUIRED (REQUIRED_IF_SUPPORTED = SUPPORTED)"
    )
    assert "Traceback" not in done.stderr


def test_signing_keys(tmp_path: Path) -> None:
    listed = run(tmp_path, "signing-key", "list")
    assert listed.returncode == 0, listed.stderr
    assert "issuer: http://127.0.0.1:8000" in listed.stdout
    (first,) = [line.split()[0] for line in listed.stdout.splitlines()[2:]]
    assert run(tmp_path, "signing-key", "retire", first).returncode == 2  # the last ACTIVE
    created = run(tmp_path, "signing-key", "create", "--algorithm", "Ed25519")
    assert created.returncode == 0, created.stderr
    second = created.stdout.split()[0]
    retired = run(tmp_path, "signing-key", "retire", first, "--publish-days", "30")
    assert retired.returncode == 0 and "stays in the JWKS until" in retired.stdout
    rows = {
        line.split()[0]: line
        for line in run(tmp_path, "signing-key", "list").stdout.splitlines()[2:]
    }
    assert "RETIRED" in rows[first] and "ACTIVE" in rows[second] and "Ed25519" in rows[second]
    assert (
        run(tmp_path, "signing-key", "issuer", "https://kb.example").stdout.strip()
        == "https://kb.example"
    )
    assert run(tmp_path, "signing-key", "issuer").stdout.strip() == "https://kb.example"
    assert run(tmp_path, "signing-key", "issuer", "not a url").returncode == 2


def test_audit_export_and_verify(tmp_path: Path) -> None:
    assert run(tmp_path, "app", "create", "bank").returncode == 0
    assert run(tmp_path, "api-key", "create", "bank").returncode == 0
    verified = run(tmp_path, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert "intact" in verified.stdout
    export = tmp_path / "audit.jsonl"
    assert run(tmp_path, "audit", "export", str(export)).returncode == 0
    assert run(tmp_path, "audit", "export", str(export)).returncode != 0  # never overwritten
    checked = run(tmp_path, "audit", "verify", "--export", str(export))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "--jwks" in checked.stderr  # it says which keys it trusted
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(json.loads(export.read_text().splitlines()[0])["jwks"]))
    assert (
        run(tmp_path, "audit", "verify", "--export", str(export), "--jwks", str(jwks)).returncode
        == 0
    )
    lines = export.read_text().splitlines(keepends=True)
    edited = tmp_path / "edited.jsonl"
    edited.write_text(
        "".join(line.replace('"application.create"', '"application.update"') for line in lines)
    )
    refused = run(tmp_path, "audit", "verify", "--export", str(edited), "--jwks", str(jwks))
    assert refused.returncode == 1
    assert "edited" in refused.stdout and "entry seq" in refused.stdout
    assert run(tmp_path, "audit", "checkpoint").returncode == 0
    # the database still holds what the kept export recorded; a doctored copy does not
    assert (
        run(tmp_path, "audit", "verify", "--kept", str(export), "--jwks", str(jwks)).returncode == 0
    )
    assert (
        run(
            tmp_path,
            "audit",
            "verify",
            "--export",
            str(export),
            "--kept",
            str(export),
            "--jwks",
            str(jwks),
        ).returncode
        == 0
    )


def test_a_database_url_keybound_cannot_use_is_a_clear_error(tmp_path: Path) -> None:
    """Issue 14, defect 8: `keybound --database-url foo://bar serve` printed a raw
    SQLAlchemy traceback."""
    for url, says in [
        ("foo://bar", "unsupported database 'foo'"),
        ("not a url", "not a URL"),
        ("postgresql+asyncpg://kb@127.0.0.1/kb", "unsupported PostgreSQL driver"),
    ]:
        for command in (["serve"], ["app", "list"], ["db", "upgrade"]):
            done = subprocess.run(
                [sys.executable, "-m", "keybound.cli", "--database-url", url, *command],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 2, (url, command, done.stderr)
            assert "configuration_invalid" in done.stderr and says in done.stderr
            assert "Traceback" not in done.stderr


@pytest.mark.postgres
def test_db_upgrade_does_not_print_the_database_password(postgres: Any) -> None:
    """Issue 14, defect 8: `keybound db upgrade` printed the URL with its password. (The test
    server trusts local connections, so any password is accepted.)"""
    secret = "s3cret-pw"
    url = postgres.fresh_database().replace("://keybound@", f"://keybound:{secret}@", 1)
    assert secret in url
    done = subprocess.run(
        [sys.executable, "-m", "keybound.cli", "--database-url", url, "db", "upgrade"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "newest schema revision" in done.stdout
    assert secret not in done.stdout + done.stderr and "***" in done.stdout
