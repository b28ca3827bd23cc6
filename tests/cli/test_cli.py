"""The mcp-oauthd command line, called in-process (plus one real subprocess)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from mcp_oauthd import __version__
from mcp_oauthd.cli import main
from mcp_oauthd.config.models import Config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.yaml"
GOOD = """\
issuer: https://auth.example.com
storage: {{type: sqlite, path: {db}}}
resources:
  - uri: https://mcp.example.com/mcp
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MCP_OAUTHD_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def good(tmp_path: Path) -> str:
    return GOOD.format(db=tmp_path / "state.db")


def files_in(tmp_path: Path) -> set[str]:
    return {p.name for p in tmp_path.iterdir()}


def check_bad(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> tuple[list[str], str]:
    """Run check-config on a broken config; return its stderr lines and all output."""
    path = write(tmp_path, text)
    assert main(["check-config", "--config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "OK" not in out
    assert files_in(tmp_path) == {"config.yaml"}  # nothing written
    return err.splitlines(), out + err


# --------------------------------------------------------------------------- check-config
def test_check_config_passes_the_example_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(EXAMPLE)]) == 0
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "OK"
    assert all(line.startswith("warning: ") for line in lines[1:])
    assert any("provider.users.0.password_hash" in line for line in lines)


def test_check_config_passes_the_embedded_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "OK"
    assert "warning: issuer: plain http issuer" in out
    assert "embedded defaults" in err


def test_check_config_reads_the_path_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "MCP_OAUTHD_CONFIG", str(write(tmp_path, good(tmp_path).replace("issuer", "isuer")))
    )
    assert main(["check-config"]) == 1
    assert "isuer: unknown key" in capsys.readouterr().err


def test_a_misspelt_key_is_one_line_naming_it_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines, _ = check_bad(tmp_path, capsys, good(tmp_path).replace("issuer:", "isuer:"))
    assert "isuer: unknown key (fix: did you mean 'issuer'?)" in lines


def test_a_missing_env_var_is_one_line_naming_field_and_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = good(tmp_path).replace("https://auth.example.com", "${NOT_SET_ANYWHERE_42}")
    lines, _ = check_bad(tmp_path, capsys, text)
    assert lines == [
        "issuer: environment variable NOT_SET_ANYWHERE_42 is not set "
        "(fix: export NOT_SET_ANYWHERE_42, or write ${NOT_SET_ANYWHERE_42:-default})"
    ]


def test_a_missing_secret_file_is_one_line_naming_field_and_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = good(tmp_path) + "security:\n  cookie_secret: {file: /nonexistent/cookie}\n"
    lines, _ = check_bad(tmp_path, capsys, text)
    assert lines == [
        "security.cookie_secret: secret file /nonexistent/cookie does not exist "
        "(fix: create it or fix the path)"
    ]


def test_an_http_issuer_on_a_public_host_is_one_line_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = good(tmp_path).replace("https://auth.example.com", "http://auth.example.com")
    [line], _ = check_bad(tmp_path, capsys, text)
    assert line.startswith("issuer: the issuer must use https except on loopback")
    assert line.endswith("(fix: put mcp-oauthd behind TLS and use its https URL)")


def test_a_sqlite_path_in_a_missing_directory_is_one_line_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD.format(db=tmp_path / "no" / "such" / "dir" / "state.db")
    lines, _ = check_bad(tmp_path, capsys, text)
    assert lines == [
        f"storage.path: directory {tmp_path / 'no' / 'such' / 'dir'} does not exist "
        "(fix: create it or choose another path)"
    ]


def test_a_sqlite_path_that_cannot_be_written_is_one_line_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.yaml").write_text("", encoding="utf-8")
    # A regular file as the parent directory: unwritable even for root.
    text = GOOD.format(db=tmp_path / "config.yaml" / "state.db")
    [line], _ = check_bad(tmp_path, capsys, text)
    assert line.startswith("storage.path: directory ")
    assert line.endswith("(fix: create it or choose another path)")


def test_several_problems_are_each_reported_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        good(tmp_path).replace("issuer:", "isuer:")
        + "tokens: {acess_token_ttl: 1h}\nsecurity: {cookie_secret: {env: NOT_SET_ANYWHERE_42}}\n"
    )
    lines, _ = check_bad(tmp_path, capsys, text)
    assert len(lines) == 4
    assert {line.split(":")[0] for line in lines} == {
        "issuer",
        "isuer",
        "tokens.acess_token_ttl",
        "security.cookie_secret",
    }
    assert all("(fix: " in line for line in lines)


