"""The server's attestation trust: the anchors each format is verified against, and the
Android revocation status list (docs/attestation.md §2; docs/protocol.md §6.5.4).

Anchors ship with the package (``keybound/attestation/roots/``). The operator adds and
removes anchors by configuration only, never from a request and never fetched at run time:

    $KEYBOUND_ATTESTATION_TRUST_DIR            (or ``keybound serve --attestation-trust-dir``)
      android/*.pem  apple/*.pem  tpm/*.pem     anchors added to the format's shipped ones
      <format>/removed-keys.txt                 anchors removed, by key SHA-256 (hex), one a
                                                line; ``#`` starts a comment

Anything else in the directory is a configuration error, so a misspelt name cannot leave
an anchor trusted or untrusted by accident; so is removing a key that is not an anchor.

The status list is data, not trust: ``$KEYBOUND_ATTESTATION_REVOCATION_LIST`` (or ``keybound
serve --attestation-revocation-list``) names a file or an ``https://`` URL; it is loaded when
an Android attestation needs it, kept, and reloaded when older than
``$KEYBOUND_ATTESTATION_REVOCATION_REFRESH_SECONDS`` (default 3600; a file is re-read only
when it changed). A failed reload keeps the last good copy; the age of the copy used is
reported with every Android attestation (risk attribute ``hwKeyRevocationListAge``).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from keybound.attestation import (
    AttestationFormat,
    RevocationCache,
    RevocationList,
    TrustStore,
)
from keybound.attestation.revocation import check_list_url
from keybound.errors import ConfigurationInvalid
from keybound.server.core.attestation import TrustMaterial

ENV_TRUST_DIR: Final = "KEYBOUND_ATTESTATION_TRUST_DIR"
ENV_REVOCATION_LIST: Final = "KEYBOUND_ATTESTATION_REVOCATION_LIST"
ENV_REVOCATION_REFRESH: Final = "KEYBOUND_ATTESTATION_REVOCATION_REFRESH_SECONDS"
DEFAULT_REFRESH_SECONDS: Final = 3600
#: the subdirectory of each format in the trust directory
FORMAT_DIRS: Final = {
    "android": AttestationFormat.ANDROID_KEY,
    "apple": AttestationFormat.APPLE_APP_ATTEST,
    "tpm": AttestationFormat.TPM,
}
REMOVED_KEYS_FILE: Final = "removed-keys.txt"


@dataclass(frozen=True, kw_only=True)
class AttestationTrust:
    android: TrustStore
    apple: TrustStore
    tpm: TrustStore
    revocation: RevocationCache | None = None
    revocation_source: str | None = None

    @classmethod
    def builtin(cls) -> AttestationTrust:
        """The shipped anchors, no status list."""
        return cls(
            android=TrustStore.builtin(AttestationFormat.ANDROID_KEY),
            apple=TrustStore.builtin(AttestationFormat.APPLE_APP_ATTEST),
            tpm=TrustStore.builtin(AttestationFormat.TPM),
        )

    @classmethod
    def configured(
        cls,
        *,
        trust_dir: Path | str | None = None,
        revocation_list: str | None = None,
        refresh_seconds: int = DEFAULT_REFRESH_SECONDS,
        now: dt.datetime | None = None,
    ) -> AttestationTrust:
        """The shipped anchors changed by ``trust_dir``, and the status list at
        ``revocation_list`` (a file, loaded now to fail early, or an https URL, fetched on
        first use). Raises ConfigurationInvalid."""
        stores = _stores(Path(trust_dir).expanduser() if trust_dir else None)
        cache = None
        if revocation_list:
            if refresh_seconds < 1:
                raise ConfigurationInvalid("the revocation list refresh must be positive")
            cache = RevocationCache(
                _loader(revocation_list), refresh_after=dt.timedelta(seconds=refresh_seconds)
            )
            if not _is_url(revocation_list):  # a file must be there and parse, now
                cache.current(now or dt.datetime.now(dt.UTC))
                if cache.last_error:
                    raise ConfigurationInvalid(cache.last_error)
        return cls(
            android=stores[AttestationFormat.ANDROID_KEY],
            apple=stores[AttestationFormat.APPLE_APP_ATTEST],
            tpm=stores[AttestationFormat.TPM],
            revocation=cache,
            revocation_source=revocation_list or None,
        )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> AttestationTrust:
        refresh = environ.get(ENV_REVOCATION_REFRESH, "").strip()
        try:
            seconds = int(refresh) if refresh else DEFAULT_REFRESH_SECONDS
        except ValueError as exc:
            raise ConfigurationInvalid(f"{ENV_REVOCATION_REFRESH} must be an integer") from exc
        return cls.configured(
            trust_dir=environ.get(ENV_TRUST_DIR) or None,
            revocation_list=environ.get(ENV_REVOCATION_LIST) or None,
            refresh_seconds=seconds,
        )

    def revocation_list(self, now: dt.datetime) -> RevocationList | None:
        """The status list in use at ``now`` (reloaded if due), or None."""
        return None if self.revocation is None else self.revocation.current(now)

    def material(self, now: dt.datetime) -> TrustMaterial:
        """What one activation's attestation is verified against; the status list is loaded
        only if an Android attestation asks for it."""
        return TrustMaterial(
            android=self.android,
            apple=self.apple,
            tpm=self.tpm,
            revocation=lambda: self.revocation_list(now),
        )

    def summary(self) -> list[str]:
        """One line per format: how many anchors, and their key SHA-256 (for the operator)."""
        lines = []
        for name, store in (("android", self.android), ("apple", self.apple), ("tpm", self.tpm)):
            keys = ", ".join(f"{a.key_sha256[:16]}… ({a.label})" for a in store.anchors)
            lines.append(f"{name}: {len(store)} anchor(s){': ' if keys else ''}{keys}")
        if self.revocation_source:
            lines.append(f"android revocation status list: {self.revocation_source}")
        return lines


def _stores(trust_dir: Path | None) -> dict[AttestationFormat, TrustStore]:
    if trust_dir is None:
        return {fmt: TrustStore.builtin(fmt) for fmt in FORMAT_DIRS.values()}
    if not trust_dir.is_dir():
        raise ConfigurationInvalid(
            f"{trust_dir}: the attestation trust directory is not a directory"
        )
    unknown = sorted(
        e.name
        for e in trust_dir.iterdir()
        if e.name not in FORMAT_DIRS and not e.name.startswith(".")
    )
    if unknown:
        raise ConfigurationInvalid(
            f"{trust_dir}: unexpected {unknown}; only {sorted(FORMAT_DIRS)} subdirectories"
        )
    stores = {}
    for name, fmt in FORMAT_DIRS.items():
        folder = trust_dir / name
        added: list[Path] = []
        removed: list[str] = []
        if folder.is_dir():
            for entry in sorted(folder.iterdir()):
                if entry.name.startswith("."):
                    continue
                if entry.suffix == ".pem" and entry.is_file():
                    added.append(entry)
                elif entry.name == REMOVED_KEYS_FILE and entry.is_file():
                    removed.extend(_removed_keys(entry))
                else:
                    raise ConfigurationInvalid(
                        f"{entry}: expected *.pem anchors or {REMOVED_KEYS_FILE}"
                    )
        elif folder.exists():
            raise ConfigurationInvalid(f"{folder}: not a directory")
        stores[fmt] = TrustStore.configured(fmt, add_files=added, remove_keys=removed)
    return stores


def _removed_keys(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationInvalid(f"{path}: {exc}") from exc
    keys = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [key for key in keys if key]


def _is_url(source: str) -> bool:
    return source.startswith(("https://", "http://"))


def _loader(source: str) -> _UrlSource | _FileSource:
    if _is_url(source):
        check_list_url(source)
        return _UrlSource(source)
    return _FileSource(Path(source).expanduser())


class _UrlSource:
    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, now: dt.datetime) -> RevocationList:
        return RevocationList.fetch(self.url, now=now)


class _FileSource:
    """A saved copy, whose age counts from its modification time: re-read only when the
    file changed (the cache asks again whenever the copy is older than its refresh)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._list: RevocationList | None = None
        self._lock = threading.Lock()

    def __call__(self, now: dt.datetime) -> RevocationList:
        try:
            info = self.path.stat()
        except OSError as exc:
            raise ConfigurationInvalid(f"{self.path}: cannot read the status list: {exc}") from exc
        with self._lock:
            if self._list is None or self._seen != (info.st_mtime_ns, info.st_size):
                self._list = RevocationList.from_file(self.path)
                self._seen = (info.st_mtime_ns, info.st_size)
            return self._list
