"""Redirect URI rules: registration-time validation and the matcher, including property
tests against the RFC 9700 §4.1 tricks (path traversal, added query, userinfo, case and
encoding games, lookalike hosts)."""

from __future__ import annotations

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from mcp_oauthd.oauth import redirects
from mcp_oauthd.oauth.errors import InvalidRedirectUri
from mcp_oauthd.oauth.redirects import RedirectPolicy, matches, port_agnostic, validate

POLICY = RedirectPolicy()
STRICT = RedirectPolicy(allow_custom_schemes=False)
DEV = RedirectPolicy(allow_http=True)

label = st.from_regex(r"[a-z][a-z0-9]{0,9}", fullmatch=True)
hosts = st.lists(label, min_size=2, max_size=4).map(".".join)
segment = st.from_regex(r"[A-Za-z0-9_~-]{1,10}", fullmatch=True)
paths = st.lists(segment, min_size=0, max_size=4).map(lambda s: "/" + "/".join(s))
queries = st.one_of(st.just(""), st.from_regex(r"\?[a-z]{1,5}=[a-z0-9]{1,5}", fullmatch=True))
https_uris = st.builds(lambda h, p, q: f"https://{h}{p}{q}", hosts, paths, queries)
loopback_hosts = st.sampled_from(["localhost", "127.0.0.1", "[::1]"])
ports = st.integers(min_value=1, max_value=65535)


# ----------------------------------------------------------------------------- matching
@given(https_uris)
def test_a_registered_uri_matches_itself_exactly(uri: str) -> None:
    validate(uri, POLICY)
    assert matches(uri, uri)


def _tricks(uri: str, host: str) -> list[str]:
    rest = uri[len("https://") + len(host) :]
    return [
        uri + "/../evil",
        uri + "/..%2fevil",
        uri.replace(rest, "/../" + rest.lstrip("/"), 1) if rest else uri + "/..",
        uri + ("&" if "?" in uri else "?") + "x=1",
        uri + "?",
        uri + "#",
        uri + "#frag",
        uri + "/",
        f"https://attacker@{host}{rest}",
        f"https://{host}@evil.example{rest}",
        f"https://{host}.evil.example{rest}",
        f"https://{host}evil.example{rest}",
        f"https://evil-{host}{rest}",
        f"https://{host}.{rest}" if rest.startswith("/") else f"https://{host}.",
        f"https://{host}:443{rest}",
        f"https://{host.upper()}{rest}",
        f"HTTPS://{host}{rest}",
        f"http://{host}{rest}",
        f"https://{host}{rest.upper()}",
        f"https://{host}%2f@evil.example{rest}",
        f"https://{host}\\@evil.example{rest}",
        f"https://{host}{rest}\n",
        f" https://{host}{rest}",
        f"https://{host}{rest}%00",
        f"https://xn--{host}{rest}",
    ]


@given(https_uris)
def test_no_rfc9700_trick_matches_a_registered_https_uri(uri: str) -> None:
    host = uri[len("https://") :].split("/", 1)[0].split("?", 1)[0]
    for trick in _tricks(uri, host):
        if trick == uri:
            continue
        assert not matches(trick, uri), trick


@given(https_uris, st.integers(min_value=0, max_value=20))
def test_percent_encoding_any_character_breaks_the_match(uri: str, index: int) -> None:
    position = index % len(uri)
    char = uri[position]
    encoded = uri[:position] + f"%{ord(char):02X}" + uri[position + 1 :]
    assert not matches(encoded, uri)


@given(loopback_hosts, paths, queries, ports)
def test_a_loopback_uri_matches_with_any_port(host: str, path: str, query: str, port: int) -> None:
    registered = f"http://{host}{path}{query}"
    validate(registered, POLICY)
    assert matches(f"http://{host}:{port}{path}{query}", registered)


@given(loopback_hosts, paths, ports, ports)
def test_a_registered_loopback_port_is_ignored_too(
    host: str, path: str, registered_port: int, port: int
) -> None:
    assert matches(f"http://{host}:{port}{path}", f"http://{host}:{registered_port}{path}")


@given(loopback_hosts, loopback_hosts, paths, ports)
def test_loopback_spellings_do_not_stand_in_for_each_other(
    registered_host: str, requested_host: str, path: str, port: int
) -> None:
    assume(registered_host != requested_host)
    assert not matches(f"http://{requested_host}:{port}{path}", f"http://{registered_host}{path}")


@given(loopback_hosts, paths, ports, st.sampled_from(["/x", "/../x", "?a=b", "/", "%2e"]))
def test_only_the_port_of_a_loopback_uri_may_differ(
    host: str, path: str, port: int, extra: str
) -> None:
    registered = f"http://{host}{path}"
    assert not matches(f"http://{host}:{port}{path}{extra}", registered)
    assert not matches(f"https://{host}:{port}{path}", registered)
    assert not matches(f"HTTP://{host}:{port}{path}", registered)
    assert not matches(f"http://user@{host}:{port}{path}", registered)
    assert not matches(f"http://{host}:{port}@evil.example{path}", registered)
    assert not matches(f"http://{host}.evil.example:{port}{path}", registered)