def test_interpolation_defaults_apply_in_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = good(tmp_path).replace(
        "https://auth.example.com", "${NOT_SET_ANYWHERE_42:-https://a.example.com}"
    )
    assert main(["check-config", "--config", str(write(tmp_path, text))]) == 0
    assert capsys.readouterr().out.startswith("OK\n")


def test_secret_values_are_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "Sup3r-Secret-Value-xyzzy"
    monkeypatch.setenv("A_SECRET", secret)
    text = good(tmp_path).replace("issuer:", "isuer:") + (
        "security:\n"
        f"  cookie_secret: {{value: {secret}, file: x}}\n"
        f"  encryption_keys: [{{id: k, key: {secret}}}]\n"
        "clients:\n"
        f"  - {{client_id: c, client_secret: '${{A_SECRET}}',\n"
        f"      redirect_uris: [{secret}], x: {secret}}}\n"
        f"tokens: {{code_ttl: {secret}}}\n"
    )
    lines, output = check_bad(tmp_path, capsys, text)
    assert len(lines) >= 5
    assert secret not in output


def test_serve_with_a_broken_config_prints_problems_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, good(tmp_path).replace("issuer:", "isuer:"))
    assert main(["serve", "--config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert "isuer: unknown key (fix: did you mean 'issuer'?)" in err.splitlines()
    assert "Traceback" not in out + err
    assert files_in(tmp_path) == {"config.yaml"}


# --------------------------------------------------------------------------- serve
@pytest.fixture
def fake_app(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """Replace mcp_oauthd.server.run with one that records its config."""
    import mcp_oauthd.server

    served: list[Config] = []

    def run(config: Config, **_: object) -> int:
        served.append(config)
        return 0

    monkeypatch.setattr(mcp_oauthd.server, "run", run)
    return served


def test_serve_without_config_runs_the_defaults_with_a_note_and_warnings(
    fake_app: list[Config], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve"]) == 0
    [config] = fake_app
    assert config.issuer == "http://localhost:8080"
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "embedded defaults" in lines[0]
    assert "warning: provider.users.0.password_hash: user demo has the demo password" in err


def test_serve_passes_the_loaded_config_to_the_app(fake_app: list[Config], tmp_path: Path) -> None:
    assert main(["serve", "--config", str(write(tmp_path, good(tmp_path)))]) == 0
    assert fake_app[0].issuer == "https://auth.example.com"


def test_an_unexpected_error_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mcp_oauthd.server

    def run(config: Config, **_: object) -> int:
        raise OSError("address already in use")

    monkeypatch.setattr(mcp_oauthd.server, "run", run)
    assert main(["serve"]) == 1
    err = capsys.readouterr().err
    assert "mcp-oauthd: error: OSError: address already in use" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- others
def test_hash_password_from_stdin_prints_a_verifiable_argon2id_hash(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse battery\n"))
    assert main(["hash-password"]) == 0
    digest = capsys.readouterr().out.strip()
    assert digest.startswith("$argon2id$")
    assert PasswordHasher().verify(digest, "correct horse battery")


def test_hash_password_refuses_an_empty_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    assert main(["hash-password"]) == 1
    assert "empty" in capsys.readouterr().err


def test_hash_password_on_a_tty_asks_twice_and_compares(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    answers = iter(["one", "two"])
    monkeypatch.setattr(sys, "stdin", Tty())
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert main(["hash-password"]) == 1
    assert "do not match" in capsys.readouterr().err


def test_version_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out == f"mcp-oauthd {__version__}\n"


def test_no_command_prints_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: mcp-oauthd" in capsys.readouterr().err


def test_the_real_console_entry_point_checks_a_config(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MCP_OAUTHD_CONFIG", None)
    bad = write(tmp_path, good(tmp_path).replace("issuer:", "isuer:"))
    ok = subprocess.run(
        [sys.executable, "-m", "mcp_oauthd", "check-config", "--config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK\n")
    broken = subprocess.run(
        [sys.executable, "-m", "mcp_oauthd", "check-config", "--config", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert broken.returncode == 1
    assert "isuer: unknown key (fix: did you mean 'issuer'?)" in broken.stderr
    assert "Traceback" not in broken.stderr
