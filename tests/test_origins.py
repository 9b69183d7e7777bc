"""The one origin policy (slyker/origins.py): what is allowed, what is refused, and why."""

from __future__ import annotations

from typing import Any

import pytest

from slyker.origins import (
    MAX_ORIGIN_BYTES,
    InvalidOrigin,
    Origin,
    OriginPolicy,
    canonicalise_entry,
    parse_origin,
)
from slyker.settings import SettingsError, load_settings

SECRET_KEY = "origins-test-secret-key-0123456789abcdef"
ALLOWED_ORIGINS = "https://slykertech.co.zw,https://www.slykertech.co.zw,http://localhost:3000"
PREVIEW_REGEX = r"https://pr-[0-9]+\.preview\.slykertech\.co\.zw"


def policy_from(**overrides: Any) -> OriginPolicy:
    """A policy built the way the app builds it: from validated settings."""
    return load_settings(
        environ={}, overrides={"SECRET_KEY": SECRET_KEY, **overrides}
    ).origin_policy


POLICY = policy_from(
    CORS_ALLOWED_ORIGINS=ALLOWED_ORIGINS, CORS_ALLOWED_ORIGIN_REGEXES=PREVIEW_REGEX
)
# "*" without credentials: allows every well-formed origin, so whatever it still refuses is
# refused for being malformed, not for being unknown.
WILDCARD_POLICY = policy_from(CORS_ALLOWED_ORIGINS="*", CORS_ALLOW_CREDENTIALS=False)

OVERLONG = "https://" + "slykertech." * 23 + "co.zw"  # > 256 bytes, every label valid
assert len(OVERLONG) > MAX_ORIGIN_BYTES


def _case(value: str | bytes | None, kind: str, case_id: str) -> Any:
    return pytest.param(value, kind, id=case_id)


