"""load_config: YAML, ${VAR} interpolation, secret sources and readable problems."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mcp_oauthd.config.loader import ConfigError, Problem, load_config
from mcp_oauthd.config.models import Config, LocalProviderConfig, SqliteStorageConfig

MINIMAL = """\
issuer: https://auth.example.com
storage: {{type: sqlite, path: {db}}}
resources:
  - uri: https://mcp.example.com/mcp
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def minimal(tmp_path: Path, extra: str = "") -> str:
    return MINIMAL.format(db=tmp_path / "state.db") + extra


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ or {})
    return caught.value.problems


def test_a_minimal_config_validates_into_a_frozen_model(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, minimal(tmp_path)), environ={})
    assert isinstance(config, Config)
    assert config.issuer == "https://auth.example.com"
    assert config.default_resource.uri == "https://mcp.example.com/mcp"


def test_no_path_loads_the_embedded_laptop_defaults() -> None:
    config = load_config(None, environ={})
    assert config.issuer == "http://localhost:8080"
    assert isinstance(config.storage, SqliteStorageConfig)
    assert config.storage.path == Path("mcp-oauthd.db")
    assert isinstance(config.provider, LocalProviderConfig)
    assert [u.username for u in config.provider.users] == ["demo"]
    assert config.default_resource.uri == "http://localhost:8000/mcp"
    assert config.default_resource.scopes == ["mcp"]
    assert config.clients[0].client_id == "demo-client"
    assert config.clients[0].client_secret is None
    assert config.clients[0].redirect_uris == ["http://127.0.0.1/callback"]


def test_the_demo_user_password_is_demo() -> None:
    from argon2 import PasswordHasher

    config = load_config(None, environ={})
    assert isinstance(config.provider, LocalProviderConfig)
    assert PasswordHasher().verify(config.provider.users[0].password_hash, "demo")


def test_a_misspelt_key_names_the_key_and_suggests_the_right_one(tmp_path: Path) -> None:
    text = minimal(tmp_path).replace("issuer:", "isuer:")
    problems = problems_of(write(tmp_path, text))
    assert Problem("isuer", "unknown key", "did you mean 'issuer'?") in problems
    assert Problem("issuer", "required key is missing", "add it") in problems


def test_a_misspelt_nested_key_gets_a_dotted_path(tmp_path: Path) -> None:
    text = minimal(tmp_path, "tokens:\n  acess_token_ttl: 1h\n")
    assert problems_of(write(tmp_path, text)) == [
        Problem("tokens.acess_token_ttl", "unknown key", "did you mean 'access_token_ttl'?")
    ]


def test_errors_inside_a_discriminated_union_drop_the_tag_from_the_path(tmp_path: Path) -> None:
    text = minimal(tmp_path).replace("path:", "pth:")
    problems = problems_of(write(tmp_path, text))
    assert problems == [Problem("storage.pth", "unknown key", "did you mean 'path'?")]


def test_an_unknown_storage_type_suggests_the_closest_one(tmp_path: Path) -> None:
    text = minimal(tmp_path).replace("type: sqlite", "type: sqlit")
    assert problems_of(write(tmp_path, text)) == [
        Problem("storage.type", "unknown type", "did you mean 'sqlite'?")
    ]


def test_list_items_are_named_by_index(tmp_path: Path) -> None:
    text = minimal(tmp_path, "  - uri: not-a-url\n")
    [problem] = problems_of(write(tmp_path, text))
    assert problem.path == "resources.1.uri"
    assert "absolute http(s) URL" in problem.message


def test_a_missing_env_var_names_the_field_and_the_variable(tmp_path: Path) -> None:
    text = minimal(tmp_path).replace("https://auth.example.com", "${ISSUER_URL}")
    assert problems_of(write(tmp_path, text)) == [
        Problem(
            "issuer",
            "environment variable ISSUER_URL is not set",
            "export ISSUER_URL, or write ${ISSUER_URL:-default}",
        )
    ]


