"""Generated key material (no keys configured): one 0600 file in the state directory that
every worker and restart shares, written so that no process ever reads half of it."""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path

import pytest

from mcp_oauthd.config.models import Config
from mcp_oauthd.security import keys
from mcp_oauthd.security.keys import KEYS_FILE, load_key_material
from tests.conftest import base_config
from tests.storage.sqlite_support import race_processes


def sqlite_config(directory: Path) -> Config:
    return base_config(8000, storage={"type": "sqlite", "path": str(directory / "state.db")})


def test_the_generated_keys_are_kept_private_and_reused_on_the_next_start(tmp_path: Path) -> None:
    first = load_key_material(sqlite_config(tmp_path))
    second = load_key_material(sqlite_config(tmp_path))
    assert first.generated and second.generated
    assert first.signer.sign("test", "x") == second.signer.sign("test", "x")
    path = tmp_path / KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [KEYS_FILE]  # no temporary file left


def test_a_worker_that_loses_the_race_reads_the_winners_complete_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker links its file into place between our check and our link: ours is
    dropped and theirs is read whole."""
    theirs = {
        "encryption_key_id": "generated-1",
        "encryption_key": "A" * 43,
        "cookie_secret": "B" * 43,
    }
    real_link = os.link

    def link_after_the_other_worker(src: str, dst: str) -> None:
        Path(dst).write_text(json.dumps(theirs), encoding="utf-8")
        real_link(src, dst)  # FileExistsError, as for the real loser

    monkeypatch.setattr(keys.os, "link", link_after_the_other_worker)
    assert keys._load_or_create(tmp_path / KEYS_FILE) == theirs
    assert [p.name for p in tmp_path.iterdir()] == [KEYS_FILE]


RACER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from mcp_oauthd.security.keys import _load_or_create
    print("ready", flush=True)
    sys.stdin.readline()  # the barrier: every process starts together
    print(json.dumps(_load_or_create(Path(sys.argv[1]))), flush=True)
    """
)


@pytest.mark.parametrize("attempt", range(3))
def test_workers_starting_together_all_get_the_same_keys(tmp_path: Path, attempt: int) -> None:
    path = tmp_path / KEYS_FILE
    results = race_processes(RACER, [[str(path)]] * 6, timeout=60)
    assert all(result == results[0] for result in results)
    assert json.loads(path.read_text(encoding="utf-8")) == results[0]
