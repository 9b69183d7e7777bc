"""Domain availability: RDAP where the registry has it, WHOIS (TCP port 43) otherwise.

Names in, one :class:`Availability` per name out. A lookup that fails (timeout, refused
connection, an answer we cannot read) is ``available=None`` with an ``error`` for that name:
one registry's trouble never fails the whole request. A name that is not a domain name is
the client's mistake and fails the request (:class:`InvalidDomains`, a 400), as the
storefront's own route and page do.

Where to ask is a table of registry suffixes (``com``, ``co.zw``): the built-in tables below,
overridden per suffix by ``WHOIS_RDAP_SERVERS`` and ``WHOIS_SERVERS``. A name is looked up
only when it is exactly one label under a known suffix: ``www.example.com`` is not
registrable, and a registry answers "not found" for it, which must not read as "available".
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import logging
import os
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx
import idna
from redis.asyncio import Redis
from redis.exceptions import RedisError

from slyker.services.errors import InvalidInput
from slyker.settings import Settings

log = logging.getLogger(__name__)

# IANA's RDAP bootstrap registry (https://data.iana.org/rdap/dns.json), the TLDs we sell
# and their neighbours; the registry's own base URL, so no bootstrap redirect is involved.
DEFAULT_RDAP_SERVERS: dict[str, str] = {
    "com": "https://rdap.verisign.com/com/v1/",
    "net": "https://rdap.verisign.com/net/v1/",
    "org": "https://rdap.publicinterestregistry.org/rdap/",
    "info": "https://rdap.identitydigital.services/rdap/",
    "app": "https://pubapi.registry.google/rdap/",
    "dev": "https://pubapi.registry.google/rdap/",
    "xyz": "https://rdap.centralnic.com/xyz/",
    "online": "https://rdap.radix.host/rdap/",
    "site": "https://rdap.radix.host/rdap/",
    "store": "https://rdap.radix.host/rdap/",
    "tech": "https://rdap.radix.host/rdap/",
    **{
        suffix: "https://rdap.nominet.uk/uk/"
        for suffix in ("uk", "co.uk", "org.uk", "me.uk", "net.uk", "ltd.uk", "plc.uk")
    },
}
# Registries without RDAP, from the storefront's dist.whois.json. .zw has no WHOIS server in
# IANA's database; ZISPA answers for .co.zw on a web page (the name is appended to the URL).
DEFAULT_WHOIS_SERVERS: dict[str, str] = {
    "co.zw": "https://zispa.org.zw/cgi-bin/domain_lookup.pl?s=",
    "io": "whois.nic.io:43",
    "me": "whois.nic.me:43",
    "co": "whois.nic.co:43",
}
# What registries answer for a name nobody holds (dist.whois.json's "available" strings,
# lower case, whitespace collapsed); "{domain}" stands for the name asked about.
AVAILABLE_PHRASES = (
    "no match",  # Verisign, Nominet, .no, .to: "No match for", "No match!!"
    "not found",  # "Domain not found", "NOT FOUND", "DOMAIN NOT FOUND"
    "no entries found",
    "no data found",
    "no object found",
    "no matching record",
    "nothing found",
    "no data was found",
    "no such domain",
    "no information available",
    "no information was found",
    "the queried object does not exist",
    "we do not have an entry in our database",
    "has not been registered",
    "available for registration",  # ZISPA (.co.zw), Uniregistry
    "status: free",
    "status: available",
    "{domain} is free",
)
MAX_INPUT_CHARS = 300  # before any IDNA work: 253 octets plus room for Unicode input
MAX_NAME_OCTETS = 253
MAX_ANSWER_BYTES = 256 * 1024  # a WHOIS record is a few KiB; anything larger is not one
CACHE_PREFIX = "slyker:whois:v1:"
MEMORY_CACHE_ENTRIES = 10_000
USER_AGENT = "slyker-domain-check/1.0"
REQUEST_HEADERS = {
    "Accept": "application/rdap+json, application/json;q=0.9, */*;q=0.1",
    "Accept-Encoding": "identity",  # the size limit then holds for what we decode, too
    "User-Agent": USER_AGENT,
}

_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TAG_RE = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)


class Lookup(StrEnum):
    RDAP = "rdap"
    WHOIS = "whois"  # TCP port 43 (RFC 3912)
    WEB = "web"  # a registry's web page: GET <url><name>, read like a WHOIS answer


@dataclass(frozen=True)
class Registry:
    """Where names under ``suffix`` are looked up."""

    suffix: str
    lookup: Lookup
    address: str  # RDAP base URL (ends in /), host:port, or a URL the name is appended to

    @property
    def server(self) -> str:
        """The name shown as ``whoisServer``: the host (and a port other than 43)."""
        if self.lookup is Lookup.WHOIS:
            return self.address.removesuffix(":43")
        return urlsplit(self.address).netloc

    @property
    def cache_key(self) -> str:
        return f"{self.lookup}:{self.address}"


def registries_from_settings(settings: Settings) -> dict[str, Registry]:
    """The built-in tables with the settings' entries over them: a suffix given in a setting
    replaces the built-in entry whatever its kind (RDAP wins when both settings name it);
    an empty value (``com=``) removes that setting's kind of entry for the suffix."""
    table = {s: Registry(s, Lookup.RDAP, url) for s, url in DEFAULT_RDAP_SERVERS.items()}
    table |= {s: _whois_registry(s, server) for s, server in DEFAULT_WHOIS_SERVERS.items()}
    for suffix, server in settings.billing.whois_servers.items():
        if server:
            table[suffix] = _whois_registry(suffix, server)
        elif suffix in table and table[suffix].lookup is not Lookup.RDAP:
            del table[suffix]
    for suffix, url in settings.billing.whois_rdap_servers.items():
        if url:
            table[suffix] = Registry(suffix, Lookup.RDAP, url)
        elif suffix in table and table[suffix].lookup is Lookup.RDAP:
            del table[suffix]
    return table


