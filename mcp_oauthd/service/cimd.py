"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document).

A client may use an ``https://`` URL with a path as its ``client_id``; this server then
fetches that URL and reads the client's metadata from the JSON document there. Fetching
attacker-chosen URLs from inside a network is a server-side request forgery hazard, so:

- **SSRF guard at connect time.** Host names are resolved by ``GuardedResolver``, which
  refuses the answer when *any* resolved address is private, loopback, link-local,
  multicast, reserved, unspecified, CGNAT, a cloud metadata service, or embeds such an
  IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64). aiohttp asks the resolver on every new
  connection (its DNS cache is off), so a DNS answer that changes between a check and the
  connection (rebinding) cannot slip through: the addresses checked are the addresses
  connected to. IP literals never reach a resolver in aiohttp; ``check_literal_host``
  applies the same rule to them before the request.
- **No redirects**, **https only**, **TLS verified** (plus an optional extra CA file),
  **no proxy from the environment**, **no cookies**.
- **Size cap** (5 KB default), read incrementally so a huge or endless body costs no more
  than the cap; **connect and total timeouts**; **JSON only** (by content type).
- The document's ``client_id`` must equal the URL byte for byte; ``client_name`` and
  ``redirect_uris`` are required; the metadata rules are ``oauth.registration``'s.
- **Cache** per ``Cache-Control: max-age`` / ``Expires`` clamped to configured bounds;
  failures are cached briefly (so a bad URL is not refetched on every request); concurrent
  requests for one URL share one fetch; the cache is an LRU of bounded size; fetches in
  flight are bounded too.
- An optional allowlist of document hosts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from mcp_oauthd import __version__
from mcp_oauthd.clock import Clock
from mcp_oauthd.config.models import CimdConfig
from mcp_oauthd.oauth.errors import (
    InvalidClientMetadata,
    InvalidRedirectUri,
    OAuthError,
    TemporarilyUnavailable,
)
from mcp_oauthd.oauth.redirects import RedirectPolicy
from mcp_oauthd.oauth.registration import parse_client_metadata
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.storage.base import ClientKind, ClientRecord

MAX_URL_LENGTH = 512
USER_AGENT = f"mcp-oauthd/{__version__} (client metadata fetcher)"
_IP = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges refused on top of what ``ipaddress`` already calls private / reserved / etc.
_BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "100.64.0.0/10",  # CGNAT (RFC 6598); Alibaba's metadata service 100.100.100.200
        "169.254.0.0/16",  # link-local; AWS/GCP/Azure/OpenStack metadata 169.254.169.254
        "192.0.0.0/24",  # IETF protocol assignments; Oracle Cloud metadata 192.0.0.192
        "198.18.0.0/15",  # benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255
        "168.63.129.16/32",  # Azure's host-internal "wire server"
        "::/128",
        "::1/128",
        "::ffff:0:0/96",  # IPv4-mapped (checked through the embedded address too)
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local; AWS metadata fd00:ec2::254
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class CimdError(OAuthError):
    """A client metadata document cannot be used. Shown to the user / client as is, so
    descriptions name what is wrong with the document, never an internal detail."""

    error = "invalid_client"
    status = 400


class AddressRefused(OSError):
    """The SSRF guard refused to connect to an address."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def is_forbidden_address(ip: _IP, *, allow_loopback: bool = False) -> bool:
    """True when a fetch must never connect to ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return True  # zone-scoped addresses are link-local by definition
        embedded = _embedded_ipv4(ip)
        if any(is_forbidden_address(v4, allow_loopback=allow_loopback) for v4 in embedded):
            return True
        if allow_loopback and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback:
            return False
    if ip.is_loopback:
        return not allow_loopback
    if (
        ip.is_private
        or ip.is_reserved
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or not ip.is_global
    ):
        return True
    return any(ip in net for net in _BLOCKED_NETWORKS if net.version == ip.version)


def check_address(address: str, *, allow_loopback: bool = False) -> None:
    """Raise ``AddressRefused`` unless ``address`` (an IP literal) may be connected to."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise AddressRefused(f"{address!r} is not an IP address") from None
    if is_forbidden_address(ip, allow_loopback=allow_loopback):
        raise AddressRefused("the address is private, local or reserved")


def looks_like_ip_literal(host: str) -> bool:
    """aiohttp's own test for "do not resolve, connect to this literal" (helpers.py)."""
    return ":" in host or host.replace(".", "").isdigit()


def check_literal_host(host: str, *, allow_loopback: bool = False) -> None:
    """The guard for IP-literal hosts, which aiohttp connects to without a resolver."""
    if looks_like_ip_literal(host):
        check_address(host.strip("[]"), allow_loopback=allow_loopback)


class GuardedResolver(AbstractResolver):
    """Resolves through ``inner`` and refuses the answer if any address is forbidden."""

    def __init__(
        self, inner: AbstractResolver | None = None, *, allow_loopback: bool = False
    ) -> None:
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()
        self._allow_loopback = allow_loopback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not results:
            raise OSError(f"{host} did not resolve")
        for result in results:
            # Every address, not just the first: the connector may try any of them.
            check_address(result["host"], allow_loopback=self._allow_loopback)
        return results

    async def close(self) -> None:
        await self._inner.close()


