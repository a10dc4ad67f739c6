"""Opening the server (services.Keybound.open) with the wrong master key, as an operator
could (issue 14, defect 8): KEYBOUND_MASTER_KEY_FILE pointing at another file used to create a
new key silently, /healthz said ok, and every device then failed far from the cause."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keybound.errors import ConfigurationInvalid
from keybound.server.secrets import MasterKey
from keybound.server.services import Keybound


@pytest.fixture
def url(tmp_path: Path) -> str:
    kb = Keybound.open(f"sqlite:///{tmp_path / 'kb.db'}", master_key_file=tmp_path / "master.key")
    kb.admin.create_application("bank")
    kb.admin.create_e2e_key("bank")  # a secret wrapped under this master key
    kb.close()
    return f"sqlite:///{tmp_path / 'kb.db'}"


def test_another_master_key_is_refused_naming_the_one_expected(url: str, tmp_path: Path) -> None:
    expected = MasterKey(tmp_path / "master.key").fingerprint
    other = tmp_path / "elsewhere" / "other.key"
    with pytest.raises(ConfigurationInvalid) as refused:
        Keybound.open(url, master_key_file=other)
    assert expected in refused.value.detail
    assert "does not exist" in refused.value.detail
    assert not other.exists()  # nothing created before the check
    other.parent.mkdir()
    fresh = MasterKey(other)
    fresh.get()  # a real, different key file
    with pytest.raises(ConfigurationInvalid) as refused:
        Keybound.open(url, master_key_file=other)
    assert expected in refused.value.detail and fresh.fingerprint in refused.value.detail
    Keybound.open(url, master_key_file=tmp_path / "master.key").close()  # the right one works


def test_the_cli_refuses_to_start_with_another_master_key(url: str, tmp_path: Path) -> None:
    env = {**os.environ, "KEYBOUND_MASTER_KEY_FILE": str(tmp_path / "typo.key")}
    for command in (["app", "list"], ["serve", "--port", "1"]):
        done = subprocess.run(
            [sys.executable, "-m", "keybound.cli", "--database-url", url, *command],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert "configuration_invalid" in done.stderr and "fingerprint" in done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "typo.key").exists()