def _whois_registry(suffix: str, server: str) -> Registry:
    kind = Lookup.WEB if "://" in server else Lookup.WHOIS
    return Registry(suffix, kind, server)


# --- names ---------------------------------------------------------------------------------


class InvalidDomain(ValueError):
    """Not a domain name; the message says why."""


class InvalidDomains(InvalidInput):
    """The request names something that is not a domain name: a 400 listing every one
    (``errors`` keyed ``domains.<index>`` like the schema's own validation errors)."""

    def __init__(self, problems: Mapping[int, str]) -> None:
        index, message = next(iter(problems.items()))
        super().__init__(f"domains.{index}", message, code="invalid_domain")
        self.errors = {f"domains.{i}": [text] for i, text in problems.items()}


def normalise_domain(raw: str) -> str:
    """The ASCII (punycode) form of a domain name: lower case, one trailing dot dropped,
    Unicode names through IDNA 2008 (UTS #46 mapping); InvalidDomain if it is not one."""
    if len(raw) > MAX_INPUT_CHARS:
        raise InvalidDomain(f"longer than {MAX_NAME_OCTETS} characters")
    if _CONTROL_RE.search(raw):
        raise InvalidDomain("contains control characters")
    name = raw.strip(" ")
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise InvalidDomain("empty")
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError) as error:
            raise InvalidDomain(f"not a valid internationalised name ({error})") from None
    name = name.lower()
    if len(name) > MAX_NAME_OCTETS:
        raise InvalidDomain(f"longer than {MAX_NAME_OCTETS} characters")
    labels = name.split(".")
    if len(labels) < 2:
        raise InvalidDomain("needs a name and an extension, e.g. example.com")
    for label in labels:
        _check_label(label)
    if labels[-1].isdigit():
        raise InvalidDomain("the extension cannot be a number (an IP address is not a domain)")
    return name


def _check_label(label: str) -> None:
    if not label:
        raise InvalidDomain("has an empty label (two dots in a row, or a leading dot)")
    if len(label) > 63:
        raise InvalidDomain("has a label longer than 63 characters")
    if not _LABEL_RE.fullmatch(label):
        raise InvalidDomain("labels may only hold letters, digits and inner hyphens (a-z, 0-9, -)")
    if label[2:4] == "--":  # reserved for encodings: only punycode (xn--) is a name
        if not label.startswith("xn--"):
            raise InvalidDomain(f"{label!r} has '--' in the third and fourth position")
        try:
            idna.decode(label)
        except (idna.IDNAError, UnicodeError, ValueError):
            raise InvalidDomain(f"{label!r} is not valid punycode") from None


