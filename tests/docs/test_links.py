"""Every relative link in the docs and the deployment READMEs points at a file or folder
that exists (a renamed recipe or doc must not leave dead links behind)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted(
    [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "deploy").rglob("README.md"),
    ]
)
# [text](target) and [text]: target, outside code spans.
_INLINE = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def relative_links(text: str) -> list[str]:
    text = _CODE.sub("", text)
    targets = _INLINE.findall(text) + _REFERENCE.findall(text)
    return [
        t
        for t in targets
        if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE) and not t.startswith("#")
    ]


def test_there_are_docs_for_every_topic_the_issue_names() -> None:
    names = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert {
        "installation.md",
        "configuration.md",
        "deployment.md",
        "providers.md",
        "security.md",
        "clients.md",
        "operations.md",
    } <= names
    providers = (ROOT / "docs" / "providers.md").read_text()
    for idp in ("Google", "GitHub", "Entra ID", "Okta", "Keycloak", "Dex"):
        assert f"## {idp}" in providers or f"## Microsoft {idp}" in providers, idp
    assert "/oauth/callback" in providers
    clients = (ROOT / "docs" / "clients.md").read_text()
    for client in ("Claude Desktop", "Claude Code", "VS Code", "Cursor", "ChatGPT", "Inspector"):
        assert client in clients, client


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_something_that_exists(doc: Path) -> None:
    dead = []
    for target in relative_links(doc.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0]
        if not path:
            continue
        if not (doc.parent / path).resolve().exists():
            dead.append(target)
    assert dead == [], f"dead links in {doc.relative_to(ROOT)}"


def test_the_link_finder_sees_links_and_skips_code_and_urls() -> None:
    text = "See [a](a.md), [b](../b/#x) and [c](https://x.example).\n`[d](d.md)`\n[e]: e.md\n"
    assert relative_links(text) == ["a.md", "../b/#x", "e.md"]
