"""`keybound demo` on a machine whose swtpm is broken, and with a real database configured:
the demo skips the TPM device (no traceback) and never touches the configured database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.server
def test_demo_with_broken_swtpm_and_a_configured_database(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "swtpm"
    fake.write_text("#!/bin/sh\necho 'swtpm: broken on purpose' >&2\nexit 1\n")
    fake.chmod(0o755)
    real_db = tmp_path / "real.db"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "KEYBOUND_DATABASE_URL": f"sqlite:///{real_db}",
    }
    other_db = tmp_path / "other.db"
    done = subprocess.run(
        [sys.executable, "-m", "keybound.cli", "--database-url", f"sqlite:///{other_db}", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "swtpm did not start" in done.stdout
    assert "TPM device skipped" in done.stdout
    assert "released 'receipt #4711'" in done.stdout
    # neither the flag's nor the environment's database was created or written
    assert not real_db.exists()
    assert not other_db.exists()
    assert "keybound-demo-" in done.stdout.splitlines()[0]
