"""docs/configuration.md is generated from the models and must stay current."""

from __future__ import annotations

from pathlib import Path

from mcp_oauthd.config.reference import iter_field_names, render_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_committed_reference_equals_the_rendered_one() -> None:
    # Regenerate with: python -m mcp_oauthd.config.reference > docs/configuration.md
    assert DOC.read_text(encoding="utf-8") == render_reference()


def test_the_reference_documents_every_key_of_every_section() -> None:
    text = render_reference()
    for section, key in iter_field_names():
        heading = f"## `{section}`" if section else "## Top level"
        assert heading in text
        assert f"| `{key}` |" in text


def test_every_variant_of_a_discriminated_union_has_its_own_table() -> None:
    text = render_reference()
    for tag in ("memory", "sqlite", "redis"):
        assert f"## `storage (type: {tag})`" in text
    for tag in ("local", "oidc", "google", "github"):
        assert f"## `provider (type: {tag})`" in text
