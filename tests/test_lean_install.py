"""`pip install keybound` is the device SDK and CLI without the server: the SDK and the CLI's
device commands must import and run with none of the server extra's packages installed, and
the server's commands must say which extra they need instead of a traceback.

Each case runs a fresh interpreter in which importing a server package fails as it does when
the package is not installed (``sys.modules[name] = None`` raises ModuleNotFoundError)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# The [server] and [postgres] extras (pyproject.toml), which `pip install keybound` leaves out
SERVER_PACKAGES = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "psycopg")


def run_without_server(code: str) -> subprocess.CompletedProcess[str]:
    blocked = "\n".join(f"sys.modules[{name!r}] = None" for name in SERVER_PACKAGES)
    program = f"import sys\n{blocked}\n{textwrap.dedent(code)}"
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_device_sdk_imports_without_the_server_packages() -> None:
    result = run_without_server("""
        import keybound.client
        import keybound.client.keystores.software
        import keybound.client.keystores.emulated
        import keybound.channel, keybound.protocol, keybound.crypto
        loaded = sorted(name for name in sys.modules if name.startswith("keybound.server")
                        or name.startswith("keybound.storage"))
        assert not loaded, loaded
    """)
    assert result.returncode == 0, result.stderr


def test_the_cli_device_commands_run_without_the_server_packages() -> None:
    result = run_without_server("""
        from keybound.cli import main
        try:
            main(["device", "--help"])
        except SystemExit as exit:
            assert exit.code == 0, exit.code
    """)
    assert result.returncode == 0, result.stderr
    assert "activate" in result.stdout


def test_a_server_command_names_the_extra_it_needs() -> None:
    result = run_without_server("""
        from keybound.cli import main
        sys.exit(main(["app", "list"]))
    """)
    assert result.returncode == 2
    assert "pip install 'keybound[server]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_attestation_commands_parse_lean_and_name_the_extra_they_need() -> None:
    result = run_without_server("""
        sys.modules["cbor2"] = None
        sys.modules["pyasn1"] = None
        from keybound.cli import main
        try:
            main(["attestation", "--help"])
        except SystemExit as exit:
            assert exit.code == 0, exit.code
        loaded = sorted(name for name in sys.modules if name.startswith("keybound.attestation"))
        assert not loaded, loaded
        sys.exit(main(["attestation", "check", "manifest.json"]))
    """)
    assert result.returncode == 2, result.stderr
    assert "check" in result.stdout and "anchors" in result.stdout
    assert "pip install 'keybound[server]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_postgresql_url_without_psycopg_names_the_postgres_extra() -> None:
    # SQLAlchemy installed, psycopg not: what the README's PostgreSQL line met before the extra
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
            import sys
            sys.modules["psycopg"] = None
            from keybound.cli import main
            sys.exit(main(["--database-url", "postgresql+psycopg://kb@127.0.0.1:9/kb",
                           "app", "list"]))
        """),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'keybound[postgres]'" in result.stderr