def normalise_domains(names: Sequence[str], max_domains: int) -> list[str]:
    if not names:
        raise InvalidInput("domains", "Give at least one domain name.")
    if len(names) > max_domains:
        raise InvalidInput("domains", f"At most {max_domains} domains per request.")
    normalised, problems = [], {}
    for index, raw in enumerate(names):
        try:
            normalised.append(normalise_domain(raw))
        except InvalidDomain as error:
            shown = ascii(raw[:80]) + ("..." if len(raw) > 80 else "")
            problems[index] = f"{shown} is not a valid domain name: {error}"
    if problems:
        raise InvalidDomains(problems)
    return normalised


def find_registry(domain: str, registries: Mapping[str, Registry]) -> Registry | None:
    """The registry of the longest known suffix of ``domain`` (``co.zw`` before ``zw``)."""
    labels = domain.split(".")
    for start in range(1, len(labels)):
        registry = registries.get(".".join(labels[start:]))
        if registry is not None:
            return registry
    return None


# --- results -------------------------------------------------------------------------------


@dataclass
class Availability:
    """One name's answer, shaped as the storefront's ``DomainSearchResult``."""

    domain: str
    tld: str
    available: bool | None
    whois_server: str
    message: str | None = None
    error: str | None = None
    cached: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "available": self.available,
            "tld": self.tld,
            "whoisServer": self.whois_server,
            "message": self.message,
            "error": self.error,
            "cached": self.cached,
        }


def _answer(domain: str, registry: Registry, available: bool, cached: bool) -> Availability:
    message = f"{domain} is available." if available else f"{domain} is already registered."
    return Availability(domain, registry.suffix, available, registry.server, message, None, cached)


def _failure(domain: str, tld: str, server: str, error: str) -> Availability:
    return Availability(domain, tld, None, server, None, error)


class LookupFailed(Exception):
    """The registry did not give an answer we can read; the message is shown to the user."""


# --- cache ---------------------------------------------------------------------------------


class AnswerCache(Protocol):
    async def get(self, key: str) -> bool | None: ...

    async def set(self, key: str, available: bool, seconds: int) -> None: ...


@dataclass
class MemoryCache:
    """In-process TTL cache (one per app: without Redis every worker keeps its own)."""

    max_entries: int = MEMORY_CACHE_ENTRIES
    entries: OrderedDict[str, tuple[float, bool]] = field(default_factory=OrderedDict)

    async def get(self, key: str) -> bool | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        expires, available = entry
        if expires <= time.monotonic():
            del self.entries[key]
            return None
        return available

    async def set(self, key: str, available: bool, seconds: int) -> None:
        self.entries.pop(key, None)
        self.entries[key] = (time.monotonic() + seconds, available)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)  # the oldest entry


@dataclass
class RedisCache:
    """Shared by every worker; a Redis failure costs only the cache, never the lookup."""

    redis: Redis

    async def get(self, key: str) -> bool | None:
        try:
            value = await self.redis.get(key)
        except (RedisError, OSError) as error:
            log.warning("Domain check cache read failed: %r", error)
            return None
        if value not in (b"1", b"0"):
            return None
        return value == b"1"

    async def set(self, key: str, available: bool, seconds: int) -> None:
        try:
            await self.redis.set(key, b"1" if available else b"0", ex=seconds)
        except (RedisError, OSError) as error:
            log.warning("Domain check cache write failed: %r", error)


def cache_key(registry: Registry, domain: str) -> str:
    # The registry is part of the key: another server (a changed setting) asks afresh.
    where = hashlib.sha256(registry.cache_key.encode()).hexdigest()[:16]
    return f"{CACHE_PREFIX}{where}:{domain}"


# --- the check -----------------------------------------------------------------------------


