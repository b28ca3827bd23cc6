"""The OpenAPI document of the JSON endpoints: served at /openapi.json, true to the router
(every JSON route documented, every documented path routed), and schemathesis fuzzes the
live daemon against it: no server error, no response outside the document, no
authenticated endpoint answering without its credentials."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mcp_oauthd.app import create_app
from mcp_oauthd.http import keys
from mcp_oauthd.http.openapi import openapi_document
from mcp_oauthd.observability.metrics import METRICS_PATH
from mcp_oauthd.storage.memory import MemoryStorage
from tests.conftest import base_config
from tests.daemon import Daemon
from tests.resource.conftest import SECRETS, local_provider, resources

# Budgets: the whole schemathesis run (all phases) and the cases per operation and phase.
FUZZ_SECONDS = 45
MAX_EXAMPLES = 12
# The checks that hold for an OAuth server. Left out, with the reason:
# - positive_data_acceptance: "schema-valid" token, revocation and registration requests
#   are refused for reasons no schema can state (an unknown code, a spent refresh token, a
#   redirect URI that fails the RFC 9700 §4.1 rules): refusing them is the job.
# - use_after_free, ensure_resource_availability, object_level_authorization: need
#   resources created through links; client management is covered with a fixed client
#   (below) and in tests/clients/test_registration.py.
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "missing_required_header",
        "unsupported_method",
        "ignored_auth",
    ]
)


def json_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route that is not an HTML page, a static file,
    the Prometheus text endpoint, or an automatic HEAD / CORS preflight."""
    html = app[keys.HTML_PATHS]
    found = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None or isinstance(resource, web.StaticResource):
            continue
        if route.method in ("HEAD", "OPTIONS"):
            continue
        path = resource.canonical
        if path in html or path == METRICS_PATH:
            continue
        found.add((route.method, path))
    return found


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"issuer": "http://127.0.0.1:8080/tenant"},
        {"tokens": {"format": "jwt"}, "cors": {"allowed_origins": ["http://localhost:6274"]}},
        {"registration": {"policy": "closed"}, "cimd": {"enabled": False}},
    ],
)
def test_every_json_route_is_documented_and_every_documented_path_is_routed(
    overrides: dict[str, Any],
) -> None:
    config = base_config(8080, **overrides)
    app = create_app(config, storage=MemoryStorage())
    assert json_routes(app) == documented(openapi_document(config))


def test_the_document_is_openapi_3_1_and_loads_in_schemathesis() -> None:
    import schemathesis

    doc = openapi_document(base_config(8080, resources=resources()))
    assert doc["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_dict(doc)
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) == len(documented(doc))
    # Every error response is the RFC 6749 error object.
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")) and "content" in response:
                    schema_ref = next(iter(response["content"].values()))["schema"]
                    assert schema_ref in (
                        {"$ref": "#/components/schemas/Error"},
                        {"$ref": "#/components/schemas/Health"},
                    ), (method, path, status)


async def test_the_document_is_served_at_openapi_json(daemon: Daemon) -> None:
    async with daemon.http.get(daemon.url + "/openapi.json") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body == json.loads(json.dumps(openapi_document(daemon.config)))
    assert body["servers"] == [{"url": daemon.url}]


def _toml(values: dict[str, str]) -> str:
    # Quoted keys: `path.client_id` is one key, not a nested table.
    return "\n".join(f"{json.dumps(key)} = {json.dumps(value)}" for key, value in values.items())


async def test_schemathesis_finds_nothing_against_the_live_daemon(
    daemon_factory: Any, tmp_path: Path
) -> None:
    """Bounded fuzzing of every documented operation (coverage, fuzzing and stateful
    phases) with real credentials where an operation needs them."""
    daemon: Daemon = await daemon_factory(
        provider=local_provider(),
        resources=resources(),
        rate_limits={"enabled": False},  # let the fuzzer reach the handlers
        logging={"access_log": False, "level": "error"},
    )
    tokens = await daemon.tokens()
    managed = []
    for _ in range(2):  # one client to read, one to delete
        async with daemon.http.post(
            daemon.url + "/oauth/register",
            json={"redirect_uris": ["https://client.example/cb"], "client_name": "fuzz"},
        ) as resp:
            managed.append(await resp.json())
    daemon_doc = openapi_document(daemon.config)
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "\n".join(
            [
                "[auth.openapi.accessToken]",
                _toml({"bearer": tokens["access_token"]}),
                "[auth.openapi.resourceServerBasic]",
                _toml({"username": "files-rs", "password": SECRETS["files-rs"]}),
                "[auth.openapi.clientBasic]",
                _toml({"username": "webapp", "password": "s3cret-s3cret-s3cret"}),
                *[
                    line
                    for method, client in zip(("GET", "DELETE"), managed, strict=True)
                    for line in (
                        "[[operations]]",
                        # One filter key: several keys would match either (OR), not both.
                        _toml({"include-name": f"{method} /oauth/register/{{client_id}}"}),
                        "[operations.parameters]",
                        _toml({"path.client_id": client["client_id"]}),
                        # Per-operation auth takes only basic: the bearer goes as a header.
                        "[operations.headers]",
                        _toml({"Authorization": "Bearer " + client["registration_access_token"]}),
                    )
                ],
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    st = Path(sys.executable).with_name("st")
    proc = await asyncio.create_subprocess_exec(
        str(st),
        "--config-file",
        str(config),
        "run",
        daemon.url + "/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--max-time",
        str(FUZZ_SECONDS),
        "--seed",
        "20260707",
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--workers",
        "1",
        "--no-color",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,  # its report directory, if any, lands here
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    output, _ = await asyncio.wait_for(proc.communicate(), timeout=FUZZ_SECONDS + 120)
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", text)
    tested = re.search(r"Tested: (\d+)", text)
    assert selected and tested, text[-3000:]
    # Every operation of the document (schemathesis leaves out /openapi.json itself).
    assert int(tested.group(1)) == int(selected.group(2)) >= len(documented(daemon_doc)) - 1
    assert "Authentication failed" not in text  # the credentials given were used
    async with aiohttp.ClientSession() as http, http.get(daemon.url + "/healthz") as resp:
        assert resp.status == 200  # and the daemon is still up