# kind "foreign": one well-formed origin, just not an allowed one.
# kind "malformed": not one serialised http(s) origin at all.
BAD_ORIGINS = [
    # suffix and prefix tricks
    _case("https://evil-slykertech.co.zw", "foreign", "prefix-hyphen"),
    _case("https://evilslykertech.co.zw", "foreign", "prefix-glued"),
    _case("https://slykertechevil.co.zw", "foreign", "suffix-glued"),
    _case("https://slykertech.co.zw.evil.com", "foreign", "suffix-domain"),
    _case("https://slykertech.co", "foreign", "truncated-domain"),
    _case("https://api.slykertech.co.zw", "foreign", "unlisted-subdomain"),
    _case("https://www.slykertech.co.zw.evil.com", "foreign", "www-suffix-domain"),
    # userinfo
    _case("https://slykertech.co.zw@evil.com", "malformed", "userinfo-host-is-evil"),
    _case("https://user:pw@slykertech.co.zw", "malformed", "userinfo-credentials"),
    _case("https://@slykertech.co.zw", "malformed", "userinfo-empty"),
    # path, query and fragment tails
    _case("https://slykertech.co.zw/", "malformed", "tail-trailing-slash"),
    _case("https://slykertech.co.zw/path", "malformed", "tail-path"),
    _case("https://slykertech.co.zw?x=1", "malformed", "tail-query"),
    _case("https://slykertech.co.zw#frag", "malformed", "tail-fragment"),
    _case("https://slykertech.co.zw:443/", "malformed", "tail-slash-after-port"),
    # the regex: unescaped-dot bypass, prefix match, other ports and schemes
    _case("https://pr-1Xpreview.slykertech.co.zw", "foreign", "regex-dot-before-preview"),
    _case("https://pr-1.previewXslykertech.co.zw", "foreign", "regex-dot-after-preview"),
    _case("https://pr-1.preview.slykertechXco.zw", "foreign", "regex-dot-before-co"),
    _case("https://pr-1.preview.slykertech.coXzw", "foreign", "regex-dot-before-zw"),
    _case("https://pr-1.preview.slykertech.co.zw.evil.com", "foreign", "regex-prefix-match"),
    _case("https://pr-1.preview.slykertech.co.zw:8443", "foreign", "regex-extra-port"),
    _case("https://evil.pr-1.preview.slykertech.co.zw", "foreign", "regex-extra-label"),
    _case("https://pr-.preview.slykertech.co.zw", "malformed", "regex-no-digits"),
    _case("https://pr-1a.preview.slykertech.co.zw", "foreign", "regex-letter-in-number"),
    _case("http://pr-1.preview.slykertech.co.zw", "foreign", "regex-http-scheme"),
    # schemes
    _case("http://slykertech.co.zw", "foreign", "scheme-http-for-https-entry"),
    _case("https://localhost:3000", "foreign", "scheme-https-for-http-entry"),
    _case("wss://slykertech.co.zw", "malformed", "scheme-wss"),
    _case("ws://slykertech.co.zw", "malformed", "scheme-ws"),
    _case("ftp://slykertech.co.zw", "malformed", "scheme-ftp"),
    _case("HTTPS:/slykertech.co.zw", "malformed", "scheme-one-slash"),
    _case("https:slykertech.co.zw", "malformed", "scheme-no-slashes"),
    _case("//slykertech.co.zw", "malformed", "scheme-relative"),
    _case("slykertech.co.zw", "malformed", "scheme-missing"),
    _case("file://", "malformed", "scheme-file-empty"),
    _case("file:///etc/passwd", "malformed", "scheme-file-path"),
    _case("chrome-extension://abcdef", "malformed", "scheme-chrome-extension"),
    _case("javascript://slykertech.co.zw", "malformed", "scheme-javascript"),
    # ports
    _case("https://slykertech.co.zw:8443", "foreign", "port-other"),
    _case("https://slykertech.co.zw:80", "foreign", "port-http-default-on-https"),
    _case("http://localhost:3001", "foreign", "port-neighbour"),
    _case("http://localhost", "foreign", "port-missing"),
    _case("https://slykertech.co.zw:0", "malformed", "port-zero"),
    _case("https://slykertech.co.zw:65536", "malformed", "port-65536"),
    _case("https://slykertech.co.zw:99999", "malformed", "port-99999"),
    _case("https://slykertech.co.zw:443443", "malformed", "port-six-digits"),
    _case("https://slykertech.co.zw:", "malformed", "port-empty"),
    _case("https://slykertech.co.zw:-443", "malformed", "port-negative"),
    # several values in one header
    _case("https://slykertech.co.zw, https://evil.com", "malformed", "list-comma-space"),
    _case("https://slykertech.co.zw,https://evil.com", "malformed", "list-comma"),
    _case("https://slykertech.co.zw https://evil.com", "malformed", "list-space"),
    _case("https://slykertech.co.zw, https://slykertech.co.zw", "malformed", "list-same-twice"),
    # null and wildcard
    _case("null", "malformed", "null"),
    _case(b"null", "malformed", "null-bytes"),
    _case("*", "malformed", "wildcard"),
    # length, non-ASCII, bytes, empties
    _case(OVERLONG, "malformed", "overlong"),
    _case(OVERLONG.encode(), "malformed", "overlong-bytes"),
    _case("https://slyk\u0435rtech.co.zw", "malformed", "unicode-cyrillic-e"),
    _case("https://slyk\u0435rtech.co.zw".encode(), "malformed", "unicode-cyrillic-e-utf8"),
    _case("https://slykertech\u3002co.zw", "malformed", "unicode-ideographic-dot"),
    # re.IGNORECASE lets [a-z] match these and .lower() of KELVIN SIGN is an ASCII "k"
    _case("https://sly\u212aertech.co.zw", "malformed", "unicode-kelvin-sign-folds-to-k"),
    _case("https://\u017flykertech.co.zw", "malformed", "unicode-long-s-folds-to-s"),
    _case("\u017fttps://slykertech.co.zw", "malformed", "unicode-long-s-in-scheme"),
    _case("https://xn--slykertech-xyz.co.zw", "foreign", "punycode-look-alike"),
    _case(b"https://slykertech.co.zw\xff", "malformed", "bytes-undecodable"),
    _case("https://slykertech%2eco.zw", "malformed", "percent-encoded-dot"),
    _case("https://slykertech.co.zw.", "malformed", "host-trailing-dot"),
    _case("https://slykertech..co.zw", "malformed", "host-empty-label"),
    _case("https://-slykertech.co.zw", "malformed", "host-leading-hyphen"),
    _case("https://slyker_tech.co.zw", "malformed", "host-underscore"),
    _case("https://", "malformed", "host-missing"),
    _case("https://127.0.0.1", "foreign", "host-ip"),
    _case("", "malformed", "empty"),
    _case(b"", "malformed", "empty-bytes"),
    _case(None, "malformed", "none"),
    # whitespace, control characters, injection, backslashes
    _case(" https://slykertech.co.zw", "malformed", "whitespace-leading"),
    _case("https://slykertech.co.zw ", "malformed", "whitespace-trailing"),
    _case("https://slykertech.co.zw\n", "malformed", "newline-trailing"),
    _case("https://slykertech.co.zw\t", "malformed", "tab-trailing"),
    _case("https://slyker\ttech.co.zw", "malformed", "tab-inside"),
    _case("https://slykertech.co.zw\r\nX: y", "malformed", "crlf-header-injection"),
    _case("https://slykertech.co.zw\x00", "malformed", "nul-byte"),
    _case("https:\\\\slykertech.co.zw", "malformed", "backslashes-for-slashes"),
    _case("https://slykertech.co.zw\\", "malformed", "backslash-trailing"),
    _case("https://evil.com\\@slykertech.co.zw", "malformed", "backslash-userinfo"),
]


