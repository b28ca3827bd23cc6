"""Every comparison of a secret is constant-time and every secret comes from `secrets`:
checked on the package source, so a new `==` on a token or a `random` import fails CI.

The name-based check is deliberately broad (any operand named like a secret, token,
verifier, CSRF value, MAC, nonce, hash, code, state or key); the few comparisons it
flags that are not secret comparisons are listed in ``REVIEWED`` with the reason.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

from mcp_oauthd.security.crypto import constant_time_equals

PACKAGE = Path(__file__).resolve().parents[2] / "mcp_oauthd"
# Test helpers shipped in the package compare fixtures, not credentials.
SKIP = ("testing/",)

SECRETISH = re.compile(
    r"(^|_)(secret|password|passwd|verifier|csrf|mac|signature|nonce|digest|challenge|"
    r"token|hash|code|state|key)s?(_|$)",
    re.IGNORECASE,
)
# Names that contain a secret-ish word but hold metadata about one.
NOT_SECRET = re.compile(
    r"(token_type|type_hint|auth_method|_endpoint|_kind|status|expires|_at$|_ids?$|prefix|"
    r"_uri|_url|grant_type|_ttl|_path|_name$|_count$|_len|_length|key_type)",
    re.IGNORECASE,
)

# (file, source of the comparison): why it is not a secret comparison.
REVIEWED = {
    ("service/registration.py", "client.registered_ip != key"): "an IP rate key, public",
}


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return str(node.slice.value)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    ):
        return str(node.args[0].value)
    return None


def _secretish(node: ast.expr) -> bool:
    name = _name(node)
    if name is None or name.isupper():  # module constants (grant type URNs, prefixes)
        return False
    return bool(SECRETISH.search(name)) and not NOT_SECRET.search(name)


@functools.cache
def _sources() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(SKIP):
            continue
        out.append((relative, ast.parse(path.read_text(encoding="utf-8"))))
    return out


def secret_equality_comparisons() -> list[tuple[str, int, str]]:
    """Every `==` / `!=` with an operand named like a secret, except against a literal
    (`token == ""`, `method != "S256"` compare with public constants)."""
    found = []
    for relative, tree in _sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
                if not isinstance(op, ast.Eq | ast.NotEq):
                    continue
                if isinstance(left, ast.Constant) or isinstance(right, ast.Constant):
                    continue
                if _secretish(left) or _secretish(right):
                    found.append((relative, node.lineno, ast.unparse(node)))
                    break
    return found


def test_no_secret_is_compared_with_equality_outside_the_reviewed_cases() -> None:
    unreviewed = [
        f"{file}:{line}: {source}"
        for file, line, source in secret_equality_comparisons()
        if (file, source) not in REVIEWED
    ]
    assert unreviewed == [], (
        "compare secrets with mcp_oauthd.security.crypto.constant_time_equals (or "
        "hmac.compare_digest); if this is not a secret, add it to REVIEWED with the reason"
    )


def test_every_reviewed_exception_still_exists() -> None:
    """A stale allow-list entry would hide a future regression at the same place."""
    present = {(file, source) for file, _, source in secret_equality_comparisons()}
    assert set(REVIEWED) <= present


def test_the_checker_catches_a_plain_comparison_of_a_secret() -> None:
    tree = ast.parse("ok = presented_secret == client.secret_hash or csrf != expected_csrf")
    flagged = [
        ast.unparse(n)
        for n in ast.walk(tree)
        if isinstance(n, ast.Compare) and any(_secretish(x) for x in (n.left, *n.comparators))
    ]
    assert len(flagged) == 2


FORBIDDEN_RANDOMNESS = {
    "random": "the random module is not a CSPRNG",
    "numpy.random": "not a CSPRNG",
}
FORBIDDEN_CALLS = {
    ("uuid", "uuid1"): "time and MAC based",
    ("uuid", "uuid4"): "use secrets for anything that must not be guessed",
    ("os", "urandom"): "use secrets, the one source of secret randomness",
}


def test_every_random_value_comes_from_the_secrets_module() -> None:
    problems = []
    for relative, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                problems += [
                    f"{relative}:{node.lineno}: import {a.name}"
                    for a in node.names
                    if a.name in FORBIDDEN_RANDOMNESS
                ]
            elif isinstance(node, ast.ImportFrom) and node.module in FORBIDDEN_RANDOMNESS:
                problems.append(f"{relative}:{node.lineno}: from {node.module} import ...")
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and (node.value.id, node.attr) in FORBIDDEN_CALLS
            ):
                problems.append(f"{relative}:{node.lineno}: {node.value.id}.{node.attr}")
    assert problems == []


def test_the_secret_generators_use_the_secrets_module() -> None:
    """The generators every credential goes through (tokens, codes, PKCE, keys, CSRF
    nonces) call `secrets`, so the rule above covers every credential."""
    for module in ("security/crypto.py", "oauth/pkce.py", "security/keys.py"):
        tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
        calls = {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "secrets"
        }
        assert calls & {"token_urlsafe", "token_bytes", "token_hex"}, module


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [("s3cret", "s3cret", True), ("s3cret", "s3creT", False), ("short", "a-much-longer", False)],
)
def test_constant_time_equals_compares_values_of_any_length(a: str, b: str, equal: bool) -> None:
    assert constant_time_equals(a, b) is equal
