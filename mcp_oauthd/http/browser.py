"""Browser-facing handlers: authorize, consent, upstream callback, local login.

Thin: parse the request, call the service, render its outcome.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web
from multidict import MultiMapping

from mcp_oauthd.http import keys, ratelimit
from mcp_oauthd.http.cookies import BrowserCookies
from mcp_oauthd.oauth.metadata import CALLBACK_PATH, CONSENT_PATH, LOGIN_PATH, endpoint
from mcp_oauthd.oauth.redirects import is_custom_scheme
from mcp_oauthd.oauth.responses import authorization_response
from mcp_oauthd.service.authorize import (
    UPSTREAM_KIND,
    Outcome,
    Page,
    PageError,
    RedirectableError,
)

COOKIES = web.AppKey("cookies", BrowserCookies)


def single_values(params: MultiMapping[str]) -> dict[str, str]:
    """RFC 6749 §3.1: request parameters MUST NOT be included more than once."""
    result: dict[str, str] = {}
    for key in params:
        if key in result:
            continue
        values = params.getall(key)
        if len(values) > 1:
            raise PageError("Invalid request", f"The parameter {key} appears more than once.")
        result[key] = values[0]
    return result


def render(request: web.Request, outcome: Outcome, status_for_redirect: int = 302) -> web.Response:
    app = request.app
    if isinstance(outcome, Page):
        context = dict(outcome.context)
        if outcome.template == "consent":
            context["action"] = endpoint(app[keys.SERVICES].config.issuer, CONSENT_PATH)
        return app[keys.PAGES].render(outcome.template, context, outcome.status)
    if is_custom_scheme(outcome.location):
        # Browsers show their own prompt for app schemes; give the user a real page too.
        response = app[keys.PAGES].render(
            "handoff",
            {"location": outcome.location, "scheme": urlsplit(outcome.location).scheme + ":"},
        )
    else:
        # Never 307: it would re-POST the consent form to the client (RFC 9700 §4.12).
        response = web.Response(status=status_for_redirect, headers={"Location": outcome.location})
        response.headers["Cache-Control"] = "no-store"
    if outcome.subject and app[keys.SERVICES].config.consent.remember:
        app[COOKIES].set_user(
            response, outcome.subject, int(app[keys.SERVICES].config.consent.remember_ttl)
        )
    return response


async def authorize(request: web.Request) -> web.Response:
    service = request.app[keys.AUTHORIZE]
    cookies = request.app[COOKIES]
    params = single_values(request.query)
    try:
        auth_request = await service.validate(params)
    except RedirectableError as exc:
        return render(request, exc.redirect)
    browser, new = cookies.ensure_browser(request)
    outcome = await service.start(auth_request, browser, cookies.user(request))
    response = render(request, outcome)
    if new:
        cookies.set_browser(response, browser)
    return response


async def consent_page(request: web.Request) -> web.Response:
    service = request.app[keys.AUTHORIZE]
    browser = request.app[COOKIES].browser(request)
    page = await service.show_consent(request.query.get("flow"), browser)
    return render(request, page)


async def consent_submit(request: web.Request) -> web.Response:
    service = request.app[keys.AUTHORIZE]
    browser = request.app[COOKIES].browser(request)
    form = await request.post()
    outcome = await service.decide(
        _str(form.get("flow")),
        _str(form.get("csrf_token")),
        _str(form.get("decision")),
        _str(form.get("remember")) == "1",
        browser,
    )
    return render(request, outcome, status_for_redirect=303)


async def callback(request: web.Request) -> web.Response:
    service = request.app[keys.AUTHORIZE]
    browser = request.app[COOKIES].browser(request)
    outcome = await service.callback(single_values(request.query), browser)
    return render(request, outcome)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


# ---------------------------------------------------------------------- local provider
async def login_page(request: web.Request) -> web.Response:
    state = request.query.get("state")
    await _check_login_state(request, state)
    assert state is not None
    return _login_form(request, state, error=None, username="")


async def login_submit(request: web.Request) -> web.Response:
    from mcp_oauthd.providers.local import LocalProvider

    services = request.app[keys.SERVICES]
    provider = services.provider
    form = await request.post()
    state = _str(form.get("state"))
    browser = request.app[COOKIES].browser(request)
    csrf = _str(form.get("csrf_token"))
    if not state or not browser or not csrf:
        raise PageError("Invalid request", "This sign-in form is incomplete.")
    if not services.signer.verify("login-csrf", f"{state}:{browser}", csrf):
        raise PageError("Invalid request", "This sign-in form is not valid any more.", 403)
    await _check_login_state(request, state)
    assert isinstance(provider, LocalProvider)
    username = _str(form.get("username")) or ""
    password = _str(form.get("password")) or ""
    # Per-user budget: slows password guessing against one account from many addresses.
    limits = services.config.rate_limits
    if limits.enabled:
        await ratelimit.check(
            request, "login_user", username.lower()[:128], ratelimit.budget(limits.login_user)
        )
    identity = await provider.verify_password(username, password)
    if identity is None:
        services.auditor.emit("login.failed", provider="local")
        return _login_form(
            request, state, error="Wrong username or password.", username=username, status=401
        )
    code = await provider.issue_code(identity, state)
    location = authorization_response(
        endpoint(services.config.issuer, CALLBACK_PATH), {"code": code, "state": state}
    )
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


async def _check_login_state(request: web.Request, state: str | None) -> None:
    services = request.app[keys.SERVICES]
    if services.provider.name != "local":
        raise web.HTTPNotFound()
    if not state:
        raise PageError("Invalid request", "This sign-in link is incomplete.")
    flow = await services.storage.get_ephemeral(UPSTREAM_KIND, state, services.now())
    if flow is None:
        raise PageError(
            "This sign-in has expired",
            "This sign-in link has expired or was already used. Go back to the application "
            "and start again.",
        )


def _login_form(
    request: web.Request, state: str, *, error: str | None, username: str, status: int = 200
) -> web.Response:
    services = request.app[keys.SERVICES]
    browser = request.app[COOKIES].browser(request)
    if browser is None:
        raise PageError(
            "Cookies are needed",
            "Your browser did not send the sign-in cookie. Enable cookies for this site and "
            "start again from the application.",
            403,
        )
    context = {
        "state": state,
        "csrf_token": services.signer.mac("login-csrf", f"{state}:{browser}"),
        "error": error,
        "username": username,
        "client_name": None,
        "action": endpoint(services.config.issuer, LOGIN_PATH),
    }
    return request.app[keys.PAGES].render("login", context, status)


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_get(prefix + "/oauth/authorize", authorize)
    app.router.add_get(prefix + CONSENT_PATH, consent_page)
    app.router.add_post(prefix + CONSENT_PATH, consent_submit)
    app.router.add_get(prefix + CALLBACK_PATH, callback)
    app.router.add_get(prefix + LOGIN_PATH, login_page)
    app.router.add_post(prefix + LOGIN_PATH, login_submit)


def html_paths(prefix: str) -> frozenset[str]:
    return frozenset(
        prefix + p for p in ("/oauth/authorize", CONSENT_PATH, CALLBACK_PATH, LOGIN_PATH)
    )