def test_bad_origin_corpus_is_big_enough() -> None:
    assert len(BAD_ORIGINS) >= 30


@pytest.mark.parametrize(("value", "kind"), BAD_ORIGINS)
def test_bad_origin_is_refused(value: str | bytes | None, kind: str) -> None:
    assert POLICY.is_allowed(value) is False


@pytest.mark.parametrize(("value", "kind"), BAD_ORIGINS)
def test_bad_origin_is_refused_for_the_right_reason(value: str | bytes | None, kind: str) -> None:
    """Malformed values are not origins at all (even "*" refuses them); foreign ones are."""
    if kind == "malformed":
        assert parse_origin(value) is None
        assert WILDCARD_POLICY.is_allowed(value) is False
    else:
        assert kind == "foreign"
        assert parse_origin(value) is not None
        assert WILDCARD_POLICY.is_allowed(value) is True


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("https://slykertech.co.zw", "https://slykertech.co.zw"),
        ("https://SLYKERTECH.co.zw", "https://slykertech.co.zw"),
        ("HTTPS://slykertech.co.zw", "https://slykertech.co.zw"),
        ("https://slykertech.co.zw:443", "https://slykertech.co.zw"),
        ("HtTpS://SlykerTech.CO.ZW:443", "https://slykertech.co.zw"),
        ("https://www.slykertech.co.zw", "https://www.slykertech.co.zw"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("http://LOCALHOST:3000", "http://localhost:3000"),
        ("https://pr-42.preview.slykertech.co.zw", "https://pr-42.preview.slykertech.co.zw"),
        ("https://PR-42.Preview.slykertech.co.zw:443", "https://pr-42.preview.slykertech.co.zw"),
        (b"https://slykertech.co.zw", "https://slykertech.co.zw"),
        (b"http://localhost:3000", "http://localhost:3000"),
        (b"https://pr-7.preview.slykertech.co.zw", "https://pr-7.preview.slykertech.co.zw"),
    ],
    ids=[
        "exact",
        "uppercase-host",
        "uppercase-scheme",
        "explicit-default-port",
        "mixed-case-and-default-port",
        "www",
        "localhost-dev",
        "localhost-uppercase",
        "regex-example",
        "regex-uppercase-default-port",
        "bytes",
        "bytes-localhost",
        "bytes-regex",
    ],
)
def test_canonical_equivalent_is_allowed(value: str | bytes, canonical: str) -> None:
    origin = parse_origin(value)
    assert origin is not None
    assert origin.serialise() == canonical
    assert POLICY.is_allowed(value) is True


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://slykertech.co.zw", Origin("https", "slykertech.co.zw", 443)),
        ("http://slykertech.co.zw", Origin("http", "slykertech.co.zw", 80)),
        ("http://localhost:3000", Origin("http", "localhost", 3000)),
        ("http://LocalHost:80", Origin("http", "localhost", 80)),
        ("https://slykertech.co.zw:65535", Origin("https", "slykertech.co.zw", 65535)),
        ("https://slykertech.co.zw:1", Origin("https", "slykertech.co.zw", 1)),
        ("http://[::1]:3000", Origin("http", "[::1]", 3000)),
        ("http://127.0.0.1:3000", Origin("http", "127.0.0.1", 3000)),
    ],
    ids=["https", "http", "port", "http-default-port", "port-max", "port-min", "ipv6", "ipv4"],
)
def test_parse_origin(value: str, expected: Origin) -> None:
    assert parse_origin(value) == expected


