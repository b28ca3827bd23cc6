"""RFC 9700 §4.12: 307 redirect. After a form POST that carried the user's password or
decision, the redirect is 303 (or 302 for GETs), never 307/308, which would make the
browser re-send the form body (the password) to the next hop."""

from __future__ import annotations

from tests.daemon import Daemon
from tests.security.support import walk_flow_recording


async def test_no_response_of_the_flow_is_a_307_or_308(daemon: Daemon) -> None:
    """RFC 9700 §4.12: no hop of the flow makes the browser re-send a body."""
    hops, _ = await walk_flow_recording(daemon)
    assert all(hop.status not in (307, 308) for hop in hops)


async def test_the_consent_and_login_posts_answer_with_303(daemon: Daemon) -> None:
    """RFC 9700 §4.12: a 303 turns the next request into a GET without the body."""
    hops, _ = await walk_flow_recording(daemon)
    posts = [hop for hop in hops if hop.method == "POST"]
    assert [hop.status for hop in posts] == [303, 303]


async def test_a_denied_consent_also_redirects_with_303(daemon: Daemon) -> None:
    """RFC 9700 §4.12: the denial path re-sends nothing either."""
    hop, _ = await daemon.login(approve=False)
    assert hop.status == 303
    assert "error=access_denied" in (hop.location or "")