@settings(max_examples=300)
@given(st.text(max_size=60), st.sampled_from(["https://app.example.com/cb", "http://127.0.0.1/cb"]))
@example("http://127.0.0.1:5555/c\nb", "http://127.0.0.1/cb")
@example("http://127.0.0.1:5555/c\tb", "http://127.0.0.1/cb")
@example("http://127.0.0.1:99999/cb", "http://127.0.0.1/cb")
@example("http://127.0.0.1:0/cb", "http://127.0.0.1/cb")
def test_whatever_is_requested_a_match_is_the_uri_or_its_port_variant(
    requested: str, registered: str
) -> None:
    if matches(requested, registered):
        assert requested == registered or (
            port_agnostic(requested) == port_agnostic(registered)
            and requested.startswith("http://127.0.0.1:")
        )


@given(st.text(alphabet=" \t\r\n\x00\x0b\x0c\x7f\\", min_size=1, max_size=3), https_uris)
def test_whitespace_control_characters_and_backslashes_never_match(junk: str, uri: str) -> None:
    for position in (len("https://"), len(uri) // 2, len(uri)):
        assert not matches(uri[:position] + junk + uri[position:], uri)


# ----------------------------------------------------------------------------- validation
DANGEROUS = sorted(redirects.DANGEROUS_SCHEMES)


@given(st.sampled_from(DANGEROUS), st.booleans())
def test_dangerous_schemes_are_refused_whatever_the_policy_and_case(
    scheme: str, upper: bool
) -> None:
    uri = f"{scheme.upper() if upper else scheme}://host/alert(1)"
    for policy in (POLICY, STRICT, DEV):
        with pytest.raises(InvalidRedirectUri):
            validate(uri, policy)
        with pytest.raises(InvalidRedirectUri):
            validate(f"{scheme}:alert(1)", policy)


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example.com/cb#frag",
        "https://app.example.com/cb#",
        "https://user@app.example.com/cb",
        "https://user:pw@app.example.com/cb",
        "https://app.example.com@evil.example/cb",
        "https://app.example.com/a/../cb",
        "https://app.example.com/a/%2e%2e/cb",
        "https://exa%6dple.com/cb",
        "https://app_example.com/cb",
        "https:///cb",
        "https://app.example.com/c b",
        "https://app.example.com/cb\n",
        "https://app.example.com\\cb",
        "/relative/cb",
        "app.example.com/cb",
        "http://app.example.com/cb",
        "http://127.0.0.1.nip.io/cb",
        "https://app.example.com:99999/cb",
        "",
        "https://" + "a" * 2000 + ".com/",
    ],
)
def test_invalid_redirect_uris_are_refused(uri: str) -> None:
    with pytest.raises(InvalidRedirectUri):
        validate(uri, POLICY)


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example.com/cb",
        "https://app.example.com:8443/cb?tenant=a",
        "http://127.0.0.1/callback",
        "http://127.0.0.1:33418/",
        "http://localhost:6274/oauth/callback",
        "http://[::1]/cb",
        "cursor://anysphere.cursor-retrieval/oauth/callback",
        "vscode://vscode.github-authentication/did-authenticate",
        "com.example.app:/oauth2redirect",
    ],
)
def test_redirect_uris_real_clients_use_are_accepted(uri: str) -> None:
    validate(uri, POLICY)


def test_plain_http_off_loopback_needs_the_development_switch() -> None:
    validate("http://app.internal/cb", DEV)
    with pytest.raises(InvalidRedirectUri, match="loopback"):
        validate("http://app.internal/cb", POLICY)


def test_custom_schemes_follow_the_policy() -> None:
    with pytest.raises(InvalidRedirectUri, match="custom-scheme"):
        validate("cursor://anysphere.cursor-retrieval/oauth/callback", STRICT)
    with pytest.raises(InvalidRedirectUri, match="needs a path"):
        validate("cursor:", POLICY)


@pytest.mark.parametrize(
    "uri", ["http://127.0.0.1:33418/", "cursor://anysphere.cursor-retrieval/cb"]
)
def test_a_web_application_may_not_use_native_redirects(uri: str) -> None:
    with pytest.raises(InvalidRedirectUri, match="web application"):
        validate(uri, POLICY, "web")
    validate(uri, POLICY, "native")


def test_a_native_application_may_use_a_claimed_https_redirect() -> None:
    validate("https://vscode.dev/redirect", POLICY, "native")  # RFC 8252 §7.2
    validate("https://vscode.dev/redirect", POLICY, "web")
