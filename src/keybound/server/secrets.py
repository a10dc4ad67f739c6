"""Secrets at rest: the master key file, and the one format every secret the database holds
is wrapped in (E2E private keys, PIN keys, post-operation contexts, result-signing keys) or
keyed under (activation tokens and codes).

A copy of the database alone -- a backup, a replica, a stolen disk image -- must yield none of
them. Each is wrapped under a key derived from the server's master key, which lives in a file
of its own (``master.key``, mode 0600) and is backed up apart from the database.

Wrapped format (docs/channel.md §9)::

    0x02 || nonce(12) || AES-256-GCM-SIV(wrap key, nonce, secret, aad)
    aad = lp("keybound/secret/v2", purpose, binding)

``purpose`` says what the secret is and ``binding`` what it belongs to (a key id and public
key, a registration id, an operation id), so a wrapped value moved to another row or column
does not open. GCM-SIV because the nonces are random and the number of values wrapped under
one master key grows with every backend-initiated operation: a repeated nonce costs GCM its
authentication key, and GCM-SIV only the equality of two identical secrets.

The database records the master key's fingerprint (``settings`` table); a server started with
another master key refuses to run and names the fingerprint the database expects.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import stat
import threading
from collections.abc import Mapping
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keybound.channel.errors import KeyStorageError
from keybound.channel.framing import lp
from keybound.errors import ErrorCode
from keybound.protocol import b64u_decode, b64u_encode

MASTER_KEY_SIZE: Final = 32
ENV_MASTER_KEY_FILE: Final = "KEYBOUND_MASTER_KEY_FILE"
MASTER_KEY_FILE_NAME: Final = "master.key"
FORMAT: Final = 0x02
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
_LABEL: Final = b"keybound/secret/v2"
_MASTER_KEY_TEXT_RE: Final = re.compile(rb"[A-Za-z0-9_-]{43}\n?")


class Purpose(StrEnum):
    """What a wrapped or keyed secret is; part of its associated data."""

    E2E_PRIVATE_KEY = "e2e-private-key"  # bound to key id, suite and public key
    PIN_KEY = "pin-key"  # bound to the registration id
    POST_CONTEXT = "post-operation-context"  # bound to the operation id
    ACTIVATION_CODE = "activation-code"  # keyed hash, bound to the operation id
    ACTIVATION_TOKEN = "activation-token"  # noqa: S105 - keyed hash, bound to the app id
    RESULT_SIGNING_KEY = "result-signing-key"  # PKCS#8, bound to kid and algorithm
    #: the TPM credential activation's secret, AK and EK (docs/protocol.md §6.5.3), bound to
    #: the operation id
    TPM_CREDENTIAL = "tpm-credential"
    # whsec_/whsk_, bound to endpoint id and secret id
    WEBHOOK_SECRET = "webhook-secret"  # noqa: S105 - a purpose, not a secret
    PUSH_CREDENTIALS = "push-credentials"  # bound to application id and provider kind


class SecretUnusable(KeyStorageError):
    """A wrapped secret does not open: another master key, another row, or corruption. A
    server-side fault, never the caller's."""

    code = ErrorCode.INTERNAL


