"""Server-side request forgery guard for webhook URLs.

A webhook URL is checked twice: when it is registered (scheme, no credentials, no literal internal address, no
``localhost`` name) and at every delivery after DNS resolution, where the delivery then connects to the very address
that was checked, so a name that resolved to a public address at registration (or a moment ago) cannot be swapped for
an internal one (DNS rebinding). ``KEYLEDGER_WEBHOOK_ALLOW_PRIVATE=true`` lifts the address rules and allows plain
http, for development and tests.
"""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

MAX_URL_LENGTH = 2048
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class UnsafeUrl(ValueError):
    """The URL may not be called; the message says why (it never contains the URL's query)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a delivery connects: the URL's parts and the checked address."""

    scheme: str
    host: str
    port: int
    path: str
    address: str


# IPv6 ranges that carry or reach an IPv4 address (NAT64, 6to4, IPv4-compatible, SIIT) or are deprecated site-local:
# refused whole, since the IPv4 address inside may be a private one.
_EMBEDDING_IPV4 = tuple(ipaddress.ip_network(n) for n in (
    "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "::/96", "::ffff:0:0:0/96", "fec0::/10"))


def address_allowed(address: str) -> bool:
    """Whether an IP address is a public unicast one (not loopback, private, link-local, multicast, reserved...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif any(ip in network for network in _EMBEDDING_IPV4):
            return False
    return ip.is_global and not ip.is_multicast


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _check_text(url: str) -> None:
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"the url is longer than {MAX_URL_LENGTH} characters")
    if any(not 0x21 <= ord(char) <= 0x7E for char in url):
        raise UnsafeUrl("the url must be printable ASCII (percent-encode anything else)")


def parse(url: str, *, allow_private: bool) -> SplitResult:
    """Checks a URL at registration.

    Raises:
        UnsafeUrl: not http(s) (https only unless ``allow_private``), credentials in it, no host, a fragment, or a
            literal address or local name that is not public.
    """
    _check_text(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("the url is malformed") from None
    allowed = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed:
        raise UnsafeUrl("the url must use https")
    if not parts.hostname:
        raise UnsafeUrl("the url has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("the url may not contain credentials")
    if parts.fragment:
        raise UnsafeUrl("the url may not contain a fragment")
    if port == 0:
        raise UnsafeUrl("the url has no valid port")
    if not allow_private:
        host = parts.hostname.rstrip(".").lower()
        literal = _literal(host)
        if literal is not None and not address_allowed(str(literal)):
            raise UnsafeUrl("the url points to a loopback, private, link-local or reserved address")
        if host in _LOCAL_NAMES or host.endswith(".localhost"):
            raise UnsafeUrl("the url points to a local host name")
    return parts


def resolve(url: str, *, allow_private: bool) -> Target:
    """Checks ``url`` again at delivery time and resolves it to one address that is allowed.

    Every address the name resolves to must be allowed (a name mixing public and internal addresses is refused),
    and the caller connects to the returned address, never to the name again.

    Raises:
        UnsafeUrl: the URL fails :func:`parse`, does not resolve, or resolves to a forbidden address.
    """
    parts = parse(url, allow_private=allow_private)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UnsafeUrl("the url's host does not resolve") from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise UnsafeUrl("the url's host does not resolve")
    if not allow_private:
        refused = [a for a in addresses if not address_allowed(a)]
        if refused:
            raise UnsafeUrl("the url's host resolves to a forbidden address")  # which one is not the tenant's business
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme=parts.scheme, host=host, port=port, path=path, address=addresses[0])