@pytest.mark.parametrize(
    ("origin", "serialised"),
    [
        (Origin("https", "a.example", 443), "https://a.example"),
        (Origin("http", "a.example", 80), "http://a.example"),
        (Origin("https", "a.example", 80), "https://a.example:80"),
        (Origin("http", "a.example", 443), "http://a.example:443"),
        (Origin("http", "a.example", 8000), "http://a.example:8000"),
    ],
    ids=["https-default", "http-default", "https-port-80", "http-port-443", "other-port"],
)
def test_serialise_drops_only_the_schemes_own_default_port(origin: Origin, serialised: str) -> None:
    assert origin.serialise() == serialised


def _origin_of_length(length: int) -> str:
    """``https://aaa.….example.com`` of exactly ``length`` characters, every label <= 63."""
    head, tail = "https://", "example.com"
    labels, remaining = [], length - len(head) - len(tail)
    while remaining > 0:
        size = min(remaining - 1, 60)
        assert size >= 1
        labels.append("a" * size + ".")
        remaining -= size + 1
    value = head + "".join(labels) + tail
    assert len(value) == length
    return value


@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
def test_length_limit_is_256_bytes(as_bytes: bool) -> None:
    policy = policy_from(CORS_ALLOWED_ORIGIN_REGEXES=r"https://([a-z0-9]+\.)+example\.com")
    longest = _origin_of_length(MAX_ORIGIN_BYTES)
    too_long = _origin_of_length(MAX_ORIGIN_BYTES + 1)
    assert MAX_ORIGIN_BYTES == 256
    assert policy.is_allowed(longest.encode() if as_bytes else longest) is True
    assert policy.is_allowed(too_long.encode() if as_bytes else too_long) is False


def test_policy_is_built_from_settings_as_configured() -> None:
    assert POLICY.allowed_origins == frozenset(ALLOWED_ORIGINS.split(","))
    assert [regex.pattern for regex in POLICY.allowed_regexes] == [PREVIEW_REGEX]
    assert POLICY.allow_all is False
    assert POLICY.allow_null is False


# --- trailing slash: refused on a request, dropped in settings -------------------------------


def test_trailing_slash_on_request_origin_is_refused() -> None:
    assert parse_origin("https://slykertech.co.zw/") is None
    assert POLICY.is_allowed("https://slykertech.co.zw/") is False
    assert POLICY.is_allowed(b"https://slykertech.co.zw/") is False


def test_trailing_slash_on_settings_entry_is_dropped() -> None:
    assert canonicalise_entry("https://slykertech.co.zw/") == "https://slykertech.co.zw"
    policy = policy_from(CORS_ALLOWED_ORIGINS="https://slykertech.co.zw/,http://localhost:3000/")
    assert policy.allowed_origins == frozenset(
        {"https://slykertech.co.zw", "http://localhost:3000"}
    )
    assert policy.is_allowed("https://slykertech.co.zw") is True
    assert policy.is_allowed("http://localhost:3000") is True
    assert policy.is_allowed("https://slykertech.co.zw/") is False


