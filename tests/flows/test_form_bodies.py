"""Form bodies of the token, revocation and introspection endpoints (RFC 6749 §3.2 and
Appendix B): every parameter at most once, UTF-8, a clear invalid_request otherwise."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote_plus

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_oauthd.oauth.errors import InvalidRequest
from mcp_oauthd.oauth.forms import MAX_FORM_BYTES, parse_form
from tests.daemon import Daemon

FORM = "application/x-www-form-urlencoded"


# ----------------------------------------------------------------------------- parsing
@given(st.dictionaries(st.text(min_size=1), st.text(), max_size=6))
def test_an_encoded_form_parses_back_to_its_parameters(params: dict[str, str]) -> None:
    body = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in params.items())
    assert parse_form(body.encode()) == params


# Bodies as clients and attackers write them: escapes, '+', bare names, empty pieces,
# '=' inside values, ';' (not a separator since Python 3.10), trailing whitespace.
_PIECES = st.sampled_from(
    ["a", "b", "c=", "=x", "d=1", "e=a+b", "f=%41%42", "g=%2B", "h=a=b", "i=;j", "%61=1", ""]
)


@given(st.lists(_PIECES, max_size=6).map("&".join))
def test_it_reads_a_body_as_parse_qsl_does_when_no_name_repeats(text: str) -> None:
    pairs = parse_qsl(text, keep_blank_values=True)
    names = [name for name, _ in pairs]
    if len(set(names)) == len(names):
        assert parse_form(text.encode()) == dict(pairs)
    else:
        with pytest.raises(InvalidRequest, match="more than once"):
            parse_form(text.encode())


def test_a_repeated_parameter_is_refused_even_when_spelled_differently() -> None:
    with pytest.raises(InvalidRequest, match="token appears more than once"):
        parse_form(b"token=a&%74oken=b")


@pytest.mark.parametrize(
    ("body", "charset", "message"),
    [
        (b"token=\xff", None, "not valid utf-8"),
        (b"token=%FF", None, "not valid utf-8"),
        (b"token=a", "no-such-charset", "charset is not supported"),
        (b"a=" + b"x" * MAX_FORM_BYTES, None, "too large"),
    ],
)
def test_a_body_that_cannot_be_read_is_an_invalid_request(
    body: bytes, charset: str | None, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_form(body, charset)


def test_a_declared_charset_is_honoured() -> None:
    # Apache HttpClient declares ISO-8859-1 for its forms by default.
    assert parse_form(b"name=caf%E9+au+lait&x=\xe9", "iso-8859-1") == {
        "name": "café au lait",
        "x": "é",
    }


# ----------------------------------------------------------------------------- over HTTP
async def _post(http: aiohttp.ClientSession, url: str, body: bytes, **headers: str) -> Any:
    async with http.post(url, data=body, headers={"Content-Type": FORM, **headers}) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke"])
@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"grant_type=refresh_token&grant_type=authorization_code", FORM, "more than once"),
        (b"grant_type=\xff", FORM, "not valid utf-8"),
        (b"grant_type=refresh_token", FORM + "; charset=klingon", "charset"),
        (b'{"grant_type": "refresh_token"}', "application/json", "x-www-form-urlencoded"),
        (b"a=" + b"x" * MAX_FORM_BYTES, FORM, "too large"),
    ],
)
async def test_the_token_and_revocation_endpoints_refuse_a_bad_body_with_invalid_request(
    daemon: Daemon, path: str, body: bytes, content_type: str, message: str
) -> None:
    status, answer = await _post(
        daemon.http, daemon.url + path, body, **{"Content-Type": content_type}
    )
    assert status == 400
    assert answer["error"] == "invalid_request"
    assert message in answer["error_description"]


async def test_a_refresh_with_an_escaped_body_works(daemon: Daemon) -> None:
    tokens = await daemon.tokens()
    body = "grant_type=refresh%5Ftoken&client%5Fid=cli&refresh_token=" + quote_plus(
        tokens["refresh_token"], safe=""
    )
    status, answer = await _post(daemon.http, daemon.url + "/oauth/token", body.encode())
    assert status == 200, answer
    assert answer["refresh_token"] != tokens["refresh_token"]
