"""Google's attestation certificate status list (revoked and suspended keys and CAs).

Format (https://developer.android.com/privacy-and-security/security-key-attestation,
"Certificate revocation status list"; served at https://android.googleapis.com/attestation/status)::

    {"entries": {"<serial>": {"status": "REVOKED" | "SUSPENDED", "reason": "...",
                              "comment": "...", "expires": "YYYY-MM-DD"}, ...}}

Serials are the certificates' serial numbers in hex (any case). Google's own older sample
also keys some entries in decimal, and its Java checker matches both forms, so a serial is
listed when either its hex or its decimal spelling is a key: over-matching can only refuse
more, never less. Every listed status refuses the certificate (``SUSPENDED`` included, unlike
Google's Kotlin verifier); a status other than the two documented ones is treated as
``REVOKED``.

The list is data, not trust material: it may be loaded from a file or fetched from a URL
(``httpx``, imported only when fetching). :class:`RevocationCache` keeps the last good copy,
refreshes it when it is older than a configured age, and reports the age of what it serves,
so a failed refresh degrades to an older list that the caller can see (and refuse by
policy: ``AndroidKeyPolicy.max_revocation_list_age``).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

from keybound.errors import ConfigurationInvalid

#: The list Google publishes (used only if the operator configures it; never implied).
GOOGLE_STATUS_URL = "https://android.googleapis.com/attestation/status"
#: Largest list accepted (Google's is well under this).
MAX_LIST_BYTES = 32 * 1024 * 1024
#: The only hosts a list may come from over plain http (a test server on this machine).
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})


def check_list_url(url: str) -> None:
    """Raise ConfigurationInvalid unless ``url`` is ``https://``, or ``http://`` on the
    loopback. The host is parsed, not prefix-matched: ``http://127.0.0.1@elsewhere`` and
    ``http://localhost.example`` are elsewhere."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS):
        return
    raise ConfigurationInvalid(f"status list URL must be https: {url}")


class RevocationStatus(StrEnum):
    REVOKED = "REVOKED"
    SUSPENDED = "SUSPENDED"


@dataclass(frozen=True, kw_only=True)
class RevocationEntry:
    status: RevocationStatus
    reason: str | None = None
    comment: str | None = None
    expires: str | None = None


@dataclass(frozen=True, kw_only=True)
class RevocationList:
    """One copy of the status list and when it was obtained."""

    entries: Mapping[str, RevocationEntry]
    fetched_at: dt.datetime
    source: str

    def lookup(self, serial: int) -> RevocationEntry | None:
        """The entry for a certificate serial (hex or decimal key), or None."""
        if serial < 0:
            return None
        return self.entries.get(format(serial, "x")) or self.entries.get(str(serial))

    def age(self, now: dt.datetime) -> dt.timedelta:
        return max(now - self.fetched_at, dt.timedelta(0))

    @classmethod
    def parse(cls, data: bytes, *, fetched_at: dt.datetime, source: str) -> RevocationList:
        """Parse the JSON document; ConfigurationInvalid if it is not the documented shape."""
        if len(data) > MAX_LIST_BYTES:
            raise ConfigurationInvalid(f"{source}: status list larger than {MAX_LIST_BYTES}")
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise ConfigurationInvalid(f"{source}: status list is not JSON") from exc
        raw = document.get("entries") if isinstance(document, dict) else None
        if not isinstance(raw, dict):
            raise ConfigurationInvalid(f"{source}: status list has no 'entries' object")
        entries: dict[str, RevocationEntry] = {}
        for key, value in raw.items():
            entries[_normalise(key, source)] = _entry(value, key, source)
        if fetched_at.tzinfo is None:
            raise ConfigurationInvalid("fetched_at must be timezone-aware")
        return cls(entries=MappingProxyType(entries), fetched_at=fetched_at, source=source)

    @classmethod
    def from_file(
        cls, path: Path | str, *, fetched_at: dt.datetime | None = None
    ) -> RevocationList:
        """Load a saved copy; its age counts from ``fetched_at`` or else the file's mtime."""
        path = Path(path)
        try:
            data = path.read_bytes()
            mtime = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
        except OSError as exc:
            raise ConfigurationInvalid(f"{path}: cannot read the status list: {exc}") from exc
        return cls.parse(data, fetched_at=fetched_at or mtime, source=str(path))

    @classmethod
    def fetch(cls, url: str, *, now: dt.datetime, timeout: float = 10.0) -> RevocationList:
        """GET the list from ``url`` (``https://``, or ``http://`` on the loopback only)."""
        import httpx  # only a fetching process pays for the HTTP client

        check_list_url(url)
        try:
            with (
                httpx.Client(timeout=timeout, follow_redirects=False) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    raise ConfigurationInvalid(f"{url}: HTTP {response.status_code}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_LIST_BYTES:
                        raise ConfigurationInvalid(f"{url}: status list too large")
        except httpx.HTTPError as exc:
            raise ConfigurationInvalid(f"{url}: cannot fetch the status list: {exc}") from exc
        return cls.parse(bytes(body), fetched_at=now, source=url)


class RevocationCache:
    """The last good list, refreshed through ``loader`` once it is ``refresh_after`` old.

    A failed refresh keeps the previous list (its age keeps growing and is reported); the
    next call tries again. Thread-safe: concurrent callers share one refresh.
    """

    def __init__(
        self,
        loader: Callable[[dt.datetime], RevocationList],
        *,
        refresh_after: dt.timedelta = dt.timedelta(hours=1),
    ) -> None:
        self._loader = loader
        self._refresh_after = refresh_after
        self._current: RevocationList | None = None
        self._last_error: str | None = None
        self._lock = threading.Lock()

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def current(self, now: dt.datetime) -> RevocationList | None:
        with self._lock:
            if self._current is None or self._current.age(now) >= self._refresh_after:
                try:
                    self._current = self._loader(now)
                    self._last_error = None
                except ConfigurationInvalid as exc:
                    self._last_error = exc.detail
            return self._current


def _normalise(key: object, source: str) -> str:
    if not isinstance(key, str) or not key or len(key) > 128:
        raise ConfigurationInvalid(f"{source}: bad serial key {key!r}")
    lowered = key.strip().lower()
    if any(char not in "0123456789abcdef" for char in lowered):
        raise ConfigurationInvalid(f"{source}: serial key {key!r} is not hex")
    return lowered.lstrip("0") or "0"


def _entry(value: object, key: str, source: str) -> RevocationEntry:
    if not isinstance(value, dict):
        raise ConfigurationInvalid(f"{source}: entry {key!r} is not an object")
    status = value.get("status")
    known = {member.value for member in RevocationStatus}
    return RevocationEntry(
        status=RevocationStatus(status) if status in known else RevocationStatus.REVOKED,
        reason=_text(value.get("reason")),
        comment=_text(value.get("comment")),
        expires=_text(value.get("expires")),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