def test_every_missing_env_var_is_reported_at_once(tmp_path: Path) -> None:
    text = minimal(tmp_path, "clients:\n  - client_id: ${CID}\n    redirect_uris: ['${CB}']\n")
    paths = {p.path for p in problems_of(write(tmp_path, text))}
    assert paths == {"clients.0.client_id", "clients.0.redirect_uris.0"}


def test_interpolation_uses_the_environment_then_the_default(tmp_path: Path) -> None:
    text = minimal(tmp_path).replace(
        "https://auth.example.com", "https://${HOST:-auth.example.com}${SUFFIX:-}"
    )
    path = write(tmp_path, text)
    assert load_config(path, environ={}).issuer == "https://auth.example.com"
    assert load_config(path, environ={"HOST": "id.example.org"}).issuer == "https://id.example.org"
    # ':-' also replaces an empty value, like the shell.
    assert load_config(path, environ={"HOST": ""}).issuer == "https://auth.example.com"


def test_interpolated_numbers_and_booleans_are_coerced(tmp_path: Path) -> None:
    text = minimal(tmp_path, "server: {port: '${PORT:-9090}'}\nconsent: {enabled: '${C}'}\n")
    config = load_config(write(tmp_path, text), environ={"C": "false"})
    assert config.server.port == 9090
    assert config.consent.enabled is False


def test_a_doubled_dollar_escapes_interpolation(tmp_path: Path) -> None:
    text = minimal(tmp_path, "    name: cost $${PRICE}\n")
    config = load_config(write(tmp_path, text), environ={"PRICE": "1"})
    assert config.resources[0].name == "cost ${PRICE}"


def test_a_malformed_reference_is_a_problem(tmp_path: Path) -> None:
    text = minimal(tmp_path).replace("https://mcp.example.com/mcp", "https://${HOST/mcp")
    [problem] = problems_of(write(tmp_path, text))
    assert problem.path == "resources.0.uri"
    assert "malformed" in problem.message


def test_a_secret_env_source_reads_the_given_environment(tmp_path: Path) -> None:
    text = minimal(tmp_path, "security:\n  cookie_secret: {env: COOKIE}\n")
    config = load_config(write(tmp_path, text), environ={"COOKIE": "c00kie"})
    assert config.security.cookie_secret is not None
    assert config.security.cookie_secret.get_secret_value() == "c00kie"


def test_a_secret_env_source_that_is_unset_is_a_problem(tmp_path: Path) -> None:
    text = minimal(tmp_path, "security:\n  cookie_secret: {env: COOKIE}\n")
    assert problems_of(write(tmp_path, text)) == [
        Problem(
            "security.cookie_secret",
            "environment variable COOKIE is not set",
            "export it or use 'file'",
        )
    ]


def test_a_secret_file_that_does_not_exist_names_the_field_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "secret.txt"
    text = minimal(tmp_path, f"security:\n  cookie_secret: {{file: {missing}}}\n")
    assert problems_of(write(tmp_path, text)) == [
        Problem(
            "security.cookie_secret",
            f"secret file {missing} does not exist",
            "create it or fix the path",
        )
    ]


def test_a_secret_file_is_read_and_trimmed(tmp_path: Path) -> None:
    secret = write(tmp_path, "s3cret\n", "secret.txt")
    text = minimal(tmp_path, f"security:\n  cookie_secret: {{file: {secret}}}\n")
    config = load_config(write(tmp_path, text), environ={})
    assert config.security.cookie_secret is not None
    assert config.security.cookie_secret.get_secret_value() == "s3cret"


def test_an_http_issuer_on_a_public_host_is_refused_with_the_fix(tmp_path: Path) -> None:
    text = minimal(tmp_path).replace("https://auth.example.com", "http://auth.example.com")
    [problem] = problems_of(write(tmp_path, text))
    assert problem.path == "issuer"
    assert "https" in problem.message
    assert problem.hint == "put mcp-oauthd behind TLS and use its https URL"


def test_an_http_issuer_on_loopback_is_allowed(tmp_path: Path) -> None:
    text = minimal(tmp_path).replace("https://auth.example.com", "http://127.0.0.1:9000")
    assert load_config(write(tmp_path, text), environ={}).issuer == "http://127.0.0.1:9000"


