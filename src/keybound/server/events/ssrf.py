"""Which endpoint URLs the server may call, checked at registration and again at connect time.

A relying party names a URL and the server POSTs to it from inside the operator's network:
without a policy that is a server-side request forgery (Standard Webhooks, "Server side
request forgery"). The rule (docs/webhooks.md §4):

- ``https`` only, unless the operator allows ``http``;
- every address the host resolves to must be public; loopback, private (RFC 1918, ULA),
  link-local, shared (CGNAT), multicast, unspecified and reserved addresses are refused,
  including the IPv4 addresses hidden in IPv4-mapped, NAT64 and 6to4 forms, unless the
  operator lists their network in ``allowed_networks``.

Registration calls :func:`check_endpoint_url`. Delivery goes through :class:`GuardedTransport`
(the push-service webhook, a blocking client, through :class:`GuardedSyncTransport`),
whose network backend resolves the name itself, checks every address and connects to the
address it checked, so a DNS answer that changes between check and connect (rebinding) gains
nothing. TLS still uses the URL's host name for SNI and certificate checks, and httpx sends the
URL's host in ``Host``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

import httpcore
import httpx

from keybound.errors import ErrorCode, KeyboundError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Resolves a host name (or an address literal) to its addresses; may block, so the async
#: path runs it in a worker thread. Injectable so tests can change the answer between calls.
Resolver = Callable[[str, int], Sequence[IPAddress]]


class EndpointUrlInvalid(KeyboundError):
    code = ErrorCode.ENDPOINT_URL_INVALID


class EndpointAddressRefused(KeyboundError):
    code = ErrorCode.ENDPOINT_ADDRESS_REFUSED


class AddressClass(StrEnum):
    """Why an address is (not) reachable by default; only PUBLIC is."""

    PUBLIC = "public"
    LOOPBACK = "loopback"
    PRIVATE = "private"  # RFC 1918, RFC 4193 (ULA)
    LINK_LOCAL = "link_local"
    SHARED = "shared"  # RFC 6598 carrier-grade NAT
    MULTICAST = "multicast"
    UNSPECIFIED = "unspecified"
    RESERVED = "reserved"  # any other special-purpose block (IANA registries), incl. documentation


_REFUSED = "{host} does not resolve to addresses the endpoint policy allows"
_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the low 32 bits
_TEREDO = ipaddress.ip_network("2001::/32")  # the client address inside is obfuscated: refuse
# Special-purpose blocks that ipaddress.is_global has not always covered the same way across
# Python releases; listing them keeps the decision independent of the interpreter's patch level.
_RESERVED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "240.0.0.0/4",
        "255.255.255.255/32",
        "::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001:db8::/32",
        "2001:2::/48",
        "2001:10::/28",
        "3fff::/20",
        "5f00::/16",
        "fec0::/10",
    )
)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, NAT64, 6to4), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def classify(address: IPAddress) -> AddressClass:
    """The class of one address (pure; the table of cases is in the tests)."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return classify(inner)
        if address in _TEREDO:
            return AddressClass.RESERVED
    if address.is_unspecified:
        return AddressClass.UNSPECIFIED
    if address.is_loopback:
        return AddressClass.LOOPBACK
    if address.is_link_local:
        return AddressClass.LINK_LOCAL
    if address.is_multicast:
        return AddressClass.MULTICAST
    if address in _SHARED:
        return AddressClass.SHARED
    if any(address in network for network in _PRIVATE):
        return AddressClass.PRIVATE
    if any(address in network for network in _RESERVED) or address.is_reserved:
        return AddressClass.RESERVED
    if not address.is_global:
        return AddressClass.RESERVED
    return AddressClass.PUBLIC


@dataclass(frozen=True, kw_only=True)
class EndpointPolicy:
    """The operator's rule for endpoint URLs. The default refuses everything but public https."""

    allow_http: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    def refusal(self, address: IPAddress) -> AddressClass | None:
        """None when ``address`` may be called; otherwise the class that refuses it."""
        if any(address in network for network in self.allowed_networks):
            return None
        if isinstance(address, ipaddress.IPv6Address):
            inner = embedded_ipv4(address)
            if inner is not None and any(inner in net for net in self.allowed_networks):
                return None
        found = classify(address)
        return None if found is AddressClass.PUBLIC else found

    def check_addresses(self, host: str, addresses: Iterable[IPAddress]) -> None:
        """Raise unless every address is allowed: one refused answer is enough to refuse,
        since the connect could land on any of them.

        The message is the same whatever the reason, so registering URLs cannot map the
        operator's internal DNS; the reason is in the error's fields, for logs.
        """
        listed = list(addresses)
        # docs/webhooks.md §4: a name with no address cannot be checked
        if not listed:
            raise EndpointAddressRefused(_REFUSED.format(host=host), address_class="none")
        for address in listed:
            found = self.refusal(address)
            # docs/webhooks.md §4: every address must be allowed
            if found is not None:
                raise EndpointAddressRefused(
                    _REFUSED.format(host=host), address=str(address), address_class=found.value
                )