@pytest.mark.parametrize(
    ("entry", "canonical"),
    [
        ("https://slykertech.co.zw", "https://slykertech.co.zw"),
        ("https://slykertech.co.zw/", "https://slykertech.co.zw"),
        ("HTTPS://SLYKERTECH.CO.ZW", "https://slykertech.co.zw"),
        ("https://slykertech.co.zw:443", "https://slykertech.co.zw"),
        ("https://slykertech.co.zw:443/", "https://slykertech.co.zw"),
        ("http://localhost:80", "http://localhost"),
        ("http://localhost:3000/", "http://localhost:3000"),
        ("https://slykertech.co.zw:8443", "https://slykertech.co.zw:8443"),
    ],
    ids=[
        "exact",
        "trailing-slash",
        "uppercase",
        "default-port",
        "default-port-and-slash",
        "http-default-port",
        "port-and-slash",
        "other-port-kept",
    ],
)
def test_canonicalise_entry(entry: str, canonical: str) -> None:
    assert canonicalise_entry(entry) == canonical


@pytest.mark.parametrize(
    "entry",
    [
        "https://slykertech.co.zw//",
        "https://slykertech.co.zw/path",
        "https://slykertech.co.zw/path/",
        "https://slykertech.co.zw?x=1",
        "https://slykertech.co.zw#frag",
        "https://user@slykertech.co.zw",
        "slykertech.co.zw",
        "slykertech.co.zw/",
        "ftp://slykertech.co.zw",
        "wss://slykertech.co.zw",
        "null",
        "*",
        "",
        "/",
        "https://slykertech.co.zw:0",
        "https://slyk\u0435rtech.co.zw",
        " https://slykertech.co.zw",
    ],
    ids=[
        "double-slash",
        "path",
        "path-and-slash",
        "query",
        "fragment",
        "userinfo",
        "no-scheme",
        "no-scheme-slash",
        "ftp",
        "wss",
        "null",
        "wildcard",
        "empty",
        "slash-only",
        "port-zero",
        "unicode",
        "leading-space",
    ],
)
def test_canonicalise_entry_refuses_non_origins(entry: str) -> None:
    with pytest.raises(InvalidOrigin):
        canonicalise_entry(entry)


# --- null ---------------------------------------------------------------------------------


NULL_VALUES = pytest.mark.parametrize("value", ["null", b"null"], ids=["str", "bytes"])


@NULL_VALUES
def test_null_is_refused_by_default(value: str | bytes) -> None:
    assert POLICY.is_allowed(value) is False


@NULL_VALUES
def test_null_is_allowed_with_opt_in_and_entry(value: str | bytes) -> None:
    policy = policy_from(
        CORS_ALLOW_NULL_ORIGIN=True, CORS_ALLOWED_ORIGINS="https://slykertech.co.zw,null"
    )
    assert policy.is_allowed(value) is True
    assert policy.is_allowed("https://slykertech.co.zw") is True


@NULL_VALUES
def test_null_opt_in_without_entry_still_refuses_null(value: str | bytes) -> None:
    policy = policy_from(
        CORS_ALLOW_NULL_ORIGIN=True, CORS_ALLOWED_ORIGINS="https://slykertech.co.zw"
    )
    assert policy.is_allowed(value) is False


@NULL_VALUES
def test_null_opt_in_with_wildcard_but_no_entry_still_refuses_null(value: str | bytes) -> None:
    policy = policy_from(
        CORS_ALLOW_NULL_ORIGIN=True, CORS_ALLOWED_ORIGINS="*", CORS_ALLOW_CREDENTIALS=False
    )
    assert policy.is_allowed(value) is False