def master_key_path(default_dir: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """``$KEYBOUND_MASTER_KEY_FILE``, else ``master.key`` in ``default_dir``."""
    configured = environ.get(ENV_MASTER_KEY_FILE)
    return Path(configured).expanduser() if configured else default_dir / MASTER_KEY_FILE_NAME


class MasterKey:
    """The master key file, read (or created, 0600) on first use; never logged or returned
    through any API. Everything at rest is wrapped under keys derived from it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: bytes | None = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, key: bytes) -> MasterKey:
        """A master key held in memory (tests, migrations handed a key)."""
        _check_master_key(key)
        master = cls(Path("<memory>"))
        master._key = key
        return master

    def __repr__(self) -> str:
        return f"MasterKey(path={str(self.path)!r})"

    def exists(self) -> bool:
        return self._key is not None or self.path.exists()

    def get(self) -> bytes:
        with self._lock:
            if self._key is None:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._key = load_or_create_master_key(self.path)
            return self._key

    def derive(self, use: bytes) -> bytes:
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"keybound/master/" + use
        ).derive(self.get())

    @cached_property
    def fingerprint(self) -> str:
        """Public: names this key in errors and in the database without revealing it."""
        return self.derive(b"fingerprint")[:12].hex()


class SecretBox:
    """Wraps and unwraps secrets at rest, and keys secrets that are compared or looked up
    rather than read back (activation tokens and codes), all under the master key."""

    def __init__(self, master_key: MasterKey) -> None:
        self.master_key = master_key

    @cached_property
    def _aead(self) -> AESGCMSIV:
        return AESGCMSIV(self.master_key.derive(b"wrap"))

    @cached_property
    def _mac_key(self) -> bytes:
        return self.master_key.derive(b"mac")

    def wrap(self, purpose: Purpose, secret: bytes, *, binding: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_SIZE)
        return (
            bytes([FORMAT])
            + nonce
            + self._aead.encrypt(nonce, secret, lp(_LABEL, purpose.encode(), binding))
        )

    def unwrap(self, purpose: Purpose, wrapped: bytes, *, binding: bytes) -> bytes:
        if len(wrapped) < 1 + NONCE_SIZE + TAG_SIZE or wrapped[0] != FORMAT:
            raise SecretUnusable(f"stored {purpose.value} has an unknown format")
        try:
            return self._aead.decrypt(
                wrapped[1 : 1 + NONCE_SIZE],
                wrapped[1 + NONCE_SIZE :],
                lp(_LABEL, purpose.encode(), binding),
            )
        except (InvalidTag, ValueError):
            raise SecretUnusable(
                f"stored {purpose.value} does not open under this server's "
                f"master key (fingerprint {self.master_key.fingerprint})"
            ) from None

    def keyed_hash(self, purpose: Purpose, value: bytes, *, binding: bytes) -> bytes:
        """HMAC-SHA256 under the master key: a database copy alone cannot test guesses."""
        return hmac.new(
            self._mac_key, lp(_LABEL, purpose.encode(), binding, value), hashlib.sha256
        ).digest()


# --------------------------------------------------------------------------- master key file


def generate_master_key() -> bytes:
    return secrets.token_bytes(MASTER_KEY_SIZE)


def _check_master_key(master_key: bytes) -> None:
    if len(master_key) != MASTER_KEY_SIZE:
        raise KeyStorageError(f"master key must be {MASTER_KEY_SIZE} bytes")


def load_or_create_master_key(path: str | os.PathLike[str]) -> bytes:
    """Read the master key file at ``path``, creating it (mode 0600) if absent.

    The file holds 43 base64url characters and a newline. It must be a regular file owned by
    this user with no group or other permission bits; otherwise KeyStorageError.
    """
    target = Path(path)
    if not target.exists():
        _create_master_key_file(target)
    return _read_master_key_file(target)


def _create_master_key_file(path: Path) -> None:
    """Write to a private temp file, then hard-link it into place: the link is atomic and
    fails if another process got there first, so a reader never sees a partial key."""
    text = b64u_encode(generate_master_key()).encode("ascii") + b"\n"
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # lost the race: use the winner's key
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_master_key_file(path: Path) -> bytes:
    try:  # O_NONBLOCK: a FIFO planted at the path must not hang the server
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise KeyStorageError(f"cannot open master key file: {exc.strerror}") from None
    try:
        _check_master_key_file(os.fstat(fd))
        text = os.read(fd, 64)
    finally:
        os.close(fd)
    if not _MASTER_KEY_TEXT_RE.fullmatch(text):
        raise KeyStorageError("master key file must hold 43 base64url characters")
    return b64u_decode(text.rstrip(b"\n").decode("ascii"))


def _check_master_key_file(info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise KeyStorageError("master key file is not a regular file")
    if info.st_mode & 0o077:
        raise KeyStorageError("master key file must be mode 0600 (no group/other access)")
    if info.st_uid != os.geteuid():
        raise KeyStorageError("master key file must be owned by the server's user")
