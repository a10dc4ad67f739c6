"""The keybound command line, run as a user would (a real subprocess, a real database)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keybound.cli", "--database-url",
         f"sqlite:///{tmp_path / 'cli.db'}", *args],
        capture_output=True, text=True, timeout=60, check=False)


def test_app_lifecycle(tmp_path: Path) -> None:
    created = run(tmp_path, "app", "create", "bank", "hwKeyValidationStrategy=REQUIRED",
                  "activationCodeLength=8")
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
        ("application.create", "SUCCESS"), ("api_key.create", "SUCCESS"),
        ("api_key.revoke", "SUCCESS"), ("api_key.revoke", "REJECTED")]  # the operator's refusal
    assert all(token.split("_", 2)[2] not in json.dumps(e) for e in events)


def test_help_lists_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "keybound.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("serve", "demo", "app", "api-key", "device", "audit", "db"):
        assert command in out


def test_db_prune(tmp_path: Path) -> None:
    assert run(tmp_path, "app", "create", "bank").returncode == 0
    done = run(tmp_path, "db", "prune", "--operations-days", "30")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"operations": 0, "supersededKeys": 0, "seenRequests": 0,
                                       "events": 0, "noise": 0, "postContexts": 0,
                                       "webhookLog": 0}
    assert run(tmp_path, "db", "prune", "--operations-days", "0").returncode == 2
    assert run(tmp_path, "db", "prune", "--events-days", "0").returncode == 0  # keep for ever


def test_options_may_follow_the_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'after.db'}"
    done = subprocess.run([sys.executable, "-m", "keybound.cli", "app", "create", "bank",
                           "--database-url", url], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    listed = subprocess.run([sys.executable, "-m", "keybound.cli", "app", "list",
                             "--database-url", url], capture_output=True, text=True, timeout=60,
                            check=True)
    assert listed.stdout.split() == ["bank"]
    assert (tmp_path / "after.db").exists()