def test_null_entry_without_opt_in_refuses_to_start() -> None:
    with pytest.raises(SettingsError) as info:
        policy_from(CORS_ALLOWED_ORIGINS="https://slykertech.co.zw,null")
    assert info.value.setting == "CORS_ALLOWED_ORIGINS"


@pytest.mark.parametrize(
    "value",
    ["NULL", "Null", " null", "null ", "null, null", "null,https://slykertech.co.zw", "nul"],
    ids=["upper", "title", "leading-space", "trailing-space", "twice", "with-origin", "nul"],
)
def test_null_opt_in_allows_only_the_exact_null(value: str) -> None:
    policy = policy_from(CORS_ALLOW_NULL_ORIGIN=True, CORS_ALLOWED_ORIGINS="null")
    assert policy.is_allowed(value) is False


# --- "*" -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "https://evil.com",
        "http://anything.example:8080",
        "https://slykertech.co.zw",
        b"https://evil.com",
        "http://[::1]:3000",
    ],
    ids=["evil", "http-port", "own", "bytes", "ipv6"],
)
def test_wildcard_without_credentials_allows_any_well_formed_origin(value: str | bytes) -> None:
    assert WILDCARD_POLICY.allow_all is True
    assert WILDCARD_POLICY.is_allowed(value) is True


@pytest.mark.parametrize(
    "value",
    ["null", "*", "https://evil.com/", "https://evil.com, https://x.com", "ftp://evil.com", None],
    ids=["null", "wildcard", "path", "list", "ftp", "none"],
)
def test_wildcard_still_refuses_malformed_origins(value: str | None) -> None:
    assert WILDCARD_POLICY.is_allowed(value) is False


def test_wildcard_with_credentials_refuses_to_start() -> None:
    with pytest.raises(SettingsError) as info:
        policy_from(CORS_ALLOWED_ORIGINS="*")
    assert info.value.setting == "CORS_ALLOWED_ORIGINS"
    with pytest.raises(SettingsError) as info:
        policy_from(CORS_ALLOWED_ORIGINS="https://slykertech.co.zw,*", CORS_ALLOW_CREDENTIALS=True)
    assert info.value.setting == "CORS_ALLOWED_ORIGINS"


# --- the same-host rule ----------------------------------------------------------------------

API_HOSTS = ("api.slykertech.co.zw",)


@pytest.mark.parametrize(
    ("origin", "host", "allowed_hosts"),
    [
        ("https://api.slykertech.co.zw", "api.slykertech.co.zw", API_HOSTS),
        ("https://api.slykertech.co.zw", "api.slykertech.co.zw:443", API_HOSTS),
        ("https://api.slykertech.co.zw:443", "api.slykertech.co.zw", API_HOSTS),
        ("HTTPS://API.slykertech.co.zw", "Api.Slykertech.co.zw", API_HOSTS),
        (b"https://api.slykertech.co.zw", "api.slykertech.co.zw", API_HOSTS),
        ("https://api.x:8443", "api.x:8443", ("api.x",)),
        ("http://localhost:8000", "localhost:8000", ("localhost", "127.0.0.1")),
        ("http://[::1]:8000", "[::1]:8000", ("[::1]",)),
        ("https://api.slykertech.co.zw", "api.slykertech.co.zw", (".slykertech.co.zw",)),
        ("https://slykertech.co.zw", "slykertech.co.zw", (".slykertech.co.zw",)),
        ("https://a.b.slykertech.co.zw", "a.b.slykertech.co.zw", (".slykertech.co.zw",)),
        ("https://anything.example", "anything.example", ("*",)),
        ("https://api.slykertech.co.zw", "api.slykertech.co.zw", ("API.Slykertech.co.zw",)),
    ],
    ids=[
        "host-without-port",
        "host-with-default-port",
        "origin-with-default-port",
        "case-insensitive",
        "bytes-origin",
        "explicit-port",
        "second-allowed-host",
        "ipv6",
        "dot-pattern-subdomain",
        "dot-pattern-apex",
        "dot-pattern-deep-subdomain",
        "wildcard-hosts",
        "allowed-host-case",
    ],
)
def test_same_host(origin: str | bytes, host: str, allowed_hosts: tuple[str, ...]) -> None:
    assert OriginPolicy.is_same_host(origin, host, allowed_hosts) is True


