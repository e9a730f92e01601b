"""Fetch an image URL without letting the caller reach private networks (SSRF guard).

Guarantees of :func:`fetch_url`:

* Only ``http`` and ``https`` URLs with a host and without userinfo (``user:pass@``) are accepted; any port is allowed.
* The host is resolved once per hop and *every* resolved address must be public: loopback, private, link-local,
  multicast, reserved, unspecified, shared address space (100.64.0.0/10), IPv6 unique-local/site-local addresses are
  refused, and IPv6 forms that embed an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, 6to4 ``2002::/16``, NAT64
  ``64:ff9b::/96``) are judged by the embedded IPv4 address. Literal IP hosts, including the legacy numeric forms
  ``2130706433``, ``0x7f000001`` and ``0177.0.0.1``, are normalised and checked the same way.
* The connection goes to the validated IP address itself (the name is not resolved again), so there is no
  DNS-rebinding window; the ``Host`` header and, for HTTPS, SNI and certificate checks use the original host name.
* Redirects (301, 302, 303, 307, 308) are followed by this module, never by urllib3, and every hop is validated
  again (scheme, userinfo, addresses); at most ``FetchPolicy.max_redirects`` are followed.
* The body is streamed and reading stops as soon as more than ``FetchPolicy.max_bytes`` arrive (a larger
  ``Content-Length`` is refused before reading); ``FetchPolicy.timeout`` bounds the whole fetch, redirects included
  (name resolution through the system resolver is the one step it cannot interrupt).
* Only :class:`UrlFetchError` (HTTP 400), its subclass :class:`UrlForbiddenError` (HTTP 400) and
  :class:`~sam3studio.errors.InputTooLargeError` (HTTP 413) escape, each with a one-sentence message.

``FetchPolicy.allow_private`` and ``FetchPolicy.allowed_hosts`` switch the address check off (for everything, or
for the named hosts); they are meant for tests and trusted deployments only.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urljoin, urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.exceptions import NewConnectionError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError

from sam3studio.errors import InputError, InputTooLargeError

__all__ = ["FetchPolicy", "UrlFetchError", "UrlForbiddenError", "check_address", "fetch_url"]

Resolver = Callable[[str, int], list[str]]

_ALLOWED_SCHEMES = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
# Ranges refused on top of what ``ipaddress`` flags, so the verdict does not depend on the Python version.
_EXTRA_FORBIDDEN = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "192.0.0.0/24",  # IETF protocol assignments
        "198.18.0.0/15",  # benchmarking
        "64:ff9b:1::/48",  # local-use NAT64
        "2001::/23",  # IETF protocol assignments, Teredo included
        "2001:db8::/32",  # documentation
        "fec0::/10",  # site-local
    )
)


class UrlFetchError(InputError):
    """An image URL could not be fetched (bad URL, network error, non-2xx status, timeout). Maps to HTTP 400."""


class UrlForbiddenError(UrlFetchError):
    """An image URL points at a non-public address or uses a forbidden scheme or userinfo. Maps to HTTP 400."""


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for :func:`fetch_url`.

    ``allow_private`` disables the address check entirely and ``allowed_hosts`` exempts the named hosts
    (compared case-insensitively, without port) from it; both are for tests and trusted internal hosts only.
    """

    max_bytes: int = 20 * 1024 * 1024
    timeout: float = 10.0  # total seconds for the whole fetch including redirects
    max_redirects: int = 5
    allow_private: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)


# --------------------------------------------------------------------------------------------- addresses