def test_a_sqlite_path_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    text = MINIMAL.format(db=tmp_path / "absent" / "state.db")
    [problem] = problems_of(write(tmp_path, text))
    assert problem == Problem(
        "storage.path",
        f"directory {tmp_path / 'absent'} does not exist",
        "create it or choose another path",
    )


def test_a_sqlite_path_under_a_regular_file_is_refused(tmp_path: Path) -> None:
    blocker = write(tmp_path, "", "blocker")
    text = MINIMAL.format(db=blocker / "state.db")
    [problem] = problems_of(write(tmp_path, text))
    assert problem.path == "storage.path"
    assert "does not exist" in problem.message


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_a_sqlite_path_in_a_read_only_directory_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        [problem] = problems_of(write(tmp_path, MINIMAL.format(db=locked / "state.db")))
    finally:
        locked.chmod(0o700)
    assert problem == Problem(
        "storage.path", f"directory {locked} is not writable", "fix its permissions"
    )


def test_several_problems_are_reported_in_one_run(tmp_path: Path) -> None:
    text = """\
isuer: https://auth.example.com
server: {port: lots}
tokens: {code_ttl: 1h}
resources: []
"""
    paths = [p.path for p in problems_of(write(tmp_path, text))]
    assert sorted(paths) == ["issuer", "isuer", "resources", "server.port", "tokens.code_ttl"]


def test_cross_field_problems_are_attributed_to_their_section(tmp_path: Path) -> None:
    text = minimal(tmp_path, "  - uri: https://mcp.example.com/mcp\n")
    assert problems_of(write(tmp_path, text)) == [
        Problem("resources", "each uri may appear once", "see docs/configuration.md")
    ]


def test_a_bad_password_hash_points_at_hash_password(tmp_path: Path) -> None:
    text = minimal(
        tmp_path, "provider:\n  type: local\n  users:\n    - {username: a, password_hash: x}\n"
    )
    [problem] = problems_of(write(tmp_path, text))
    assert problem.path == "provider.users.0.password_hash"
    assert "hash-password" in problem.hint


def test_yaml_syntax_errors_give_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "issuer: https://a.example\nserver:\n  port: [1, 2\n")
    [problem] = problems_of(path)
    assert problem.path.startswith(f"{path}:")
    line, column = problem.path.rsplit(":", 2)[1:]
    assert int(line) >= 3
    assert int(column) >= 1
    assert problem.message.startswith("YAML syntax error")


def test_duplicate_keys_are_an_error_not_a_silent_override(tmp_path: Path) -> None:
    path = write(tmp_path, minimal(tmp_path) + "issuer: https://other.example.com\n")
    [problem] = problems_of(path)
    assert "duplicate key 'issuer'" in problem.message
    assert problem.path == f"{path}:5:1"


def test_an_empty_file_or_a_non_mapping_is_a_problem(tmp_path: Path) -> None:
    assert problems_of(write(tmp_path, ""))[0].message == "the config is empty"
    assert "mapping" in problems_of(write(tmp_path, "- a\n- b\n"))[0].message


def test_a_missing_config_file_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path / "absent.yaml")
    assert problem.message == "config file not found"


def test_no_problem_message_echoes_a_secret_value(tmp_path: Path) -> None:
    secret = "hunter2-very-secret"
    text = minimal(
        tmp_path,
        f"""\
security:
  cookie_secret: {{value: {secret}, extra: 1}}
  encryption_keys:
    - {{id: k1, key: {secret}}}
provider:
  type: oidc
  issuer: https://idp.example.com
  client_id: x
  client_secret: {{value: {secret}}}
  clientsecret: {secret}
tokens: {{access_token_ttl: {secret}}}
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ={})
    rendered = str(caught.value) + repr(caught.value.problems)
    assert len(caught.value.problems) >= 4
    assert secret not in rendered


def test_a_config_error_renders_one_line_per_problem() -> None:
    error = ConfigError([("a.b", "bad", "fix it"), ("c", "worse", "")])
    assert str(error) == "a.b: bad (fix: fix it)\nc: worse"