@pytest.mark.parametrize(
    ("origin", "host", "allowed_hosts"),
    [
        ("https://evil.com", "evil.com", API_HOSTS),
        ("http://api.x:8000", "api.x:8000", ("api.x",)),
        ("https://api.slykertech.co.zw", "api.sly\u212aertech.co.zw", API_HOSTS),
        ("https://api.slykertech.co.zw", "api.slykertech.co.zw", ()),
        ("https://api.slykertech.co.zw", "api.slykertech.co.zw", ("slykertech.co.zw",)),
        ("http://api.x:8000", "api.x:8001", ("api.x",)),
        ("http://api.slykertech.co.zw", "api.slykertech.co.zw:443", API_HOSTS),
        ("https://api.slykertech.co.zw", "api.slykertech.co.zw:80", API_HOSTS),
        ("https://api.slykertech.co.zw", "api.slykertech.co.zw:8443", API_HOSTS),
        ("https://slykertech.co.zw", "api.slykertech.co.zw", (*API_HOSTS, "slykertech.co.zw")),
        ("https://api.slykertech.co.zw", None, API_HOSTS),
        ("https://api.slykertech.co.zw", "", API_HOSTS),
        ("https://api.slykertech.co.zw/", "api.slykertech.co.zw", API_HOSTS),
        ("https://user@api.slykertech.co.zw", "api.slykertech.co.zw", API_HOSTS),
        ("null", "api.slykertech.co.zw", API_HOSTS),
        (None, "api.slykertech.co.zw", API_HOSTS),
        ("wss://api.slykertech.co.zw", "api.slykertech.co.zw", API_HOSTS),
        ("https://api.slykertech.co.zw", "api.slykertech.co.zw/x", API_HOSTS),
        ("https://api.slykertech.co.zw", "evil.com@api.slykertech.co.zw", API_HOSTS),
        ("https://api.slykertech.co.zw", "api.slykertech.co.zw:99999", API_HOSTS),
        ("https://api.slykertech.co.zw", "api.slykertech.co.zw, evil.com", API_HOSTS),
        ("https://evilslykertech.co.zw", "evilslykertech.co.zw", (".slykertech.co.zw",)),
        (
            "https://slykertech.co.zw.evil.com",
            "slykertech.co.zw.evil.com",
            (".slykertech.co.zw",),
        ),
    ],
    ids=[
        "host-not-allowed",
        "plain-http-origin-off-loopback",
        "kelvin-sign-host",
        "no-allowed-hosts",
        "exact-entry-is-not-a-pattern",
        "different-port",
        "http-origin-https-host-port",
        "https-origin-http-host-port",
        "https-origin-other-port",
        "different-host",
        "missing-host",
        "empty-host",
        "malformed-origin-path",
        "malformed-origin-userinfo",
        "null-origin",
        "no-origin",
        "ws-origin",
        "malformed-host-path",
        "malformed-host-userinfo",
        "malformed-host-port",
        "malformed-host-list",
        "dot-pattern-glued-prefix",
        "dot-pattern-suffix-domain",
    ],
)
def test_not_same_host(
    origin: str | bytes | None, host: str | None, allowed_hosts: tuple[str, ...]
) -> None:
    assert OriginPolicy.is_same_host(origin, host, allowed_hosts) is False


def test_same_host_with_allowed_hosts_from_settings() -> None:
    hosts = load_settings(
        environ={}, overrides={"SECRET_KEY": SECRET_KEY, "ALLOWED_HOSTS": "API.slykertech.co.zw"}
    ).allowed_hosts
    assert hosts == ("api.slykertech.co.zw",)
    assert OriginPolicy.is_same_host("https://api.slykertech.co.zw", "api.slykertech.co.zw", hosts)
    assert not OriginPolicy.is_same_host("https://evil.com", "evil.com", hosts)
