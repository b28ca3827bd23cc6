"""Key material: the encryption key ring and the cookie secret.

From the config when given. Otherwise generated once and kept in a 0600 file in the state
directory (beside the SQLite file), so restarts and worker processes share them; a
startup warning says so. For memory storage they live only in memory, like the state.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from mcp_oauthd.config.models import Config, MemoryStorageConfig, SqliteStorageConfig
from mcp_oauthd.security.crypto import KeyRing, Signer, b64u_decode

KEYS_FILE = "mcp-oauthd.keys.json"


@dataclass(frozen=True)
class KeyMaterial:
    keyring: KeyRing
    signer: Signer
    generated: bool  # True when any key came from the generated file


def state_dir(config: Config) -> Path | None:
    """Where generated keys are kept: the configured state_dir, else beside the SQLite
    file, else (a plugin backend that keeps state) the working directory. None only for
    memory storage, whose keys live as long as its state: the process."""
    if config.security.state_dir is not None:
        return config.security.state_dir
    if isinstance(config.storage, SqliteStorageConfig):
        return config.storage.path.expanduser().resolve().parent
    if isinstance(config.storage, MemoryStorageConfig):
        return None
    return Path.cwd()


def _read(path: Path) -> dict[str, str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a key file")
    return {str(k): str(v) for k, v in data.items()}


def _load_or_create(path: Path) -> dict[str, str]:
    if path.exists():
        return _read(path)
    data = {
        "encryption_key_id": "generated-1",
        "encryption_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "cookie_secret": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    }
    # Written whole under a private name, then linked into place. link() fails when the
    # file exists, so when several workers start at once exactly one key file wins and
    # the others read it; nobody ever reads a half-written one (with O_EXCL on the file
    # itself, a worker could read it empty before its creator had written it, and fail
    # to start).
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return _read(path)
    finally:
        temporary.unlink(missing_ok=True)
    return data


def load_key_material(config: Config) -> KeyMaterial:
    sec = config.security
    generated: dict[str, str] | None = None
    if not sec.encryption_keys or sec.cookie_secret is None:
        directory = state_dir(config)
        if directory is None:
            generated = {
                "encryption_key_id": "ephemeral-1",
                "encryption_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
                "cookie_secret": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            }
        else:
            generated = _load_or_create(directory / KEYS_FILE)
    if sec.encryption_keys:
        ring = KeyRing((k.id, b64u_decode(k.key.get_secret_value())) for k in sec.encryption_keys)
    else:
        assert generated is not None
        ring = KeyRing([(generated["encryption_key_id"], b64u_decode(generated["encryption_key"]))])
    if sec.cookie_secret is not None:
        cookie_key = sec.cookie_secret.get_secret_value().encode()
        if len(cookie_key) < 32:
            raise ValueError("security.cookie_secret must be at least 32 characters")
    else:
        assert generated is not None
        cookie_key = b64u_decode(generated["cookie_secret"])
    return KeyMaterial(ring, Signer(cookie_key), generated is not None)