HTTP_CLIENT_KEY = "slyker.registry_http"  # the app's client (slyker.outbound)
# RDAP and lookup-page connections per worker, all requests together (each request is also
# held to its own WHOIS_MAX_PARALLEL); idle ones are kept for the next search.
MAX_CONNECTIONS = 50
MAX_IDLE_CONNECTIONS = 20


def new_http_client(settings: Settings) -> httpx.AsyncClient:
    """The client an app keeps for all its RDAP and lookup-page requests
    (``slyker.outbound``): pooled connections, ``WHOIS_TIMEOUT`` for each step."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.billing.whois_timeout),
        limits=httpx.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_IDLE_CONNECTIONS
        ),
        headers=REQUEST_HEADERS,
        follow_redirects=False,
        trust_env=False,  # registries directly, as the WHOIS lookups do
    )


@dataclass
class DomainChecker:
    registries: Mapping[str, Registry]
    timeout: float
    max_parallel: int
    max_domains: int
    cache: AnswerCache
    cache_seconds: int
    client: httpx.AsyncClient  # the app's (new_http_client)

    @classmethod
    def from_settings(
        cls, settings: Settings, cache: AnswerCache, client: httpx.AsyncClient
    ) -> DomainChecker:
        return cls(
            registries=registries_from_settings(settings),
            timeout=settings.billing.whois_timeout,
            max_parallel=settings.billing.whois_max_parallel,
            max_domains=settings.billing.whois_max_domains,
            cache=cache,
            cache_seconds=settings.billing.whois_cache_seconds,
            client=client,
        )

    async def check(
        self, names: Sequence[str], *, max_workers: int | None = None, parallel: bool = True
    ) -> list[Availability]:
        """One result per name, in order (a repeated name is looked up once). At most
        ``min(max_workers, WHOIS_MAX_PARALLEL)`` lookups run at once (one without
        ``parallel``), each bounded by WHOIS_TIMEOUT."""
        domains = normalise_domains(names, self.max_domains)
        workers = min(max_workers or self.max_parallel, self.max_parallel) if parallel else 1
        unique = list(dict.fromkeys(domains))
        slots = asyncio.Semaphore(workers)
        answers = await asyncio.gather(*(self._one(d, self.client, slots) for d in unique))
        by_domain = dict(zip(unique, answers, strict=True))
        return [by_domain[domain] for domain in domains]

    async def _one(
        self, domain: str, client: httpx.AsyncClient, slots: asyncio.Semaphore
    ) -> Availability:
        registry = find_registry(domain, self.registries)
        if registry is None:
            extension = domain.split(".", 1)[1]
            return _failure(domain, extension, "", f"No availability lookup for .{extension}.")
        if domain.count(".") != registry.suffix.count(".") + 1:
            registrable = ".".join(domain.split(".")[-registry.suffix.count(".") - 2 :])
            error = f"{domain} is not a registrable name; check {registrable} instead."
            return _failure(domain, registry.suffix, registry.server, error)
        key = cache_key(registry, domain)
        if self.cache_seconds:
            cached = await self.cache.get(key)
            if cached is not None:
                return _answer(domain, registry, cached, cached=True)
        async with slots:
            try:
                async with asyncio.timeout(self.timeout):
                    available = await self._ask(registry, domain, client)
            except LookupFailed as error:
                return self._failed(domain, registry, str(error))
            except (TimeoutError, httpx.TimeoutException):
                return self._failed(domain, registry, f"timed out after {self.timeout:g} s")
            except httpx.HTTPError as error:
                return self._failed(domain, registry, _describe_http_error(error))
            except OSError as error:
                return self._failed(domain, registry, _describe_os_error(error))
            except Exception:
                log.exception("Domain check of %s at %s failed", domain, registry.server)
                return self._failed(domain, registry, "the lookup failed")
        if self.cache_seconds:
            await self.cache.set(key, available, self.cache_seconds)
        return _answer(domain, registry, available, cached=False)

    def _failed(self, domain: str, registry: Registry, reason: str) -> Availability:
        log.warning("Domain check of %s at %s: %s", domain, registry.server, reason)
        error = f"Could not check {domain} at {registry.server}: {reason}."
        return _failure(domain, registry.suffix, registry.server, error)

    async def _ask(self, registry: Registry, domain: str, client: httpx.AsyncClient) -> bool:
        if registry.lookup is Lookup.RDAP:
            return await rdap_available(client, registry.address, domain)
        if registry.lookup is Lookup.WEB:
            return await web_available(client, registry.address, domain)
        host, _, port = registry.address.rpartition(":")
        return await whois_available(host.strip("[]"), int(port), domain)


def _describe_http_error(error: httpx.HTTPError) -> str:
    """The socket error under httpx's and anyio's wrappers (those have no errno)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and (cause.errno or isinstance(cause, socket.gaierror)):
            return _describe_os_error(cause)
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, httpx.ConnectError):
        return "could not connect"
    return f"the connection failed ({type(error).__name__})"