@dataclass(frozen=True, kw_only=True)
class CheckedEndpoint:
    """An endpoint URL that passed the policy at the time of the check."""

    url: str  # normalized by httpx, the same parser that sends
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The operating system's answer (getaddrinfo), in its order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def parse_endpoint_url(url: str, *, policy: EndpointPolicy) -> tuple[httpx.URL, str, int]:
    """Parse with httpx (no second parser to disagree with) and check scheme, host and port."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise EndpointUrlInvalid("not a valid URL") from exc
    allowed = ("https", "http") if policy.allow_http else ("https",)
    # docs/webhooks.md §4: https unless the operator allows http
    if parsed.scheme not in allowed:
        raise EndpointUrlInvalid(f"scheme must be {' or '.join(allowed)}")
    host = parsed.raw_host.decode("ascii")
    # docs/webhooks.md §4: an absolute URL with a host
    if not host:
        raise EndpointUrlInvalid("URL has no host")
    port = parsed.port if parsed.port is not None else (443 if parsed.scheme == "https" else 80)
    if not 0 < port < 65536:
        raise EndpointUrlInvalid("port out of range")
    return parsed, host, port


def check_endpoint_url(
    url: str, *, policy: EndpointPolicy, resolver: Resolver = system_resolver
) -> CheckedEndpoint:
    """The registration-time check: parse, resolve, refuse unless every address is allowed.

    Passing here is not enough to be called later: delivery checks again at connect time.
    """
    parsed, host, port = parse_endpoint_url(url, policy=policy)
    try:
        addresses = tuple(resolver(host, port))
    except (OSError, UnicodeError) as exc:
        # docs/webhooks.md §4: told apart from a refused address only in the fields
        raise EndpointAddressRefused(
            _REFUSED.format(host=host), address_class="unresolvable"
        ) from exc
    policy.check_addresses(host, addresses)
    return CheckedEndpoint(url=str(parsed), host=host, port=port, addresses=addresses)


def _connect_order(addresses: Sequence[IPAddress]) -> Iterator[str]:
    """The checked addresses to try, in order; an IPv4-mapped one as its IPv4 address (the
    same host, and it works without a dual-stack socket)."""
    for address in addresses:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        yield str(address)


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the policy applied where the socket is opened.

    httpcore asks for ``connect_tcp(host, port)`` with the URL's host; this resolves it,
    checks every address and connects to a checked address, trying them in order.
    """

    def __init__(self, *, policy: EndpointPolicy, resolver: Resolver) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def _resolve(self, host: str, port: int, timeout: float | None) -> Sequence[IPAddress]:
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.to_thread(self._resolver, host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from exc

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port, timeout)
        self._policy.check_addresses(host, addresses)
        last: Exception | None = None
        for address in _connect_order(addresses):
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None  # check_addresses refused an empty answer
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise EndpointAddressRefused("webhooks are never sent over a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport whose connection pool opens sockets through the policy.

    httpx builds its pool in ``__init__`` with no way to name a network backend, so the pool is
    replaced by one that has :class:`GuardedNetworkBackend`; request and response mapping stay
    httpx's own. No proxy (environment proxies would bypass the check) and no unix socket.
    """

    def __init__(
        self,
        *,
        policy: EndpointPolicy,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        self._policy = policy
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        context = ssl_context or httpx.create_ssl_context(trust_env=False)
        super().__init__(verify=context, trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedNetworkBackend(policy=policy, resolver=resolver),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # docs/webhooks.md §4: the scheme rule holds at send time too (the operator may have
        # withdrawn http since the endpoint was registered)
        parse_endpoint_url(str(request.url), policy=self._policy)
        return await super().handle_async_request(request)


class GuardedSyncNetworkBackend(httpcore.NetworkBackend):
    """:class:`GuardedNetworkBackend` for a blocking client (the push-service webhook, sent
    from a worker thread): the same resolve, check and connect-to-what-was-checked."""

    def __init__(self, *, policy: EndpointPolicy, resolver: Resolver) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = self._resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from exc
        self._policy.check_addresses(host, addresses)
        last: Exception | None = None
        for address in _connect_order(addresses):
            try:
                return self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None  # check_addresses refused an empty answer
        raise last

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise EndpointAddressRefused("webhooks are never sent over a unix socket")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class GuardedSyncTransport(httpx.HTTPTransport):
    """:class:`GuardedTransport` for a blocking ``httpx.Client``."""

    def __init__(
        self,
        *,
        policy: EndpointPolicy,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._policy = policy
        context = ssl_context or httpx.create_ssl_context(trust_env=False)
        super().__init__(verify=context, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            network_backend=GuardedSyncNetworkBackend(policy=policy, resolver=resolver),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        parse_endpoint_url(str(request.url), policy=self._policy)  # as GuardedTransport does
        return super().handle_request(request)
