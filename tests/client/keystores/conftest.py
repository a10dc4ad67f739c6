"""Fixtures that run the real secure-hardware components: a private swtpm and SoftHSM2 token.

A missing tool is a *failure*, not a skip, so CI cannot silently stop testing hardware keys.
Set ``KEYBOUND_ALLOW_SKIP_HW=1`` to turn those failures into skips on a developer machine.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

from keybound.client.keystores._testbeds import (
    SOFTHSM2_MODULE,
    SoftHsmToken,
    Swtpm,
    SwtpmLocalCa,
    TestbedError,
    init_softhsm_token,
    manufacture_swtpm,
    start_swtpm,
)
from keybound.client.keystores.base import KeyHandle

ALLOW_SKIP_ENV = "KEYBOUND_ALLOW_SKIP_HW"

#: Two tokens in one SoftHSM2 configuration: ``main`` for the happy paths and ``pin`` for
#: wrong-PIN tests, so failed logins never touch the main token's state.
MAIN_TOKEN = "keybound-main"
PIN_TOKEN = "keybound-pin"


def missing(what: str) -> NoReturn:
    """Fail (or, with KEYBOUND_ALLOW_SKIP_HW=1, skip) because a hardware test bed is absent."""
    if os.environ.get(ALLOW_SKIP_ENV) == "1":
        pytest.skip(f"{what} ({ALLOW_SKIP_ENV}=1)")
    pytest.fail(f"{what}; install it, or set {ALLOW_SKIP_ENV}=1 to skip", pytrace=False)


def _require_python(module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        missing(f"Python package {package} is not installed")


def _require_tool(name: str, package: str) -> None:
    if shutil.which(name) is None:
        missing(f"{name} not found on PATH (apt package {package})")


# ------------------------------------------------------------------------------ swtpm


@dataclass
class SwtpmBed:
    """A running swtpm that a test may restart, with the same or a fresh state."""

    tpm: Swtpm
    workdir: Path
    generation: int = 0

    @property
    def tcti(self) -> str:
        return self.tpm.tcti

    def restart(self, *, fresh: bool = False) -> None:
        """Reboot the TPM, or (``fresh``) replace it by a new TPM at the same address."""
        state = self.tpm.state_dir
        if fresh:
            self.generation += 1
            state = self.workdir / f"state-{self.generation}"
        self.tpm = self.tpm.restart(state)


@pytest.fixture(scope="session")
def swtpm_available() -> None:
    _require_python("tpm2_pytss", "tpm2-pytss")
    _require_tool("swtpm", "swtpm")
    from tpm2_pytss import TCTILdr

    if not TCTILdr.is_available("swtpm"):
        missing("the tpm2-tss swtpm TCTI is not installed (apt package libtss2-tcti-swtpm0)")


@pytest.fixture
def swtpm(swtpm_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwtpmBed]:
    """A private swtpm on a free 127.0.0.1 port pair, stopped (by PID) afterwards."""
    workdir = tmp_path_factory.mktemp("swtpm")
    try:
        bed = SwtpmBed(tpm=start_swtpm(workdir / "state-0"), workdir=workdir)
    except TestbedError as exc:
        pytest.fail(f"swtpm did not start: {exc}", pytrace=False)
    try:
        yield bed
    finally:
        bed.tpm.stop()


@dataclass
class ManufacturedSwtpm(SwtpmBed):
    """A swtpm provisioned by ``swtpm_setup --create-ek-cert``: EK certificates from ``ca``."""

    ca: SwtpmLocalCa = field(kw_only=True)


@pytest.fixture(scope="session")
def manufactured_swtpm_image(
    swtpm_available: None, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, SwtpmLocalCa]:
    """One TPM state manufactured per session (``swtpm_setup --create-ek-cert`` with a
    session-wide local CA, as one manufacturer has one CA); tests run copies of it."""
    for tool, package in (
        ("swtpm_setup", "swtpm-tools"),
        ("swtpm_localca", "swtpm-tools"),
        ("certtool", "gnutls-bin"),
    ):
        _require_tool(tool, package)
    workdir = tmp_path_factory.mktemp("swtpm-factory")
    try:
        ca = manufacture_swtpm(workdir / "image", ca_dir=workdir / "localca")
    except TestbedError as exc:
        pytest.fail(f"swtpm_setup failed: {exc}", pytrace=False)
    return workdir / "image", ca


@pytest.fixture
def manufactured_swtpm(
    manufactured_swtpm_image: tuple[Path, SwtpmLocalCa],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ManufacturedSwtpm]:
    """A private swtpm running a copy of the session's manufactured TPM (EK certificates in
    NV from the session's local CA)."""
    image, ca = manufactured_swtpm_image
    workdir = tmp_path_factory.mktemp("swtpm-manufactured")
    shutil.copytree(image, workdir / "state-0")
    try:
        bed = ManufacturedSwtpm(tpm=start_swtpm(workdir / "state-0"), workdir=workdir, ca=ca)
    except TestbedError as exc:
        pytest.fail(f"manufactured swtpm did not start: {exc}", pytrace=False)
    try:
        yield bed
    finally:
        bed.tpm.stop()


# --------------------------------------------------------------------------- SoftHSM2


@dataclass(frozen=True)
class SoftHsmBed:
    main: SoftHsmToken
    pin: SoftHsmToken

    @property
    def module(self) -> str:
        return self.main.module


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsmBed]:
    """Fresh SoftHSM2 tokens in a temporary directory, visible to this process.

    SoftHSM2 reads ``SOFTHSM2_CONF`` in ``C_Initialize``, and python-pkcs11 keeps one
    initialised module per process, so the module is re-initialised after pointing it here.
    """
    _require_python("pkcs11", "python-pkcs11")
    _require_tool("softhsm2-util", "softhsm2")
    if not Path(SOFTHSM2_MODULE).is_file():
        missing(f"SoftHSM2 PKCS#11 module {SOFTHSM2_MODULE} not found (apt package softhsm2)")
    directory = tmp_path_factory.mktemp("softhsm")
    try:
        main = init_softhsm_token(directory, label=MAIN_TOKEN, user_pin="4711-main")
        pin = init_softhsm_token(directory, label=PIN_TOKEN, user_pin="4711-pin")
    except TestbedError as exc:
        pytest.fail(f"SoftHSM2 token setup failed: {exc}", pytrace=False)
    import pkcs11

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(main.conf))
        pkcs11.lib(SOFTHSM2_MODULE).reinitialize()
        yield SoftHsmBed(main=main, pin=pin)


# ---------------------------------------------------------------------------- helpers


def handle_to_json(handle: KeyHandle) -> str:
    """How an SDK would persist a handle: plain JSON, public key in base64."""
    return json.dumps(
        {
            "store": handle.store,
            "public_key": base64.b64encode(handle.public_key).decode(),
            "ref": dict(handle.ref),
        }
    )


def handle_from_json(text: str) -> KeyHandle:
    data = json.loads(text)
    return KeyHandle(
        store=data["store"], public_key=base64.b64decode(data["public_key"]), ref=data["ref"]
    )


@pytest.fixture
def json_roundtrip() -> Callable[[KeyHandle], KeyHandle]:
    """Serialise a handle to JSON text and back."""
    return lambda handle: handle_from_json(handle_to_json(handle))


@pytest.fixture
def handle_json() -> Callable[[KeyHandle], str]:
    """Serialise a handle to the JSON text an SDK would store."""
    return handle_to_json