def validate_client_id_url(url: str) -> str:
    """The host of a client id URL, or ``CimdError`` (CIMD §3: https, with a path)."""
    if len(url) > MAX_URL_LENGTH:
        raise CimdError(f"a client id URL must be at most {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(ch.isspace() or ord(ch) < 0x20 for ch in url) or "\\" in url:
        raise CimdError("the client id URL contains invalid characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise CimdError("the client id is not a valid URL") from None
    if parts.scheme != "https" or not parts.hostname:
        raise CimdError("a client id URL must be an absolute https URL")
    if parts.fragment or "#" in url:
        raise CimdError("a client id URL must not contain a fragment")
    if parts.username is not None or "@" in parts.netloc:
        raise CimdError("a client id URL must not contain user information")
    if parts.path in ("", "/"):
        raise CimdError("a client id URL must have a path")
    segments = parts.path.split("/")
    if any(s.lower() in (".", "..", "%2e", "%2e%2e") for s in segments):
        raise CimdError("a client id URL must not contain dot segments")
    return parts.hostname


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in allowed:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


def cache_lifetime(headers: Any, now: float, config: CimdConfig) -> float:
    """Seconds to cache a document, from its response headers, within the bounds."""
    ttl: float = config.default_cache_ttl
    cache_control = headers.get("Cache-Control", "")
    directives = {
        d.strip().split("=", 1)[0].lower(): (d.split("=", 1)[1].strip('" ') if "=" in d else "")
        for d in cache_control.split(",")
        if d.strip()
    }
    if "no-store" in directives or "no-cache" in directives:
        ttl = 0
    elif "max-age" in directives:
        try:
            ttl = max(0, int(directives["max-age"]))
        except ValueError:
            ttl = 0
    elif "Expires" in headers:
        try:
            expires = parsedate_to_datetime(headers["Expires"]).timestamp()
            base = now
            if "Date" in headers:
                base = parsedate_to_datetime(headers["Date"]).timestamp()
            ttl = max(0.0, expires - base)
        except (TypeError, ValueError, IndexError, OverflowError):
            ttl = 0  # RFC 9111 §5.3: an invalid Expires means "already expired"
    return min(max(ttl, config.min_cache_ttl), config.max_cache_ttl)


@dataclass(frozen=True)
class _Entry:
    expires_at: float
    client: ClientRecord | None = None
    error: CimdError | None = None


class CimdFetcher:
    """Resolves an ``https://`` client id to a ``ClientRecord`` (kind ``cimd``)."""

    def __init__(
        self,
        config: CimdConfig,
        *,
        policy: RedirectPolicy,
        known_scopes: Iterable[str],
        clock: Clock,
        auditor: Auditor | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.config = config
        self._policy = policy
        self._known_scopes = frozenset(known_scopes)
        self._clock = clock
        self._auditor = auditor
        self._allow_loopback = config.allow_loopback_for_tests
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[_Entry]] = {}
        self._slots = asyncio.Semaphore(config.max_concurrent_fetches)
        self.fetches = 0  # documents actually requested over the network (for tests)

    # ------------------------------------------------------------------ lifecycle
    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.config.ca_file is not None:
            context.load_verify_locations(cafile=str(self.config.ca_file))
        return context

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self._resolver, allow_loopback=self._allow_loopback),
                # Resolve (and so check) again for every connection: no DNS cache, no
                # kept-alive connections to a host whose name may now point elsewhere.
                use_dns_cache=False,
                force_close=True,
                ssl=self._ssl_context(),
                limit=self.config.max_concurrent_fetches,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,  # never an environment proxy: it would do the connecting
                cookie_jar=aiohttp.DummyCookieJar(),
                # No decompression: a small compressed body could inflate far past the cap
                # before it is read; we ask for identity and refuse anything else.
                auto_decompress=False,
                headers={
                    "User-Agent": USER_AGENT,
                    "Accept": "application/json",
                    "Accept-Encoding": "identity",
                },
            )
        return self._session

    async def close(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ public API
    async def get(self, client_id: str) -> ClientRecord:
        """The client a metadata document describes; ``CimdError`` when it cannot be used."""
        host = validate_client_id_url(client_id)
        if self.config.allowed_hosts and not host_allowed(host, self.config.allowed_hosts):
            raise CimdError(
                f"client metadata documents from {host} are not accepted by this server"
            )
        now = self._clock.now()
        entry = self._cache.get(client_id)
        if entry is not None and entry.expires_at > now:
            self._cache.move_to_end(client_id)
            return self._unwrap(entry)
        task = self._inflight.get(client_id)
        if task is None:
            if len(self._inflight) >= 4 * self.config.max_concurrent_fetches:
                # Distinct URLs queue at most this deep; a flood of them is not remembered.
                raise TemporarilyUnavailable(
                    "too many client metadata documents are being fetched; try again",
                    retry_after=2,
                )
            task = asyncio.create_task(self._load(client_id, host))
            self._inflight[client_id] = task
            task.add_done_callback(partial(self._forget, client_id))
        # Shielded: a caller that gives up (client disconnect) does not cancel the fetch
        # the other callers wait for.
        return self._unwrap(await asyncio.shield(task))

    def _forget(self, url: str, task: asyncio.Task[_Entry]) -> None:
        if self._inflight.get(url) is task:
            del self._inflight[url]

    @staticmethod
    def _unwrap(entry: _Entry) -> ClientRecord:
        if entry.error is not None:
            raise CimdError(entry.error.description)
        assert entry.client is not None
        return entry.client

    def _remember(self, url: str, entry: _Entry) -> None:
        self._cache[url] = entry
        self._cache.move_to_end(url)
        while len(self._cache) > self.config.max_cache_entries:
            self._cache.popitem(last=False)

    async def _load(self, url: str, host: str) -> _Entry:
        try:
            client, ttl = await self._fetch(url, host)
        except CimdError as exc:
            if self._auditor is not None:
                self._auditor.emit("cimd.refused", client_id=url, host=host, reason=exc.description)
            entry = _Entry(self._clock.now() + self.config.error_cache_ttl, error=exc)
        else:
            if self._auditor is not None:
                self._auditor.emit("cimd.fetched", client_id=url, host=host, cache_ttl=ttl)
            entry = _Entry(self._clock.now() + ttl, client=client)
        self._remember(url, entry)
        return entry

    # ------------------------------------------------------------------ the fetch
    async def _fetch(self, url: str, host: str) -> tuple[ClientRecord, float]:
        try:
            check_literal_host(host, allow_loopback=self._allow_loopback)
        except AddressRefused:
            raise CimdError(_REFUSED_ADDRESS) from None
        try:
            async with asyncio.timeout(self.config.timeout):
                async with self._slots:
                    self.fetches += 1
                    return await self._request(url)
        except TimeoutError:
            raise CimdError(
                f"fetching the client metadata document from {host} timed out"
            ) from None
        except aiohttp.ClientError as exc:
            raise CimdError(_describe_client_error(exc, host)) from None

    async def _request(self, url: str) -> tuple[ClientRecord, float]:
        timeout = aiohttp.ClientTimeout(
            total=self.config.timeout,
            connect=self.config.connect_timeout,
            sock_connect=self.config.connect_timeout,
        )
        session = self._get_session()
        async with session.get(
            URL(url, encoded=True), allow_redirects=False, timeout=timeout
        ) as resp:
            if 300 <= resp.status < 400:
                raise CimdError(
                    "the client metadata document URL redirects; redirects are not followed"
                )
            if resp.status != 200:
                raise CimdError(
                    f"the client metadata document could not be fetched (HTTP {resp.status})"
                )
            if resp.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
                raise CimdError("the client metadata document must not be compressed")
            content_type = resp.content_type.lower()
            if content_type != "application/json" and not content_type.endswith("+json"):
                raise CimdError("the client metadata document is not JSON (wrong content type)")
            limit = self.config.max_bytes
            if resp.content_length is not None and resp.content_length > limit:
                raise CimdError(_too_large(limit))
            body = bytearray()
            async for chunk in resp.content.iter_chunked(1024):
                body += chunk
                if len(body) > limit:
                    raise CimdError(_too_large(limit))
            ttl = cache_lifetime(resp.headers, self._clock.now(), self.config)
        return self._client_from(url, bytes(body)), ttl

    def _client_from(self, url: str, body: bytes) -> ClientRecord:
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise CimdError("the client metadata document is not valid JSON") from None
        if not isinstance(document, dict):
            raise CimdError("the client metadata document is not a JSON object")
        # CIMD §4.1: the client_id in the document MUST match the URL exactly.
        if document.get("client_id") != url:
            raise CimdError("the client_id in the client metadata document does not match its URL")
        try:
            meta = parse_client_metadata(
                document, policy=self._policy, known_scopes=self._known_scopes, document=True
            )
        except (InvalidClientMetadata, InvalidRedirectUri) as exc:
            raise CimdError(
                f"the client metadata document is invalid: {exc.description or exc.error}"
            ) from None
        host = urlsplit(url).hostname or ""
        return ClientRecord(
            client_id=url,
            client_name=meta.client_name,
            kind=ClientKind.CIMD,
            redirect_uris=meta.redirect_uris,
            grant_types=meta.grant_types,
            response_types=meta.response_types,
            token_endpoint_auth_method="none",
            scope=meta.scope,
            application_type=meta.application_type,
            created_at=self._clock.now(),
            metadata={**meta.extra, "document_host": host},
        )


_REFUSED_ADDRESS = (
    "the client metadata document host is a private, local or reserved address, "
    "which this server does not connect to"
)


def _too_large(limit: int) -> str:
    return f"the client metadata document is larger than {limit} bytes"


def _describe_client_error(exc: aiohttp.ClientError, host: str) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, AddressRefused):
            return _REFUSED_ADDRESS
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return f"the TLS certificate of {host} could not be verified"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"the host {host} of the client metadata document could not be resolved"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"could not connect to {host} to fetch the client metadata document"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the client metadata document response was malformed"
    return f"fetching the client metadata document from {host} failed"