def _describe_os_error(error: OSError) -> str:
    if isinstance(error, socket.gaierror):
        return "the server's name does not resolve"
    reason = os.strerror(error.errno) if error.errno else type(error).__name__
    return f"could not connect ({reason})"


# --- protocols -----------------------------------------------------------------------------


async def _read_limited(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise LookupFailed(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
    return bytes(body)


def _is_json(response: httpx.Response) -> bool:
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    return content_type in ("application/rdap+json", "application/json")


async def rdap_available(client: httpx.AsyncClient, base_url: str, domain: str) -> bool:
    """RFC 9082 domain query: 404 = nobody holds the name, 200 = a domain object (RFC 9083)."""
    async with client.stream("GET", f"{base_url}domain/{domain}") as response:
        body = await _read_limited(response)
    if response.status_code == 404:
        # A web server's HTML 404 page (a wrong base URL) must not read as "available".
        if body.strip() and not _is_json(response):
            raise LookupFailed("HTTP 404 without an RDAP answer")
        return True
    if response.status_code != 200:
        raise LookupFailed(f"the RDAP server answered HTTP {response.status_code}")
    try:
        record = json.loads(body)
    except ValueError:
        raise LookupFailed("the RDAP answer is not JSON") from None
    if not isinstance(record, dict) or record.get("objectClassName") != "domain":
        raise LookupFailed("the RDAP answer is not a domain object")
    name = record.get("ldhName")
    if name is not None and (not isinstance(name, str) or name.lower().rstrip(".") != domain):
        raise LookupFailed("the RDAP answer is about another name")
    return False


async def whois_available(host: str, port: int, domain: str) -> bool:
    """RFC 3912: send the name and CRLF, read the answer until the server closes."""
    reader, writer = await asyncio.open_connection(host, port, limit=MAX_ANSWER_BYTES)
    try:
        writer.write(domain.encode("ascii") + b"\r\n")
        await writer.drain()
        answer = bytearray()
        while chunk := await reader.read(65536):
            answer += chunk
            if len(answer) > MAX_ANSWER_BYTES:
                raise LookupFailed(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
    finally:
        writer.close()
    return read_answer(answer.decode("utf-8", errors="replace"), domain)


async def web_available(client: httpx.AsyncClient, url: str, domain: str) -> bool:
    """A registry's lookup page (ZISPA for .co.zw): its text read like a WHOIS answer."""
    async with client.stream("GET", url + quote(domain)) as response:
        body = await _read_limited(response)
    if response.status_code != 200:
        raise LookupFailed(f"the lookup page answered HTTP {response.status_code}")
    text = html.unescape(_TAG_RE.sub(" ", body.decode("utf-8", errors="replace")))
    return read_answer(text, domain)


def read_answer(answer: str, domain: str) -> bool:
    """True for a "no match" answer, False for a record of the name; anything else (empty,
    a rate-limit notice, noise) is not an answer."""
    text = " ".join(answer.split()).lower()
    if not text:
        raise LookupFailed("the answer was empty")
    if any(phrase.format(domain=domain) in text for phrase in AVAILABLE_PHRASES):
        return True
    # A record names the domain ("Domain Name: EXAMPLE.COM"), not a longer name around it.
    if re.search(rf"(?<![a-z0-9.-]){re.escape(domain)}(?!\.?[a-z0-9-])", text):
        return False
    raise LookupFailed("the answer could not be read")