def _is_public(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id:
            return False
        embedded = addr.ipv4_mapped or addr.sixtofour
        if embedded is None and addr in _NAT64_WELL_KNOWN:
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if embedded is not None:
            return _is_public(embedded)
        if addr.is_site_local:
            return False
    if (
        addr.is_loopback
        or addr.is_private
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
        or not addr.is_global
    ):
        return False
    return not any(addr.version == net.version and addr in net for net in _EXTRA_FORBIDDEN)


def _describe(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = addr.ipv4_mapped or addr.sixtofour
        if embedded is None and addr in _NAT64_WELL_KNOWN:
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if embedded is not None:
            return f"{addr} (which embeds {embedded})"
    return str(addr)


def _parse_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Parse a textual address, accepting the legacy IPv4 forms (``2130706433``, ``0x7f.1``, ``0177.0.0.1``)."""
    text = ip.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if text and all(c in "0123456789abcdefxABCDEFX." for c in text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def check_address(ip: str) -> None:
    """Raise :class:`UrlForbiddenError` unless ``ip`` is a public unicast address."""
    addr = _parse_ip(ip)
    if addr is None:
        raise UrlForbiddenError(f"{ip!r} is not a valid IP address")
    if not _is_public(addr):
        raise UrlForbiddenError(f"address {_describe(addr)} is not a public address")


def _default_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


# --------------------------------------------------------------------------------------------- one hop


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str  # lower-case, IDNA-encoded, without brackets
    port: int
    path: str  # path + query, never empty

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _ALLOWED_SCHEMES[self.scheme] else f"{host}:{self.port}"


def _parse_target(url: str) -> _Target:
    try:
        parts: SplitResult = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UrlFetchError(f"image_url {url!r} is not a valid URL") from exc
    scheme = parts.scheme.lower()
    if scheme not in _ALLOWED_SCHEMES:
        shown = f"'{scheme}'" if scheme else "no scheme"
        raise UrlForbiddenError(f"image_url must use http or https, not {shown}")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UrlForbiddenError("image_url must not contain a user name or password")
    host = parts.hostname
    if not host:
        raise UrlForbiddenError(f"image_url {url!r} has no host")
    try:
        host = host.encode("idna").decode("ascii").lower() if not host.isascii() else host.lower()
    except UnicodeError as exc:
        raise UrlFetchError(f"image_url host {host!r} is not a valid host name") from exc
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return _Target(url=url, scheme=scheme, host=host, port=port or _ALLOWED_SCHEMES[scheme], path=path)


def _addresses(target: _Target, policy: FetchPolicy, resolver: Resolver) -> list[str]:
    """Resolve ``target`` to connectable addresses, all of them validated unless the policy exempts the host."""
    literal = _parse_ip(target.host)
    exempt = policy.allow_private or target.host in {h.lower() for h in policy.allowed_hosts}
    if literal is not None:
        if not exempt and not _is_public(literal):
            raise UrlForbiddenError(f"image_url address {_describe(literal)} is not a public address")
        return [str(literal)]
    try:
        resolved = list(dict.fromkeys(resolver(target.host, target.port)))
    except (OSError, UnicodeError, ValueError) as exc:
        raise UrlFetchError(f"image_url host {target.host!r} could not be resolved") from exc
    if not resolved:
        raise UrlFetchError(f"image_url host {target.host!r} could not be resolved")
    checked: list[str] = []
    for text in resolved:
        addr = _parse_ip(str(text))
        if addr is None:
            raise UrlFetchError(f"image_url host {target.host!r} resolved to an invalid address")
        if not exempt and not _is_public(addr):
            raise UrlForbiddenError(
                f"image_url host {target.host!r} resolves to {_describe(addr)}, which is not a public address"
            )
        checked.append(str(addr))
    return checked


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise self.error()
        return left

    def error(self) -> UrlFetchError:
        return UrlFetchError(f"timed out fetching image_url (limit {self.seconds:g} s)")


def _pool(target: _Target, ip: str) -> urllib3.HTTPConnectionPool:
    common = {"maxsize": 1, "retries": False, "block": False}
    if target.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            ip, target.port, server_hostname=target.host, assert_hostname=target.host, cert_reqs="CERT_REQUIRED", **common
        )
    return urllib3.HTTPConnectionPool(ip, target.port, **common)


def _request(target: _Target, addresses: list[str], deadline: _Deadline) -> urllib3.BaseHTTPResponse:
    headers = {
        "Host": target.host_header,
        "User-Agent": "sam3studio-url-fetch",
        "Accept": "image/*, */*;q=0.5",
        "Accept-Encoding": "identity",
    }
    last: Exception | None = None
    for ip in addresses:
        left = deadline.remaining()
        pool = _pool(target, ip)
        try:
            return pool.urlopen(
                "GET",
                target.path,
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                timeout=urllib3.Timeout(connect=left, read=left),
            )
        except NewConnectionError as exc:  # try the next address; anything else is final
            last = exc
            pool.close()
        except BaseException:
            pool.close()
            raise
    raise UrlFetchError(f"could not connect to image_url host {target.host!r}: {_reason(last)}")


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "no address"
    text = ""
    while exc is not None and not text:
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused"
        if isinstance(exc, ConnectionResetError):
            return "connection reset"
        if isinstance(exc, NewConnectionError):
            text = str(exc).rsplit(": ", 1)[-1]
        exc = exc.__cause__ or exc.__context__
    if not text:
        return "the connection failed or was broken"
    if "refused" in text.lower():
        return "connection refused"
    return text.rstrip(".")[:120]


def _read_body(resp: urllib3.BaseHTTPResponse, policy: FetchPolicy, deadline: _Deadline) -> bytes:
    declared = resp.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > policy.max_bytes:
        raise InputTooLargeError(f"image_url body is {int(declared)} bytes, more than the limit of {policy.max_bytes} bytes")
    chunks: list[bytes] = []
    total = 0
    while True:
        left = deadline.remaining()
        sock = getattr(getattr(resp, "connection", None), "sock", None)
        if sock is not None:
            sock.settimeout(left)  # a single read must not outlive the overall deadline
        chunk = resp.read1(_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > policy.max_bytes:
            raise InputTooLargeError(f"image_url body is more than the limit of {policy.max_bytes} bytes")
        chunks.append(chunk)
    deadline.remaining()
    return b"".join(chunks)


# --------------------------------------------------------------------------------------------- public entry


def fetch_url(url: str, policy: FetchPolicy = FetchPolicy(), *, resolver: Resolver | None = None) -> bytes:
    """Download ``url`` under ``policy`` and return the body bytes; see the module docstring for the guarantees."""
    resolve = resolver or _default_resolver
    deadline = _Deadline(policy.timeout)
    target = _parse_target(url)
    redirects = 0
    while True:
        addresses = _addresses(target, policy, resolve)
        resp: urllib3.BaseHTTPResponse | None = None
        try:
            resp = _request(target, addresses, deadline)
            status = resp.status
            if status in _REDIRECT_STATUSES:
                location = resp.headers.get("Location")
                if not location:
                    raise UrlFetchError(f"image_url answered with redirect {status} but no Location header")
                if redirects >= policy.max_redirects:
                    raise UrlFetchError(f"image_url followed too many redirects (more than {policy.max_redirects})")
                redirects += 1
                target = _parse_target(urljoin(target.url, location.strip()))
                continue
            if not 200 <= status < 300:
                raise UrlFetchError(f"image_url answered with HTTP status {status}")
            return _read_body(resp, policy, deadline)
        except (UrlFetchError, InputTooLargeError):
            raise
        except (Urllib3TimeoutError, TimeoutError) as exc:
            raise deadline.error() from exc
        except (SSLError, ssl.SSLError) as exc:
            raise UrlFetchError(f"TLS verification failed for image_url host {target.host!r}") from exc
        except (Urllib3HTTPError, OSError, ValueError) as exc:
            if time.monotonic() >= deadline.end:
                raise deadline.error() from exc
            raise UrlFetchError(f"fetching image_url from host {target.host!r} failed: {_reason(exc)}") from exc
        finally:
            if resp is not None:
                resp.close()
                conn_pool = getattr(resp, "_pool", None)
                if conn_pool is not None:
                    conn_pool.close()
