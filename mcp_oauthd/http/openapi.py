"""The OpenAPI 3.1 document of the JSON endpoints, served at ``/openapi.json``.

Written by hand (it is the contract, not a by-product of the code) and kept true by
tests: every JSON route of the app is documented, every documented path is routed, and
schemathesis fuzzes the live daemon against it (tests/security/test_openapi.py).

Paths follow the issuer: with an issuer path (``https://host/auth``) the endpoints are
under it and the metadata is served at every URL of the discovery order, exactly as
:mod:`mcp_oauthd.http.discovery` routes them.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from mcp_oauthd import __version__
from mcp_oauthd.config.models import Config
from mcp_oauthd.http.resource import VERIFY_PATH
from mcp_oauthd.oauth import metadata as md

OPENAPI_PATH = "/openapi.json"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, **headers: Any) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _error(description: str, **headers: Any) -> dict[str, Any]:
    return _json(_ref("Error"), description, **headers)


_NO_STORE = {
    "required": True,
    "description": "RFC 6749 §5.1: responses carrying credentials are never cached.",
    "schema": {"type": "string", "pattern": "no-store"},
}
_RETRY_AFTER = {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}
_CHALLENGE = {
    "required": True,
    "description": "RFC 6750 §3 / RFC 9728 §5.1 bearer challenge.",
    "schema": {"type": "string", "pattern": "^Bearer "},
}
_RATE_LIMITED = _error(
    "Too many requests from this address (`slow_down`).", **{"Retry-After": _RETRY_AFTER}
)
_UNAVAILABLE = _error("Storage is unreachable; retry later.", **{"Retry-After": _RETRY_AFTER})


def _schemas() -> dict[str, Any]:
    string_list = {"type": "array", "items": {"type": "string"}}
    return {
        "Error": {
            "type": "object",
            "description": "RFC 6749 §5.2 error. The description never holds a credential.",
            "required": ["error"],
            "properties": {
                "error": {"type": "string", "pattern": "^[a-z_]+$"},
                "error_description": {"type": "string"},
            },
        },
        "AuthorizationServerMetadata": {
            "type": "object",
            "description": "RFC 8414 authorization server metadata (also served as OIDC "
            "discovery).",
            "required": [
                "issuer",
                "authorization_endpoint",
                "token_endpoint",
                "response_types_supported",
                "code_challenge_methods_supported",
                "grant_types_supported",
                "token_endpoint_auth_methods_supported",
            ],
            "properties": {
                "issuer": {"type": "string", "format": "uri"},
                "authorization_endpoint": {"type": "string", "format": "uri"},
                "token_endpoint": {"type": "string", "format": "uri"},
                "revocation_endpoint": {"type": "string", "format": "uri"},
                "introspection_endpoint": {"type": "string", "format": "uri"},
                "registration_endpoint": {"type": "string", "format": "uri"},
                "jwks_uri": {"type": "string", "format": "uri"},
                "response_types_supported": {"const": ["code"]},
                "code_challenge_methods_supported": {"const": ["S256"]},
                "grant_types_supported": string_list,
                "token_endpoint_auth_methods_supported": string_list,
                "scopes_supported": string_list,
                "authorization_response_iss_parameter_supported": {"const": True},
                "client_id_metadata_document_supported": {"type": "boolean"},
            },
        },
        "ProtectedResourceMetadata": {
            "type": "object",
            "description": "RFC 9728 protected resource metadata.",
            "required": ["resource", "authorization_servers"],
            "properties": {
                "resource": {"type": "string", "format": "uri"},
                "authorization_servers": {**string_list, "minItems": 1},
                "scopes_supported": string_list,
                "bearer_methods_supported": {"const": ["header"]},
                "resource_name": {"type": "string"},
                "jwks_uri": {"type": "string", "format": "uri"},
            },
        },
        "TokenRequest": {
            "type": "object",
            "description": "OAuth 2.1 §3.2.2 token request. Client authentication: HTTP "
            "Basic, or `client_id` (+ `client_secret`) in the body.",
            "required": ["grant_type"],
            # Forms carry each parameter once (RFC 6749 §3.2), as text.
            "additionalProperties": {"type": "string"},
            "properties": {
                "grant_type": {
                    "type": "string",
                    "enum": [
                        "authorization_code",
                        "refresh_token",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ],
                },
                "code": {"type": "string"},
                "code_verifier": {"type": "string"},
                "redirect_uri": {"type": "string"},
                "refresh_token": {"type": "string"},
                "resource": {"type": "string"},
                "scope": {"type": "string"},
                "client_id": {"type": "string"},
                "client_secret": {"type": "string"},
                "subject_token": {"type": "string"},
                "subject_token_type": {"type": "string"},
                "requested_token_type": {"type": "string"},
            },
        },
        "TokenResponse": {
            "type": "object",
            "description": "RFC 6749 §5.1 (code, refresh) or RFC 8693 §2.2.1 (token "
            "exchange: the user's upstream access token) response.",
            "required": ["access_token", "token_type"],
            "properties": {
                "access_token": {"type": "string", "minLength": 1},
                "token_type": {"type": "string"},
                "expires_in": {"type": "integer", "minimum": 0},
                "refresh_token": {"type": "string"},
                "scope": {"type": "string"},
                "issued_token_type": {"type": "string"},
            },
        },
        "RevocationRequest": {
            "type": "object",
            "description": "RFC 7009 §2.1 revocation request.",
            "required": ["token"],
            # Forms carry each parameter once (RFC 6749 §3.2), as text.
            "additionalProperties": {"type": "string"},
            "properties": {
                "token": {"type": "string"},
                "token_type_hint": {"type": "string"},
                "client_id": {"type": "string"},
                "client_secret": {"type": "string"},
            },
        },
        "IntrospectionRequest": {
            "type": "object",
            "description": "RFC 7662 §2.1 introspection request.",
            "required": ["token"],
            # Forms carry each parameter once (RFC 6749 §3.2), as text.
            "additionalProperties": {"type": "string"},
            "properties": {
                "token": {"type": "string"},
                "token_type_hint": {"type": "string"},
            },
        },
        "IntrospectionResponse": {
            "type": "object",
            "description": 'RFC 7662 §2.2. An inactive token gets `{"active": false}` only.',
            "required": ["active"],
            "properties": {
                "active": {"type": "boolean"},
                "scope": {"type": "string"},
                "client_id": {"type": "string"},
                "username": {"type": "string"},
                "email": {"type": "string"},
                "token_type": {"type": "string"},
                "exp": {"type": "integer"},
                "iat": {"type": "integer"},
                "nbf": {"type": "integer"},
                "sub": {"type": "string"},
                "aud": {"type": "string"},
                "iss": {"type": "string"},
                "jti": {"type": "string"},
            },
        },
        "ClientMetadata": {
            "type": "object",
            "description": "RFC 7591 §2 client metadata.",
            "required": ["redirect_uris"],
            "properties": {
                "redirect_uris": {**string_list, "minItems": 1},
                "client_name": {"type": "string"},
                "token_endpoint_auth_method": {
                    "type": "string",
                    "enum": ["none", "client_secret_basic", "client_secret_post"],
                },
                "grant_types": string_list,
                "response_types": string_list,
                "scope": {"type": "string"},
                "application_type": {"type": "string", "enum": ["native", "web"]},
                "client_uri": {"type": "string"},
                "logo_uri": {"type": "string"},
                "tos_uri": {"type": "string"},
                "policy_uri": {"type": "string"},
                "contacts": string_list,
                "software_id": {"type": "string"},
                "software_version": {"type": "string"},
            },
        },
        "ClientInformation": {
            "type": "object",
            "description": "RFC 7591 §3.2.1 / RFC 7592 §3 client information. Secrets "
            "appear once, in the registration response.",
            "required": ["client_id", "redirect_uris", "token_endpoint_auth_method"],
            "properties": {
                "client_id": {"type": "string", "minLength": 1},
                "client_id_issued_at": {"type": "integer"},
                "client_secret": {"type": "string"},
                "client_secret_expires_at": {"type": "integer"},
                "registration_access_token": {"type": "string"},
                "registration_client_uri": {"type": "string", "format": "uri"},
                "redirect_uris": string_list,
                "token_endpoint_auth_method": {"type": "string"},
                "grant_types": string_list,
                "response_types": string_list,
                "application_type": {"type": "string"},
                "client_name": {"type": "string"},
                "scope": {"type": "string"},
            },
        },
        "JsonWebKeySet": {
            "type": "object",
            "description": "RFC 7517 §5: public keys only.",
            "required": ["keys"],
            "properties": {
                "keys": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["kty", "kid"],
                        "properties": {"kty": {"type": "string"}, "kid": {"type": "string"}},
                        # RFC 7517 §4: a private key's parameters are never published.
                        "not": {
                            "anyOf": [{"required": ["d"]}, {"required": ["p"]}, {"required": ["q"]}]
                        },
                    },
                }
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string"}, "storage": {"type": "string"}},
        },
    }


def openapi_document(config: Config) -> dict[str, Any]:
    """The document for this config's paths (they depend on the issuer's path)."""
    prefix = md.issuer_path(config.issuer)
    as_paths = {md.AS_WELL_KNOWN + prefix, md.OIDC_WELL_KNOWN + prefix, prefix + md.OIDC_WELL_KNOWN}
    if prefix:
        as_paths |= {md.AS_WELL_KNOWN, md.OIDC_WELL_KNOWN}
    metadata_op = {
        "get": {
            "operationId": "authorizationServerMetadata",
            "summary": "Authorization server metadata (RFC 8414, OIDC Discovery)",
            "tags": ["discovery"],
            "responses": {"200": _json(_ref("AuthorizationServerMetadata"), "The metadata.")},
        }
    }
    paths: dict[str, Any] = {}
    for index, path in enumerate(sorted(as_paths)):
        op = json.loads(json.dumps(metadata_op))
        op["get"]["operationId"] += "" if index == 0 else str(index + 1)
        paths[path] = op
    prm = {
        "summary": "Protected resource metadata (RFC 9728)",
        "tags": ["discovery"],
        "responses": {
            "200": _json(_ref("ProtectedResourceMetadata"), "The resource's metadata."),
            "404": _error("No protected resource at this path."),
        },
    }
    paths[md.PRM_WELL_KNOWN] = {"get": {**prm, "operationId": "protectedResourceMetadata"}}
    paths[md.PRM_WELL_KNOWN + "/{tail}"] = {
        "get": {
            **prm,
            "operationId": "protectedResourceMetadataByPath",
            "description": "`tail` is the resource URI's path (path-inserted well-known URL).",
            "parameters": [
                {"name": "tail", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
        }
    }
    client_auth: list[dict[str, list[str]]] = [
        {"clientBasic": []},
        {},
    ]  # public clients send client_id in the body
    paths[prefix + md.TOKEN_PATH] = {
        "post": {
            "operationId": "token",
            "summary": "Token endpoint: code exchange, refresh, token exchange (RFC 8693)",
            "tags": ["oauth"],
            "security": client_auth,
            "requestBody": {"required": True, "content": {FORM: {"schema": _ref("TokenRequest")}}},
            "responses": {
                "200": _json(_ref("TokenResponse"), "Tokens.", **{"Cache-Control": _NO_STORE}),
                "400": _error("The request or the grant is not valid."),
                "401": _error("Client authentication failed (`invalid_client`)."),
                "429": _RATE_LIMITED,
                "503": _UNAVAILABLE,
            },
        }
    }
    paths[prefix + md.REVOKE_PATH] = {
        "post": {
            "operationId": "revoke",
            "summary": "Token revocation (RFC 7009); unknown tokens are a success",
            "tags": ["oauth"],
            "security": client_auth,
            "requestBody": {
                "required": True,
                "content": {FORM: {"schema": _ref("RevocationRequest")}},
            },
            "responses": {
                "200": {"description": "Revoked, or unknown."},
                "400": _error("The request is not valid."),
                "401": _error("Client authentication failed (`invalid_client`)."),
                "429": _RATE_LIMITED,
                "503": _UNAVAILABLE,
            },
        }
    }
    paths[prefix + md.REGISTER_PATH] = {
        "post": {
            "operationId": "register",
            "summary": "Dynamic client registration (RFC 7591)",
            "tags": ["registration"],
            # Open by default; `registration.policy: token` requires the bearer.
            "security": [{"initialAccessToken": []}, {}],
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": _ref("ClientMetadata")}},
            },
            "responses": {
                "201": _json(
                    _ref("ClientInformation"), "Registered.", **{"Cache-Control": _NO_STORE}
                ),
                "400": _error("Invalid metadata or redirect URI."),
                "401": _error("A registration access token is required (`policy: token`)."),
                "403": _error("Registration is closed or refused (`access_denied`)."),
                "413": _error("The request body is too large."),
                "429": _RATE_LIMITED,
                "503": _UNAVAILABLE,
            },
        }
    }
    managed = {
        "tags": ["registration"],
        "security": [{"registrationAccessToken": []}],
        "parameters": [
            {"name": "client_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
    }
    paths[prefix + md.REGISTER_PATH + "/{client_id}"] = {
        "get": {
            **managed,
            "operationId": "readClient",
            "summary": "Read a registration (RFC 7592 §2.1)",
            "responses": {
                "200": _json(
                    _ref("ClientInformation"), "The registration.", **{"Cache-Control": _NO_STORE}
                ),
                "401": _error("No valid registration access token for this client."),
                "429": _RATE_LIMITED,
                "503": _UNAVAILABLE,
            },
        },
        "delete": {
            **managed,
            "operationId": "deleteClient",
            "summary": "Delete a registration and everything issued to it (RFC 7592 §2.3)",
            "responses": {
                "204": {"description": "Deleted."},
                "401": _error("No valid registration access token for this client."),
                "429": _RATE_LIMITED,
                "503": _UNAVAILABLE,
            },
        },
    }
    paths[prefix + md.INTROSPECT_PATH] = {
        "post": {
            "operationId": "introspect",
            "summary": "Token introspection for resource servers (RFC 7662)",
            "tags": ["resource servers"],
            "security": [{"resourceServerBasic": []}],
            "requestBody": {
                "required": True,
                "content": {FORM: {"schema": _ref("IntrospectionRequest")}},
            },
            "responses": {
                "200": _json(
                    _ref("IntrospectionResponse"),
                    "The token's state.",
                    **{"Cache-Control": _NO_STORE},
                ),
                "400": _error("The request is not valid."),
                "401": _error("Resource server authentication failed."),
                "429": _RATE_LIMITED,
                "503": _UNAVAILABLE,
            },
        }
    }
    paths[prefix + md.JWKS_PATH] = {
        "get": {
            "operationId": "jwks",
            "summary": "Public keys of JWT access tokens (RFC 7517)",
            "tags": ["resource servers"],
            "responses": {
                "200": {
                    "description": "Previous, current and next public keys.",
                    "content": {"application/jwk-set+json": {"schema": _ref("JsonWebKeySet")}},
                },
                "404": _error("JWT access tokens are off (`tokens.format: opaque`)."),
            },
        }
    }
    paths[prefix + VERIFY_PATH] = {
        "get": {
            "operationId": "verify",
            "summary": "nginx auth_request target: is this bearer good for the resource?",
            "tags": ["resource servers"],
            "security": [{"accessToken": []}],
            "parameters": [
                {
                    "name": "resource",
                    "in": "query",
                    "description": "The resource URI (or the `X-Auth-Resource` header); "
                    "required when several resources are configured.",
                    "required": len(config.resources) > 1,
                    "schema": {"type": "string", "enum": [r.uri for r in config.resources]},
                },
                {
                    "name": "scope",
                    "in": "query",
                    "description": "Space-separated scopes the location needs (or "
                    "`X-Auth-Scope`), among the resource's scopes.",
                    "schema": {"type": "string", "pattern": _scope_list_pattern(config)},
                },
            ],
            "responses": {
                "200": {
                    "description": "Good: identity headers for the MCP server.",
                    "headers": {
                        "X-Auth-Subject": {"required": True, "schema": {"type": "string"}},
                        "X-Auth-Client-Id": {"required": True, "schema": {"type": "string"}},
                        "X-Auth-Scopes": {"schema": {"type": "string"}},
                    },
                },
                "400": _error("The resource or scope named is not configured."),
                "401": _error("No or a bad token.", **{"WWW-Authenticate": _CHALLENGE}),
                "403": _error("Insufficient scope.", **{"WWW-Authenticate": _CHALLENGE}),
                "429": _RATE_LIMITED,
                "503": _UNAVAILABLE,
            },
        }
    }
    paths["/healthz"] = {
        "get": {
            "operationId": "healthz",
            "summary": "Liveness",
            "tags": ["operations"],
            "responses": {"200": _json(_ref("Health"), "Alive.")},
        }
    }
    paths["/readyz"] = {
        "get": {
            "operationId": "readyz",
            "summary": "Readiness: storage reachable, keys loaded",
            "tags": ["operations"],
            "responses": {
                "200": _json(_ref("Health"), "Ready."),
                "503": _json(_ref("Health"), "Not ready.", **{"Retry-After": _RETRY_AFTER}),
            },
        }
    }
    paths[OPENAPI_PATH] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["operations"],
            "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mcp-oauthd",
            "version": __version__,
            "description": "OAuth 2.1 authorization server for MCP servers: the JSON "
            "endpoints. The browser endpoints (authorize, consent, login, callback) are HTML "
            "and are not described here.",
        },
        "servers": [{"url": _origin(config.issuer)}],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "clientBasic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "client_secret_basic (RFC 6749 §2.3.1).",
                },
                "resourceServerBasic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "A resource's introspection_client_id and secret.",
                },
                "initialAccessToken": {"type": "http", "scheme": "bearer"},
                "registrationAccessToken": {"type": "http", "scheme": "bearer"},
                "accessToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def _scope_list_pattern(config: Config) -> str:
    names = sorted({re.escape(s) for r in config.resources for s in r.scopes})
    one = "(" + "|".join(names) + ")"
    return f"^({one}( {one})*)?$"


def _origin(issuer: str) -> str:
    parts = urlsplit(issuer)
    return f"{parts.scheme}://{parts.netloc}"


def add_routes(app: web.Application, config: Config) -> None:
    body = json.dumps(openapi_document(config)).encode()

    async def openapi(_: web.Request) -> web.Response:
        response = web.Response(body=body, content_type=JSON)
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    app.router.add_get(OPENAPI_PATH, openapi)
