"""The endpoint URL policy: the address table, the registration check, and the attacks at
connect time against a real receiver on 127.0.0.1 (each refused with the default policy and,
as a control, delivered when the operator allows loopback, so the refusal is not vacuous)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from pathlib import Path

import pytest

from keybound.errors import ErrorCode, KeyboundError
from keybound.server.events.delivery import DeliveryTimeouts, WebhookSender, create_client
from keybound.server.events.schedule import AttemptError, AttemptResult
from keybound.server.events.signing import SymmetricSecret
from keybound.server.events.ssrf import (
    AddressClass,
    EndpointAddressRefused,
    EndpointPolicy,
    IPAddress,
    Resolver,
    check_endpoint_url,
    classify,
    system_resolver,
)
from tests.server.events.helpers import delivery
from tests.server.events.receiver import Receiver, make_tls

ip = ipaddress.ip_address
#: The default rule with http allowed, so the tests reach the plain-http receiver.
STRICT = EndpointPolicy(allow_http=True)
#: What the tests' operator allows explicitly: loopback.
LOOPBACK = EndpointPolicy(
    allow_http=True,
    allowed_networks=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
)
QUICK = DeliveryTimeouts(connect=2, read=2, total=5)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("8.8.8.8", AddressClass.PUBLIC),
        ("172.32.0.1", AddressClass.PUBLIC),
        ("100.128.0.1", AddressClass.PUBLIC),
        ("2606:4700:4700::1111", AddressClass.PUBLIC),
        ("127.0.0.1", AddressClass.LOOPBACK),
        ("127.0.0.2", AddressClass.LOOPBACK),
        ("127.255.255.254", AddressClass.LOOPBACK),
        ("::1", AddressClass.LOOPBACK),
        ("10.0.0.1", AddressClass.PRIVATE),
        ("172.16.0.1", AddressClass.PRIVATE),
        ("172.31.255.255", AddressClass.PRIVATE),
        ("192.168.1.1", AddressClass.PRIVATE),
        ("fc00::1", AddressClass.PRIVATE),
        ("fd12:3456::1", AddressClass.PRIVATE),
        ("169.254.169.254", AddressClass.LINK_LOCAL),  # cloud metadata
        ("fe80::1", AddressClass.LINK_LOCAL),
        ("100.64.0.1", AddressClass.SHARED),
        ("100.127.255.255", AddressClass.SHARED),
        ("224.0.0.1", AddressClass.MULTICAST),
        ("239.255.255.250", AddressClass.MULTICAST),
        ("ff02::1", AddressClass.MULTICAST),
        ("ff0e::1", AddressClass.MULTICAST),
        ("0.0.0.0", AddressClass.UNSPECIFIED),
        ("::", AddressClass.UNSPECIFIED),
        ("0.1.2.3", AddressClass.RESERVED),
        ("192.0.0.8", AddressClass.RESERVED),
        ("192.0.2.1", AddressClass.RESERVED),
        ("198.18.0.1", AddressClass.RESERVED),
        ("240.0.0.1", AddressClass.RESERVED),
        ("255.255.255.255", AddressClass.RESERVED),
        ("2001:db8::1", AddressClass.RESERVED),
        ("fec0::1", AddressClass.RESERVED),
        ("::127.0.0.1", AddressClass.RESERVED),  # IPv4-compatible (deprecated)
        ("2001:0:4136:e378::1", AddressClass.RESERVED),  # Teredo
        # IPv4 hidden in IPv6 takes the class of the IPv4 address
        ("::ffff:127.0.0.1", AddressClass.LOOPBACK),
        ("::ffff:10.0.0.1", AddressClass.PRIVATE),
        ("::ffff:169.254.169.254", AddressClass.LINK_LOCAL),
        ("::ffff:8.8.8.8", AddressClass.PUBLIC),
        ("64:ff9b::7f00:1", AddressClass.LOOPBACK),  # NAT64
        ("64:ff9b::a9fe:a9fe", AddressClass.LINK_LOCAL),
        ("64:ff9b::808:808", AddressClass.PUBLIC),
        ("2002:7f00:1::", AddressClass.LOOPBACK),  # 6to4
        ("2002:a00:1::", AddressClass.PRIVATE),
    ],
)
def test_classify(address: str, expected: AddressClass) -> None:
    assert classify(ip(address)) is expected


def test_allow_list_covers_mapped_forms_and_nothing_else() -> None:
    assert LOOPBACK.refusal(ip("127.0.0.1")) is None
    assert LOOPBACK.refusal(ip("127.0.0.2")) is None
    assert LOOPBACK.refusal(ip("::ffff:127.0.0.1")) is None
    assert LOOPBACK.refusal(ip("::1")) is None
    assert LOOPBACK.refusal(ip("10.0.0.1")) is AddressClass.PRIVATE
    assert LOOPBACK.refusal(ip("169.254.169.254")) is AddressClass.LINK_LOCAL
    assert STRICT.refusal(ip("127.0.0.1")) is AddressClass.LOOPBACK
    assert STRICT.refusal(ip("93.184.216.34")) is None


def _code(url: str, policy: EndpointPolicy, resolver: Resolver = system_resolver) -> ErrorCode:
    with pytest.raises(KeyboundError) as caught:
        check_endpoint_url(url, policy=policy, resolver=resolver)
    return caught.value.code


REFUSED = ErrorCode.ENDPOINT_ADDRESS_REFUSED
LOOPBACK_FORMS = [
    "http://localhost/hook",  # a DNS name (hosts file) that resolves to loopback
    "http://127.0.0.1/hook",
    "http://127.0.0.2/hook",
    "http://2130706433/hook",  # decimal
    "http://0x7f.1/hook",  # hex, short form
    "http://127.1/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped IPv6
    "http://[::ffff:7f00:1]/hook",
    "http://[64:ff9b::7f00:1]/hook",
    "http://[2002:7f00:1::1]/hook",
]


@pytest.mark.parametrize(
    "url",
    [
        *LOOPBACK_FORMS,
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
        "http://10.1.2.3/",
        "http://192.168.0.1:8080/",
        "http://[fd00::1]/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://224.0.0.1/",
    ],
)
def test_registration_refuses_internal_addresses(url: str) -> None:
    assert _code(url, STRICT) is REFUSED


@pytest.mark.parametrize(
    ("url", "policy"),
    [
        ("http://93.184.216.34/hook", EndpointPolicy()),  # http not allowed by default
        ("ftp://93.184.216.34/hook", STRICT),
        ("file:///etc/passwd", STRICT),
        ("https:///hook", STRICT),
        ("hooks.example.com/hook", STRICT),
        ("http://0177.0.0.1/", STRICT),  # octal: httpx refuses to parse it, so it never sends it
        ("http://93.184.216.34:0/", STRICT),
        ("http://93.184.216.34:70000/", STRICT),
    ],
)
def test_registration_refuses_bad_urls(url: str, policy: EndpointPolicy) -> None:
    assert _code(url, policy) is ErrorCode.ENDPOINT_URL_INVALID


def test_registration_accepts_public_and_allowed_addresses() -> None:
    checked = check_endpoint_url("https://93.184.216.34/hook?x=1", policy=EndpointPolicy())
    assert (checked.host, checked.port, checked.addresses) == (
        "93.184.216.34",
        443,
        (ip("93.184.216.34"),),
    )
    assert check_endpoint_url("http://localhost:8080/", policy=LOOPBACK).port == 8080


def _answers(table: dict[str, Sequence[IPAddress]]) -> Resolver:
    def resolve(host: str, port: int) -> Sequence[IPAddress]:
        if host not in table:
            raise OSError("no such host")
        return table[host]

    return resolve


def test_every_address_is_checked() -> None:
    mixed = _answers(
        {"hooks.example.test": [ip("93.184.216.34"), ip("10.0.0.7")], "empty.example.test": []}
    )
    assert _code("https://hooks.example.test/", EndpointPolicy(), mixed) is REFUSED
    assert _code("https://empty.example.test/", EndpointPolicy(), mixed) is REFUSED
    assert _code("https://nowhere.example.test/", EndpointPolicy(), mixed) is REFUSED


def test_refusals_do_not_tell_internal_names_apart() -> None:
    """Unresolvable, private and loopback answers read the same to the caller."""
    table = _answers({"db.internal": [ip("10.0.0.5")], "lo.internal": [ip("127.0.0.1")]})
    details, reasons = set(), []
    for host in ("db.internal", "lo.internal", "nothing.internal"):
        with pytest.raises(KeyboundError) as caught:
            check_endpoint_url(f"https://{host}/", policy=EndpointPolicy(), resolver=table)
        details.add(caught.value.detail.replace(host, "HOST"))
        reasons.append(caught.value.fields["address_class"])
    assert len(details) == 1
    assert reasons == ["private", "loopback", "unresolvable"]


# --- at connect time, against a real receiver ---------------------------------------------


def _attempt(
    url: str,
    secret: SymmetricSecret,
    *,
    policy: EndpointPolicy,
    resolver: Resolver = system_resolver,
) -> AttemptResult:
    async def run() -> AttemptResult:
        async with create_client(policy=policy, resolver=resolver, timeouts=QUICK) as client:
            return await WebhookSender(client=client, timeouts=QUICK).attempt(delivery(url, secret))

    return asyncio.run(run())


@pytest.mark.parametrize(
    "form",
    [
        "http://localhost:{port}/hook",
        "http://127.0.0.1:{port}/hook",
        "http://2130706433:{port}/hook",
        "http://0x7f.1:{port}/hook",
        "http://127.1:{port}/hook",
        "http://[::ffff:127.0.0.1]:{port}/hook",
    ],
)
def test_connect_time_refusal_of_loopback_forms(
    form: str, receiver: Receiver, hmac_secret: SymmetricSecret
) -> None:
    url = form.format(port=receiver.port)
    refused = _attempt(url, hmac_secret, policy=STRICT)
    assert refused.error is AttemptError.POLICY_REFUSED
    assert receiver.received == []  # no byte reached the listener
    allowed = _attempt(url, hmac_secret, policy=LOOPBACK)  # control: the form does reach it
    assert allowed.status == 200 and allowed.error is None
    assert [r.verified for r in receiver.received] == [True]


@pytest.mark.parametrize("form", ["http://127.0.0.2:{port}/", "http://[::1]:{port}/"])
def test_connect_time_refusal_of_other_loopback_addresses(
    form: str, receiver: Receiver, hmac_secret: SymmetricSecret
) -> None:
    result = _attempt(form.format(port=receiver.port), hmac_secret, policy=STRICT)
    assert result.error is AttemptError.POLICY_REFUSED


def test_the_transport_itself_refuses(receiver: Receiver) -> None:
    async def run() -> None:
        async with create_client(policy=STRICT) as client:
            with pytest.raises(EndpointAddressRefused) as caught:
                await client.post(receiver.url(host="localhost"), content=b"{}")
            assert caught.value.fields["address_class"] == "loopback"

    asyncio.run(run())
    assert receiver.received == []


def test_dns_rebinding_between_registration_and_delivery(
    receiver: Receiver, hmac_secret: SymmetricSecret
) -> None:
    table: dict[str, Sequence[IPAddress]] = {"hooks.example.test": [ip("93.184.216.34")]}
    url = receiver.url(host="hooks.example.test")
    checked = check_endpoint_url(url, policy=STRICT, resolver=_answers(table))
    assert checked.addresses == (ip("93.184.216.34"),)
    table["hooks.example.test"] = [ip("127.0.0.1")]  # the attacker's DNS changes its answer
    result = _attempt(url, hmac_secret, policy=STRICT, resolver=_answers(table))
    assert result.error is AttemptError.POLICY_REFUSED
    table["hooks.example.test"] = [ip("93.184.216.34"), ip("127.0.0.1")]
    result = _attempt(url, hmac_secret, policy=STRICT, resolver=_answers(table))
    assert result.error is AttemptError.POLICY_REFUSED
    assert receiver.received == []


def test_connects_to_the_checked_address_and_keeps_the_host(
    receiver: Receiver, hmac_secret: SymmetricSecret
) -> None:
    """hooks.example.test exists only in the injected resolver: the request can arrive only
    through the address the policy checked, and the receiver still sees the URL's host."""
    calls: list[str] = []

    def resolve(host: str, port: int) -> Sequence[IPAddress]:
        calls.append(host)
        return [ip("::1"), ip("127.0.0.1")]  # nothing listens on ::1: the next one is tried

    result = _attempt(
        receiver.url(host="hooks.example.test"), hmac_secret, policy=LOOPBACK, resolver=resolve
    )
    assert result.status == 200
    assert calls == ["hooks.example.test"]
    assert receiver.received[0].host == f"hooks.example.test:{receiver.port}"


