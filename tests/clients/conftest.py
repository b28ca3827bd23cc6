"""Fixtures for the client tests: registration helpers, payloads as real MCP clients send
them, and a local https server (with its own test CA) serving client metadata documents.

The daemon fixtures (``daemon``, ``daemon_factory``) come from ``tests/daemon.py``.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import free_port
from tests.daemon import Daemon

# ----------------------------------------------------------------------------- payloads
# What real MCP clients send to a registration endpoint (none of them sends `scope`).
CLAUDE_CODE = {
    "client_name": "Claude Code (files)",
    "redirect_uris": ["http://localhost:54545/callback"],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "none",
}
VSCODE = {
    "client_name": "Visual Studio Code",
    "redirect_uris": ["http://127.0.0.1:33418/", "https://vscode.dev/redirect"],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "none",
    "client_uri": "https://code.visualstudio.com",
}
CURSOR = {
    "client_name": "Cursor",
    "redirect_uris": ["cursor://anysphere.cursor-retrieval/oauth/user-files/callback"],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "none",
}
INSPECTOR = {
    "redirect_uris": ["http://localhost:6274/oauth/callback"],
    "token_endpoint_auth_method": "none",
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "client_name": "MCP Inspector",
    "client_uri": "https://github.com/modelcontextprotocol/inspector",
}
# The MCP Python SDK's defaults: a confidential client using client_secret_post.
PYTHON_SDK = {
    "redirect_uris": ["http://localhost:3030/callback"],
    "token_endpoint_auth_method": "client_secret_post",
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "client_name": "Simple Auth Client",
}
WEB_APP = {
    "client_name": "Hosted Agent",
    "redirect_uris": ["https://agent.example.com/oauth/callback"],
    "token_endpoint_auth_method": "client_secret_basic",
}


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any


async def register(
    daemon: Daemon,
    payload: Any,
    *,
    token: str | None = None,
    content_type: str = "application/json",
) -> Reply:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = payload if isinstance(payload, bytes | str) else json.dumps(payload)
    async with daemon.http.post(daemon.url + "/oauth/register", data=data, headers=headers) as resp:
        return Reply(resp.status, await resp.json(content_type=None), resp.headers)


async def manage(daemon: Daemon, method: str, uri: str, token: str | None) -> Reply:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with daemon.http.request(method, uri, headers=headers) as resp:
        text = await resp.text()
        return Reply(resp.status, json.loads(text) if text else None, resp.headers)


# ----------------------------------------------------------------------------- test CA
@dataclass(frozen=True)
class Pki:
    ca_file: Path
    server_context: ssl.SSLContext


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(directory: Path) -> Pki:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("mcp-oauthd test CA"))
        .issuer_name(_name("mcp-oauthd test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "test-ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file = directory / "server.pem"
    key_file = directory / "server-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return Pki(ca_file, context)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# ----------------------------------------------------------------------------- documents
@dataclass
class DocumentServer:
    """An https server of client metadata documents on 127.0.0.1, counting requests."""

    base: str
    hits: Counter[str] = field(default_factory=Counter)
    stall: asyncio.Event = field(default_factory=asyncio.Event)  # set: stalled ones finish
    gate: asyncio.Event = field(default_factory=asyncio.Event)  # set: gated ones answer
    flaky_ok: bool = False

    def url(self, name: str) -> str:
        return f"{self.base}/clients/{name}"

    def document(self, name: str, **overrides: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "client_id": self.url(name),
            "client_name": "Hosted Agent",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
        doc.update(overrides)
        return doc


def _app(server: DocumentServer) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        server.hits[name] += 1
        doc = server.document(name)
        if name == "good.json":
            return web.json_response(doc, headers={"Cache-Control": "public, max-age=300"})
        if name == "web.json":
            doc["redirect_uris"] = ["https://agent.example.com/oauth/callback"]
            return web.json_response(doc)
        if name == "redirect.json":
            raise web.HTTPFound(server.url("good.json"))
        if name == "big.json":
            doc["padding"] = "x" * 6000
            return web.json_response(doc)
        if name == "endless.json":
            # No Content-Length: the size cap must hold while reading.
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            await response.write(b'{"client_id": "' + b"x" * 1024)
            for _ in range(64):
                await response.write(b"x" * 1024)
            return response
        if name == "slow.json":
            await server.stall.wait()
            return web.json_response(doc)
        if name == "mismatch.json":
            doc["client_id"] = server.url("someone-else.json")
            return web.json_response(doc)
        if name == "html.json":
            return web.Response(text=json.dumps(doc), content_type="text/html")
        if name == "garbage.json":
            return web.Response(text="{not json", content_type="application/json")
        if name == "no-name.json":
            del doc["client_name"]
            return web.json_response(doc)
        if name == "secret.json":
            doc["token_endpoint_auth_method"] = "client_secret_basic"
            return web.json_response(doc)
        if name == "gated.json":
            await server.gate.wait()
            return web.json_response(doc, headers={"Cache-Control": "max-age=600"})
        if name == "flaky.json":
            if not server.flaky_ok:
                raise web.HTTPInternalServerError()
            return web.json_response(doc)
        if name == "expires.json":
            return web.json_response(
                doc,
                headers={
                    "Date": "Wed, 21 Oct 2026 07:28:00 GMT",
                    "Expires": "Wed, 21 Oct 2026 09:28:00 GMT",
                },
            )
        if name == "gzip.json":
            response = web.json_response(doc)
            response.enable_compression(force=web.ContentCoding.gzip)
            return response
        if name == "no-store.json":
            return web.json_response(doc, headers={"Cache-Control": "no-store"})
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/clients/{name}", handle)
    return app


@pytest.fixture
async def documents(pki: Pki) -> AsyncIterator[DocumentServer]:
    port = free_port()
    server = DocumentServer(base=f"https://127.0.0.1:{port}")
    runner = web.AppRunner(_app(server), shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=pki.server_context)
    await site.start()
    try:
        yield server
    finally:
        server.stall.set()
        server.gate.set()
        await runner.cleanup()


def cimd_config(pki: Pki, **overrides: Any) -> dict[str, Any]:
    """The daemon's `cimd:` section for tests against the local document server."""
    config: dict[str, Any] = {
        "enabled": True,
        "allow_loopback_for_tests": True,
        "ca_file": str(pki.ca_file),
        "timeout": 0.5,
        "connect_timeout": 0.5,
    }
    config.update(overrides)
    return config


@pytest.fixture
async def cimd_daemon(daemon_factory: Any, pki: Pki) -> Daemon:
    result: Daemon = await daemon_factory(cimd=cimd_config(pki))
    return result
