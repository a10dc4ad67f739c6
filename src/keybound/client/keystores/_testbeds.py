"""Throw-away secure-hardware test beds: a private swtpm and a private SoftHSM2 token.

Used by ``tests/client/keystores`` and ``bench/keystore_sign.py`` so both exercise the real
components the same way. Not part of the SDK's runtime path: nothing here is imported by
the key stores themselves.

- :func:`start_swtpm` runs ``swtpm socket --tpm2`` on a free 127.0.0.1 port pair with its
  state in a directory of the caller's choosing, and :meth:`Swtpm.stop` ends exactly that
  process (by its PID).
- :func:`manufacture_swtpm` provisions a TPM state the way a manufacturer does, with swtpm's
  own tooling: ``swtpm_setup --create-ek-cert`` creates the endorsement keys and has
  ``swtpm_localca`` issue their certificates from a local CA (kept in a directory of the
  caller's choosing), which it writes into the TPM's NV indices; :func:`start_swtpm` then
  runs that TPM.
- :func:`init_softhsm_token` writes a ``softhsm2.conf`` into a directory, initialises a fresh
  token there with ``softhsm2-util`` and returns what a process needs to use it
  (``SOFTHSM2_CONF`` must be set *before* the PKCS#11 module is first initialised).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Where Debian/Ubuntu install SoftHSM2's PKCS#11 module.
SOFTHSM2_MODULE = "/usr/lib/softhsm/libsofthsm2.so"

_LOCALHOST = "127.0.0.1"


class TestbedError(RuntimeError):
    """A test bed tool is missing or did not start."""

    __test__ = False  # not a pytest test class despite the name


# ---------------------------------------------------------------------------------- swtpm


def free_port_pair(attempts: int = 50) -> int:
    """Return a port P such that P and P+1 are both free on 127.0.0.1 right now."""
    for _ in range(attempts):
        with socket.socket() as first:
            first.bind((_LOCALHOST, 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind((_LOCALHOST, port + 1))
                except OSError:
                    continue
                return port
    raise TestbedError("no free 127.0.0.1 port pair found")


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((_LOCALHOST, port), 0.2):
        return True
    return False


@dataclass(kw_only=True)
class Swtpm:
    """A running swtpm (TPM 2.0) process listening on ``port`` (commands) and ``port + 1``."""

    state_dir: Path
    port: int
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def tcti(self) -> str:
        """The tpm2-tss TCTI string for this simulator."""
        return f"swtpm:host={_LOCALHOST},port={self.port}"

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate this swtpm process (by PID) and reap it. Idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def restart(self, state_dir: Path | None = None) -> Swtpm:
        """Stop this simulator and start a new one on the same ports.

        With the same ``state_dir`` it is the same TPM after a reboot; with another (empty)
        one it is a different, factory-fresh TPM at the same address.
        """
        self.stop()
        return start_swtpm(state_dir or self.state_dir, port=self.port)


def require_tool(name: str) -> str:
    """Absolute path of an executable on PATH, or TestbedError naming the missing tool."""
    path = shutil.which(name)
    if path is None:
        raise TestbedError(f"{name!r} not found on PATH")
    return path


def start_swtpm(
    state_dir: Path, *, port: int | None = None, timeout: float = 10.0, retries: int = 5
) -> Swtpm:
    """Start ``swtpm socket --tpm2`` with its state in ``state_dir`` (created if needed).

    The TPM is manufactured on first use of an empty directory and started up
    (``--flags not-need-init,startup-clear``), ready for commands. Without ``port`` a free
    pair is picked; a lost race for it is retried.
    """
    binary = require_tool("swtpm")
    state_dir.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _ in range(retries if port is None else 1):
        chosen = port if port is not None else free_port_pair()
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            _swtpm_argv(binary, state_dir, chosen),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        tpm = Swtpm(state_dir=state_dir, port=chosen, process=process)
        last_error = _wait_for_swtpm(tpm, timeout)
        if not last_error:
            _close_pipe(process)
            return tpm
    raise TestbedError(f"swtpm did not start: {last_error}")


def _swtpm_argv(binary: str, state_dir: Path, port: int) -> list[str]:
    return [
        binary, "socket", "--tpm2",
        "--server", f"type=tcp,port={port},bindaddr={_LOCALHOST}",
        "--ctrl", f"type=tcp,port={port + 1},bindaddr={_LOCALHOST}",
        "--tpmstate", f"dir={state_dir}",
        "--flags", "not-need-init,startup-clear",
    ]  # fmt: skip


def _wait_for_swtpm(tpm: Swtpm, timeout: float) -> str:
    """'' once the control port accepts connections, else why it failed (process reaped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not tpm.running():
            stderr = tpm.process.stderr.read() if tpm.process.stderr else b""
            _close_pipe(tpm.process)
            return stderr.decode(errors="replace").strip() or f"exit {tpm.process.returncode}"
        if _port_open(tpm.port + 1) and _port_open(tpm.port):
            return ""
        time.sleep(0.02)
    tpm.stop()
    _close_pipe(tpm.process)
    return f"not listening on port {tpm.port} after {timeout}s"


def _close_pipe(process: subprocess.Popen[bytes]) -> None:
    if process.stderr is not None:
        process.stderr.close()


# ------------------------------------------------------------- swtpm manufacturing (EK certs)


@dataclass(frozen=True, kw_only=True)
class SwtpmLocalCa:
    """The local CA ``swtpm_localca`` keeps in ``directory``: a self-signed root and the
    intermediate ("issuer") that signs EK certificates. What a server trusts for these TPMs
    is either, as a configured anchor (EK certificates name the intermediate as issuer)."""

    directory: Path

    @property
    def root_certificate(self) -> Path:
        return self.directory / "swtpm-localca-rootca-cert.pem"

    @property
    def issuer_certificate(self) -> Path:
        return self.directory / "issuercert.pem"


def manufacture_swtpm(state_dir: Path, *, ca_dir: Path, timeout: float = 60.0) -> SwtpmLocalCa:
    """Provision a new TPM 2.0 state in ``state_dir`` with EK certificates from the local CA
    in ``ca_dir`` (created with its root on first use, shared by later calls).

    Runs ``swtpm_setup --tpm2 --create-ek-cert --lock-nvram`` with configuration files
    written into ``ca_dir`` (nothing is read from /etc or the home directory, nothing
    written outside the two directories): an RSA 2048 EK (TCG template L-1, certificate in
    NV index 0x01c00002) and an ECC P-384 EK (template H-3, NV index 0x01c00016), each
    with a certificate signed by the CA's intermediate, write-locked as a manufacturer
    leaves them. Run :func:`start_swtpm` on ``state_dir`` afterwards.
    """
    setup = require_tool("swtpm_setup")
    localca = require_tool("swtpm_localca")
    require_tool("certtool")  # swtpm_localca creates its CA keys with GnuTLS's certtool
    state_dir.mkdir(parents=True, exist_ok=True)
    ca_dir.mkdir(parents=True, exist_ok=True)
    config = _write_localca_config(ca_dir, localca)
    scratch = ca_dir / "tmp"
    scratch.mkdir(exist_ok=True)
    argv = [
        setup, "--tpm2", "--tpmstate", str(state_dir), "--create-ek-cert", "--lock-nvram",
        "--pcr-banks", "sha256", "--config", str(config),
        "--logfile", str(ca_dir / "swtpm_setup.log"),
    ]  # fmt: skip
    # TMPDIR: swtpm_setup's certificate scratch directory; XDG_CONFIG_HOME: no user config.
    env = {**os.environ, "TMPDIR": str(scratch), "XDG_CONFIG_HOME": str(ca_dir)}
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            argv, env=env, capture_output=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise TestbedError(f"swtpm_setup did not finish in {timeout}s") from exc
    if done.returncode != 0:
        log = (ca_dir / "swtpm_setup.log").read_text(errors="replace").strip()
        raise TestbedError(f"swtpm_setup failed ({done.returncode}): {log}")
    return SwtpmLocalCa(directory=ca_dir)


def _write_localca_config(ca_dir: Path, localca: str) -> Path:
    """swtpm_setup.conf (which tool issues certificates) and swtpm-localca.conf (where the CA
    keeps its keys, issuer certificate and serial counter), all inside ``ca_dir``."""
    (ca_dir / "swtpm-localca.conf").write_text(
        f"statedir = {ca_dir}\n"
        f"signingkey = {ca_dir / 'signkey.pem'}\n"
        f"issuercert = {ca_dir / 'issuercert.pem'}\n"
        f"certserial = {ca_dir / 'certserial'}\n",
        encoding="utf-8",
    )
    # Options for swtpm_cert; the platform ones matter only for platform certificates.
    (ca_dir / "swtpm-localca.options").write_text("", encoding="utf-8")
    config = ca_dir / "swtpm_setup.conf"
    config.write_text(
        f"create_certs_tool = {localca}\n"
        f"create_certs_tool_config = {ca_dir / 'swtpm-localca.conf'}\n"
        f"create_certs_tool_options = {ca_dir / 'swtpm-localca.options'}\n",
        encoding="utf-8",
    )
    return config


# ------------------------------------------------------------------------------- SoftHSM2


@dataclass(frozen=True, kw_only=True)
class SoftHsmToken:
    """A fresh SoftHSM2 token whose objects live under ``directory``."""

    directory: Path
    conf: Path
    label: str
    user_pin: str
    so_pin: str
    module: str = SOFTHSM2_MODULE

    @property
    def env(self) -> dict[str, str]:
        """Environment entries a process needs to see this token."""
        return {"SOFTHSM2_CONF": str(self.conf)}


def init_softhsm_token(
    directory: Path,
    *,
    label: str = "keybound-test",
    user_pin: str = "1234",
    so_pin: str = "12345678",
    module: str = SOFTHSM2_MODULE,
) -> SoftHsmToken:
    """Write ``directory/softhsm2.conf`` and initialise a new token in the first free slot."""
    util = require_tool("softhsm2-util")
    if not Path(module).is_file():
        raise TestbedError(f"SoftHSM2 PKCS#11 module not found at {module}")
    tokens = directory / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n",
        encoding="utf-8",
    )
    argv = [util, "--init-token", "--free", "--label", label, "--pin", user_pin,
            "--so-pin", so_pin]  # fmt: skip
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    done = subprocess.run(argv, env=env, capture_output=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise TestbedError(f"softhsm2-util --init-token failed: {done.stderr.decode().strip()}")
    return SoftHsmToken(
        directory=directory, conf=conf, label=label, user_pin=user_pin, so_pin=so_pin,
        module=module,
    )  # fmt: skip