def test_tls_uses_the_url_host_for_sni_and_certificate(
    tmp_path: Path, hmac_secret: SymmetricSecret
) -> None:
    tls = make_tls(tmp_path, "hooks.example.test")
    server = Receiver(secrets=(hmac_secret.serialize(),), tls=tls.server).start()
    to_loopback = _answers(
        {"hooks.example.test": [ip("127.0.0.1")], "other.example.test": [ip("127.0.0.1")]}
    )
    policy = EndpointPolicy(allowed_networks=LOOPBACK.allowed_networks)  # https only

    async def send(host: str) -> AttemptResult:
        async with create_client(
            policy=policy, resolver=to_loopback, timeouts=QUICK, ssl_context=tls.client
        ) as client:
            return await WebhookSender(client=client).attempt(
                delivery(server.url(host=host), hmac_secret)
            )

    try:
        result = asyncio.run(send("hooks.example.test"))
        assert result.status == 200
        assert server.sni == ["hooks.example.test"]
        assert server.received[0].host == f"hooks.example.test:{server.port}"
        # the certificate is checked against the URL's name, not the address connected to
        mismatch = asyncio.run(send("other.example.test"))
        assert mismatch.error is AttemptError.CONNECT and "CERTIFICATE" in mismatch.detail
        assert len(server.received) == 1
    finally:
        server.stop()


def test_http_refused_at_send_time_once_the_operator_withdraws_it(
    receiver: Receiver, hmac_secret: SymmetricSecret
) -> None:
    https_only = EndpointPolicy(allowed_networks=LOOPBACK.allowed_networks)
    result = _attempt(receiver.url(), hmac_secret, policy=https_only)
    assert result.error is AttemptError.POLICY_REFUSED
    assert receiver.received == []
