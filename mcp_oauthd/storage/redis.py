"""The Redis storage backend: all state shared by several replicas behind a load balancer.

Key scheme
----------
Every key starts with the configured ``key_prefix`` followed by one hash tag,
``{oauthd}``, so a key reads ``<prefix>{oauthd}:<kind>:<id>``::

    client:<client_id>       string  ClientRecord JSON
    cip:<registered_ip>      zset    client ids registered from that IP, scored by their
                                     expires_at (+inf: none), for count_clients_by_ip
    cgrants:<client_id>      set     ids of the client's grants (for delete_client)
    code:<code_hash>         hash    rec=CodeRecord JSON, exp, used=<consumed_at>, unonce
    grant:<grant_id>         hash    rec=GrantRecord JSON, exp, cid, ca=<created_at>,
                                     up=<upstream JSON>, rev=<revoked_at>, nonce
                                     (a tombstone is the same hash with only rev and exp)
    gtok:<grant_id>          set     "a:<hash>" / "r:<hash>": every token of the grant
    at:<token_hash>          string  AccessTokenRecord JSON (the hot path: one GET)
    jti:<jti>                string  token hash of the access token with that jti
    rt:<token_hash>          hash    rec=RefreshTokenRecord JSON, exp, gid,
                                     rot=<rotated_at>, succ=<successor>, rnonce
    consent:<sha256(s,c,r)>  string  ConsentRecord JSON
    sigkey:<kid>             string  SigningKeyRecord JSON (private key encrypted)
    sigkeys                  hash    generation -> kid of every signing key
    eph:<len>:<kind>:<key>   string  {"e": expires_at, "d": data}; the length prefix keeps
                                     kinds from ever sharing a key

Records are frozen pydantic models stored as ``model_dump_json`` text and never edited by
Lua (Lua's cjson would round floats to 14 digits): the fields that change after the write
(``consumed_at``, ``rotated_at``/``successor``, ``upstream``, ``revoked_at``) live in
their own hash fields, written as Python ``repr`` strings, and are merged back in Python.
Lua only *reads* numbers (``tonumber``/``cjson.decode`` are exact), e.g. for the grace
window comparison and for ``gc``.

Atomicity
---------
Every domain operation that touches more than one key, or reads then writes, is one Lua
script (registered once with ``register_script``; a Redis restart that forgets them is
handled by redis-py's NOSCRIPT fallback): ``consume_code``, ``create_grant``,
``revoke_grant``, ``rotate_refresh_token`` (its REUSED branch revokes the grant in the
same script), ``delete_client``, ``delete_access_token``, ``update_grant_upstream``,
``get_access_token_by_jti`` and each ``gc`` batch. ``take_ephemeral`` is ``GETDEL``;
``put_code`` is a MULTI/EXEC transaction. Redis runs a script alone, so no interleaving
is possible: two redemptions of one code, two rotations of one refresh token, or a
``create_grant`` racing a ``revoke_grant`` of the same id always serialise.

Retries and idempotency: connection errors and timeouts are retried with exponential
backoff (redis-py ``Retry``), which also makes the client reconnect by itself after an
outage. A timeout can fire *after* the server ran a script, so the three scripts whose
second run would answer differently carry a random per-call nonce: a retried
``consume_code`` or ``rotate_refresh_token`` recognises its own first run and answers OK
/ ROTATED again instead of REUSED (which would revoke a user's grant), and a retried
``create_grant`` does not fail with "already exists". Boolean results of deletes may read
False after such a retry; that is harmless.

Round trips: every single command and script (all the hot paths: token and client
lookups, rotations, code redemption, ephemeral state) goes through ``CommandPipeliner``:
the commands issued concurrently share one write and one read on one of a few dedicated
connections (auto-pipelining) instead of each paying redis-py's per-command overhead.
Each stays a command of its own, run by Redis alone and in order, so nothing above
changes; only ``put_code``'s MULTI/EXEC, the listings, SCAN and ``ping`` use redis-py's
pool.

The cluster story
-----------------
The hot path needs a token's record from its hash alone (one GET), yet revocation must
delete every token of a grant atomically. With opaque tokens the grant id cannot be
recovered from a token hash, so a per-grant hash tag would force either a pointer lookup
(two round trips on every API call) or a non-atomic revocation across slots (a window in
which a revoked grant's access token still validates). We choose neither: **all keys of
one deployment share the hash tag ``{oauthd}``** (or the first ``{...}`` in
``key_prefix`` if it has one, since Redis hashes the first tag of a key). Consequently:

- single-node Redis, Sentinel and managed primaries: everything is fully atomic;
- Redis Cluster: the key layout is valid (every script touches one slot; scripts derive
  some key names from index sets, all in that same slot), so every operation stays fully
  atomic, but the whole data set lives on one shard. Cluster then buys failover, not
  sharding. The data set is small (about 1 KiB per live token; a million live tokens is a
  gigabyte), so one shard is ample. To run several deployments on one cluster, give each
  its own tag in ``key_prefix`` (``"{tenant-a}:"``).
- This class connects with the standalone ``redis.asyncio.Redis`` client (a
  ``redis://`` or ``rediss://`` URL). Pointing it at a cluster needs a cluster-aware
  proxy or endpoint; a ``RedisCluster`` client is a future change, not a key-layout one.

TTLs
----
Every key has a TTL so nothing survives its purpose even if ``gc`` never runs. TTLs are
derived from the record's own lifetime (``expires_at - issued_at`` and the like) plus a
margin, never from the wall clock, so fake clocks in tests behave. A revoked grant keeps
its TTL (it expires when it would have); a tombstone for a never-created grant id lives
``tombstone_ttl``. Index sets (``gtok``, ``cgrants``) get the longest TTL of their members.
Exceptions: ephemeral state has no issue time, so its TTL is ``expires_at`` minus the
wall clock (floored at the margin, so a fake clock in the past still works); clients
without ``expires_at`` (static or long-lived registrations) have no TTL, and clients with
one get a one-day margin so ``gc`` can revoke their grants before Redis drops them. JWT
signing keys have no TTL either: the key manager deletes each once no token it signed can
still be alive.

``gc(now)`` sweeps the prefix with SCAN and, in one script per batch, deletes records whose
expiry (by the caller's clock) has passed, exactly like the other backends, and removes
dead members from index sets and dangling jti pointers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    BusyLoadingError,
    DataError,
    NoScriptError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from ..config.models import RedisStorageConfig
from ..plugins import StoragePlugin
from .base import (
    AccessTokenRecord,
    ClientRecord,
    CodeRecord,
    ConsentRecord,
    ConsumeResult,
    ConsumeStatus,
    GrantRecord,
    GrantRevoked,
    RefreshTokenRecord,
    RotateResult,
    RotateStatus,
    SigningKeyRecord,
    StorageError,
    StorageUnavailable,
)

#: The hash tag every key of a deployment shares (see the module docstring).
HASH_TAG = "{oauthd}"
#: Added to every record TTL, so Redis never drops a record before the service deems
#: it expired (clock skew between replicas and Redis, in-flight requests).
TTL_MARGIN = 300
#: Clients outlive their expiry this long, so ``gc`` revokes their grants first.
CLIENT_TTL_MARGIN = 86_400
#: How long a tombstone for a never-created grant id is kept (as the memory backend).
DEFAULT_TOMBSTONE_TTL = 86_400
#: Timeouts in seconds.
CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 2.0
PING_TIMEOUT = 1.0
HEALTH_CHECK_INTERVAL = 15
SCAN_COUNT = 500

_RETRYABLE: tuple[type[RedisError], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
)

# ----------------------------------------------------------------------------- Lua
# Shared helpers, prepended to the scripts that need them. ARGV[1] is always the key base
# (prefix + hash tag + ":"); every derived key therefore lives in the same slot.
_LIB = """
local B = ARGV[1]

local function extend_ttl(k, ttl)
  if redis.call('TTL', k) < ttl then redis.call('EXPIRE', k, ttl) end
end

local function drop_access(h)
  local k = B .. 'at:' .. h
  local raw = redis.call('GET', k)
  if not raw then return 0 end
  local rec = cjson.decode(raw)
  local jk = B .. 'jti:' .. rec['jti']
  if redis.call('GET', jk) == h then redis.call('DEL', jk) end
  redis.call('DEL', k)
  redis.call('SREM', B .. 'gtok:' .. rec['grant_id'], 'a:' .. h)
  return 1
end

local function drop_refresh(h)
  local k = B .. 'rt:' .. h
  local gid = redis.call('HGET', k, 'gid')
  if not gid then return 0 end
  redis.call('DEL', k)
  redis.call('SREM', B .. 'gtok:' .. gid, 'r:' .. h)
  return 1
end

local function drop_tokens(gid)
  local idx = B .. 'gtok:' .. gid
  local n = 0
  for _, m in ipairs(redis.call('SMEMBERS', idx)) do
    local h = string.sub(m, 3)
    if string.sub(m, 1, 2) == 'a:' then n = n + drop_access(h) else n = n + drop_refresh(h) end
  end
  redis.call('DEL', idx)
  return n
end

-- Revoke a grant and drop its tokens; 1 if a live grant died. Unknown id: tombstone.
local function revoke(gid, now, tomb_ttl, tomb_until)
  drop_tokens(gid)
  local gk = B .. 'grant:' .. gid
  local g = redis.call('HMGET', gk, 'rec', 'rev')
  if not g[1] then
    redis.call('HSET', gk, 'rev', now, 'exp', tomb_until)
    redis.call('EXPIRE', gk, tomb_ttl)
    return 0
  end
  if g[2] then return 0 end
  redis.call('HSET', gk, 'rev', now)
  return 1
end

-- ARGV slice: hash, json, jti, grant_id, ttl
local function store_access(h, json, jti, gid, ttl)
  drop_access(h)
  redis.call('SET', B .. 'at:' .. h, json, 'EX', ttl)
  redis.call('SET', B .. 'jti:' .. jti, h, 'EX', ttl)
  local idx = B .. 'gtok:' .. gid
  redis.call('SADD', idx, 'a:' .. h)
  extend_ttl(idx, tonumber(ttl))
end

-- ARGV slice: hash, json, expires_at, grant_id, ttl
local function store_refresh(h, json, exp, gid, ttl)
  drop_refresh(h)
  local k = B .. 'rt:' .. h
  redis.call('HSET', k, 'rec', json, 'exp', exp, 'gid', gid)
  redis.call('EXPIRE', k, ttl)
  local idx = B .. 'gtok:' .. gid
  redis.call('SADD', idx, 'r:' .. h)
  extend_ttl(idx, tonumber(ttl))
end
"""

# KEYS[1]=code key. ARGV: now, nonce.
_CONSUME_CODE = """
local r = redis.call('HMGET', KEYS[1], 'rec', 'used', 'unonce')
if not r[1] then return {'missing'} end
if r[2] then
  if r[3] == ARGV[2] then return {'ok', r[1], r[2]} end
  return {'reused', r[1], r[2]}
end
redis.call('HSET', KEYS[1], 'used', ARGV[1], 'unonce', ARGV[2])
return {'ok', r[1], ARGV[1]}
"""

# KEYS: grant, its token index, the client's grant set.
# ARGV: B, gid, grant json, grant exp, client id, created_at, grant ttl, nonce,
#       access (5), refresh (5; hash '' for none).
_CREATE_GRANT = (
    _LIB
    + """
local gid = ARGV[2]
local gk = B .. 'grant:' .. gid
local g = redis.call('HMGET', gk, 'rec', 'rev', 'nonce')
if g[2] then return 'revoked' end
if g[1] then
  if g[3] == ARGV[8] then return 'ok' end
  return 'exists'
end
local ttl = tonumber(ARGV[7])
redis.call('HSET', gk, 'rec', ARGV[3], 'exp', ARGV[4], 'cid', ARGV[5], 'ca', ARGV[6],
  'nonce', ARGV[8])
redis.call('EXPIRE', gk, ttl)
local cg = B .. 'cgrants:' .. ARGV[5]
redis.call('SADD', cg, gid)
extend_ttl(cg, ttl)
store_access(ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13])
if ARGV[14] ~= '' then store_refresh(ARGV[14], ARGV[15], ARGV[16], ARGV[17], ARGV[18]) end
extend_ttl(B .. 'gtok:' .. gid, ttl)
return 'ok'
"""
)

# KEYS: grant, its token index. ARGV: B, gid, now, tombstone ttl, tombstone until.
_REVOKE_GRANT = (
    _LIB
    + """
return revoke(ARGV[2], ARGV[3], ARGV[4], ARGV[5])
"""
)

# KEYS: old refresh token. ARGV: B, old hash, now, grace, successor, nonce,
#       tombstone ttl, tombstone until, access (5), refresh (5).
_ROTATE = (
    _LIB
    + """
local ok = B .. 'rt:' .. ARGV[2]
local o = redis.call('HMGET', ok, 'gid', 'rot', 'succ', 'rnonce')
if not o[1] then return {'missing'} end
local gid = o[1]
local g = redis.call('HMGET', B .. 'grant:' .. gid, 'rec', 'rev')
if (not g[1]) or g[2] then return {'missing'} end
if not o[2] then
  redis.call('HSET', ok, 'rot', ARGV[3], 'succ', ARGV[5], 'rnonce', ARGV[6])
  store_access(ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13])
  store_refresh(ARGV[14], ARGV[15], ARGV[16], ARGV[17], ARGV[18])
  return {'rotated', gid}
end
if o[4] == ARGV[6] then return {'rotated', gid} end
local grace = tonumber(ARGV[4])
if grace > 0 and tonumber(ARGV[3]) - tonumber(o[2]) <= grace then
  return {'grace', gid, o[3]}
end
revoke(gid, ARGV[3], ARGV[7], ARGV[8])
return {'reused', gid}
"""
)

# KEYS: client. ARGV: B, client id, record JSON, ttl ('' for none), registered ip ('' for
# none), index score (expires_at or '+inf'). The per-IP index follows the record: a client
# re-put with another IP leaves its old IP's index.
_PUT_CLIENT = """
local B = ARGV[1]
local old = redis.call('GET', KEYS[1])
if old then
  local ok, rec = pcall(cjson.decode, old)
  if ok and type(rec['registered_ip']) == 'string' and rec['registered_ip'] ~= ARGV[5] then
    redis.call('ZREM', B .. 'cip:' .. rec['registered_ip'], ARGV[2])
  end
end
if ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[4])
end
if ARGV[5] ~= '' then
  local ik = B .. 'cip:' .. ARGV[5]
  local existed = redis.call('EXISTS', ik)
  redis.call('ZADD', ik, ARGV[6], ARGV[2])
  if ARGV[4] == '' then
    redis.call('PERSIST', ik)
  else
    local t = redis.call('TTL', ik)
    if existed == 0 or (t >= 0 and t < tonumber(ARGV[4])) then
      redis.call('EXPIRE', ik, ARGV[4])
    end
  end
end
return 1
"""

# KEYS: client, its grant set. ARGV: B, client id.
_DELETE_CLIENT = (
    _LIB
    + """
local raw = redis.call('GET', B .. 'client:' .. ARGV[2])
if raw then
  local ok, rec = pcall(cjson.decode, raw)
  if ok and type(rec['registered_ip']) == 'string' then
    redis.call('ZREM', B .. 'cip:' .. rec['registered_ip'], ARGV[2])
  end
end
local existed = redis.call('DEL', B .. 'client:' .. ARGV[2])
for _, gid in ipairs(redis.call('SMEMBERS', B .. 'cgrants:' .. ARGV[2])) do
  local g = redis.call('HMGET', B .. 'grant:' .. gid, 'rec', 'ca')
  if g[1] then revoke(gid, g[2], 0, '') end
end
return existed
"""
)

# KEYS: access token. ARGV: B, hash.
_DELETE_ACCESS = (
    _LIB
    + """
return drop_access(ARGV[2])
"""
)

# KEYS: grant. ARGV: upstream JSON.
_UPDATE_UPSTREAM = """
local g = redis.call('HMGET', KEYS[1], 'rec', 'rev')
if (not g[1]) or g[2] then return 0 end
redis.call('HSET', KEYS[1], 'up', ARGV[1])
return 1
"""

# KEYS: jti pointer. ARGV: B.
_ACCESS_BY_JTI = """
local h = redis.call('GET', KEYS[1])
if not h then return false end
return redis.call('GET', ARGV[1] .. 'at:' .. h)
"""

# KEYS: the key record, the generation index. ARGV: record JSON, generation, kid.
_ADD_SIGNING_KEY = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""

# KEYS: the generation index. ARGV: B.
_LIST_SIGNING_KEYS = """
local out = {}
for _, kid in ipairs(redis.call('HVALS', KEYS[1])) do
  local raw = redis.call('GET', ARGV[1] .. 'sigkey:' .. kid)
  if raw then table.insert(out, raw) end
end
return out
"""

# KEYS: the key record, the generation index. ARGV: kid.
_DELETE_SIGNING_KEY = """
local existed = redis.call('DEL', KEYS[1])
local idx = redis.call('HGETALL', KEYS[2])
for i = 1, #idx, 2 do
  if idx[i + 1] == ARGV[1] then redis.call('HDEL', KEYS[2], idx[i]) end
end
return existed
"""

# KEYS: a batch of keys under the base. ARGV: B, now.
_GC = (
    _LIB
    + """
local nowstr = ARGV[2]
local now = tonumber(nowstr)
local bl = string.len(B)
local n = 0

local function json_exp(k, field)
  local raw = redis.call('GET', k)
  if not raw then return nil end
  local v = cjson.decode(raw)[field]
  if type(v) == 'number' then return v end
  return nil
end

for _, k in ipairs(KEYS) do
  local rest = string.sub(k, bl + 1)
  local c = string.find(rest, ':', 1, true)
  if string.sub(k, 1, bl) == B and c then
    local kind = string.sub(rest, 1, c - 1)
    local id = string.sub(rest, c + 1)
    if kind == 'client' then
      local exp = json_exp(k, 'expires_at')
      if exp and exp <= now then
        local ip = cjson.decode(redis.call('GET', k))['registered_ip']
        if type(ip) == 'string' then redis.call('ZREM', B .. 'cip:' .. ip, id) end
        redis.call('DEL', k)
        n = n + 1
        for _, gid in ipairs(redis.call('SMEMBERS', B .. 'cgrants:' .. id)) do
          if redis.call('HEXISTS', B .. 'grant:' .. gid, 'rec') == 1 then
            revoke(gid, nowstr, 0, '')
          end
        end
      end
    elseif kind == 'code' then
      local exp = redis.call('HGET', k, 'exp')
      if exp and tonumber(exp) <= now then n = n + redis.call('DEL', k) end
    elseif kind == 'rt' then
      local exp = redis.call('HGET', k, 'exp')
      if exp and tonumber(exp) <= now then n = n + drop_refresh(id) end
    elseif kind == 'at' then
      local exp = json_exp(k, 'expires_at')
      if exp and exp <= now then n = n + drop_access(id) end
    elseif kind == 'grant' then
      local g = redis.call('HMGET', k, 'exp', 'rec', 'cid')
      if g[1] and tonumber(g[1]) <= now then
        if g[2] then
          n = n + drop_tokens(id)
          redis.call('SREM', B .. 'cgrants:' .. g[3], id)
        end
        n = n + redis.call('DEL', k)
      end
    elseif kind == 'consent' then
      local exp = json_exp(k, 'expires_at')
      if exp and exp <= now then n = n + redis.call('DEL', k) end
    elseif kind == 'eph' then
      local exp = json_exp(k, 'e')
      if exp and exp <= now then n = n + redis.call('DEL', k) end
    elseif kind == 'gtok' then
      for _, m in ipairs(redis.call('SMEMBERS', k)) do
        local tk = B .. 'rt:' .. string.sub(m, 3)
        if string.sub(m, 1, 2) == 'a:' then tk = B .. 'at:' .. string.sub(m, 3) end
        if redis.call('EXISTS', tk) == 0 then redis.call('SREM', k, m) end
      end
    elseif kind == 'cip' then
      for _, m in ipairs(redis.call('ZRANGE', k, 0, -1)) do
        if redis.call('EXISTS', B .. 'client:' .. m) == 0 then redis.call('ZREM', k, m) end
      end
    elseif kind == 'cgrants' then
      for _, gid in ipairs(redis.call('SMEMBERS', k)) do
        if redis.call('EXISTS', B .. 'grant:' .. gid) == 0 then redis.call('SREM', k, gid) end
      end
    elseif kind == 'jti' then
      local h = redis.call('GET', k)
      if h and redis.call('EXISTS', B .. 'at:' .. h) == 0 then redis.call('DEL', k) end
    end
  end
end
return n
"""
)


# ----------------------------------------------------------------------------- helpers
def _f(value: float) -> str:
    """A float as text that parses back to the identical double (Python and Lua)."""
    return repr(float(value))


def _ttl(expires_at: float, issued_at: float, margin: int = TTL_MARGIN) -> int:
    """Seconds a record lives in Redis: its own lifetime plus a margin, at least 1."""
    lifetime = expires_at - issued_at
    if not math.isfinite(lifetime) or lifetime < 0:
        lifetime = 0.0
    return max(1, math.ceil(lifetime) + margin)


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _dump_ephemeral(data: dict[str, Any], expires_at: float) -> str:
    try:
        return json.dumps({"e": expires_at, "d": data}, allow_nan=False)
    except (TypeError, ValueError):
        raise StorageError("ephemeral data must be JSON-serialisable") from None


def _load_ephemeral(raw: str | None, now: float) -> dict[str, Any] | None:
    if raw is None:
        return None
    entry = json.loads(raw)
    if float(entry["e"]) <= now:
        return None
    return cast(dict[str, Any], entry["d"])


# ----------------------------------------------------------------------------- pipelining
#: Dedicated connections of one ``CommandPipeliner``: the most batches in flight at once.
#: Redis runs commands one at a time, so more connections buy no server throughput; fewer
#: mean fuller batches (less CPU here) at the price of waiting for a free connection.
PIPELINE_CONNECTIONS = 8
#: The most commands written in one batch (keeps one batch's replies bounded).
PIPELINE_MAX_BATCH = 256

_Job = tuple[tuple[EncodableT, ...], "asyncio.Future[Any]"]

# hiredis packs a command in C, about ten times faster than redis-py's asyncio client
# does in Python (its sync client uses hiredis the same way, ``HiredisRespSerializer``).
_hiredis_pack: Callable[[tuple[EncodableT, ...]], bytes] | None
try:
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - a dependency (pyproject.toml); redis-py packs then
    _hiredis_pack = None
else:
    _hiredis_pack = cast(Callable[[tuple[EncodableT, ...]], bytes], _pack_command)


class CommandPipeliner:
    """Auto-pipelining: the independent commands issued concurrently share round trips.

    Why: redis-py's asyncio client spends about 70 us of CPU on every command (a pool
    acquire and release under an ``asyncio.Condition``, a task per socket write from
    ``asyncio.wait_for``, a timeout per read, observability hooks, a send and a receive
    system call each), more than the whole rest of an introspection request. Here every
    command submitted while the event loop runs goes out in one write on one of a few
    dedicated connections, and the replies are handed out in order (Redis answers a
    connection's commands in the order they were sent). Under load one batch carries
    dozens of commands; a lone command costs what it did before, minus the overhead.

    Only *independent* commands belong here: each one a whole command or script, named
    by one word ("GET", not "SCRIPT LOAD"). Never a MULTI/EXEC (another caller's command
    could land inside the transaction) nor a command whose meaning depends on connection
    state (SELECT, WATCH, CLIENT ...).

    Failures follow redis-py's own rules: each batch has one deadline (the client's
    ``socket_timeout``); a connection error or timeout disconnects the connection and,
    by the connection's ``Retry``, sends again the commands whose replies had not
    arrived (scripts that a second run would answer differently carry a nonce, see the
    module docstring), and once the retries are spent every waiting caller gets the
    error. A reply error (``ResponseError``, e.g. NOSCRIPT) goes to its own caller only:
    the connection stays in step. Callers never touch a socket: a cancelled caller just
    drops its reply, so a cancellation can never leave a connection out of step (the
    classic asyncio-client bug of handing one caller another caller's reply).
    """

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        max_connections: int = PIPELINE_CONNECTIONS,
        max_batch: int = PIPELINE_MAX_BATCH,
    ) -> None:
        kwargs: dict[str, Any] = dict(pool.connection_kwargs)
        # The deadline covers a whole batch (connect, write, every reply), so the
        # connection itself needs none: that saves a task per write and a timer per read.
        self._deadline: float | None = kwargs.get("socket_timeout")
        kwargs["socket_timeout"] = None
        self._new_connection = partial(pool.connection_class, **kwargs)
        # hiredis encodes text as strict UTF-8, redis-py's default; other settings keep
        # redis-py's own packer.
        encoding = str(kwargs.get("encoding", "utf-8")).lower().replace("_", "-")
        strict = kwargs.get("encoding_errors", "strict") == "strict"
        self._fast_pack = _hiredis_pack if encoding in ("utf-8", "utf8") and strict else None
        self._max_connections = max(1, max_connections)
        self._max_batch = max(1, max_batch)
        self._idle: list[AbstractConnection] = []
        self._busy: set[AbstractConnection] = set()
        self._queue: list[_Job] = []
        self._runners: set[asyncio.Task[None]] = set()
        # A runner was started and has not taken the queue yet: the commands submitted
        # meanwhile join its batch instead of starting runners of their own.
        self._starting = False

    def execute(self, *args: EncodableT) -> asyncio.Future[Any]:
        """Queue one command; the future gets its reply (or its error)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, future))
        if not self._starting and len(self._runners) < self._max_connections:
            self._starting = True
            task = loop.create_task(self._run())
            self._runners.add(task)
            # A task cancelled before it ran never reaches ``_run``'s ``finally``.
            task.add_done_callback(self._runners.discard)
        return future

    async def run_script(
        self, script: AsyncScript, keys: Sequence[str], args: Sequence[EncodableT]
    ) -> Any:
        """EVALSHA, falling back to EVAL when Redis lost the script (a restart or a
        SCRIPT FLUSH); NOSCRIPT means it did not run, so running it now is its first run."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.execute("EVAL", script.script, len(keys), *keys, *args)

    async def aclose(self) -> None:
        """Disconnect; commands in flight or queued fail with a connection error."""
        runners = list(self._runners)
        for task in runners:
            task.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        queued, self._queue = self._queue, []
        _fail([future for _, future in queued], RedisConnectionError("redis client closed"))
        conns = self._idle + list(self._busy)
        self._idle.clear()
        self._busy.clear()
        self._starting = False
        for conn in conns:
            await conn.disconnect()

    async def _run(self) -> None:
        self._starting = False
        conn: AbstractConnection | None = None
        try:
            while self._queue:
                if conn is None:
                    conn = self._idle.pop() if self._idle else self._new_connection()
                    self._busy.add(conn)
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._exchange(conn, batch)
        except Exception as exc:  # pragma: no cover - a broken setting: fail, never hang
            queued, self._queue = self._queue, []
            _fail([future for _, future in queued], exc)
        finally:
            # Leave the runner count now, not in a done callback a loop turn later: a
            # command queued in between would otherwise find every runner slot taken
            # by runners that will never look at the queue again.
            task = asyncio.current_task()
            if task is not None:
                self._runners.discard(task)
            if conn is not None:
                self._busy.discard(conn)
                self._idle.append(conn)

    async def _exchange(self, conn: AbstractConnection, jobs: list[_Job]) -> None:
        batch: list[tuple[list[bytes], asyncio.Future[Any]]] = []
        fast_pack = self._fast_pack
        for args, future in jobs:
            try:
                if fast_pack is None:
                    batch.append((conn.pack_command(*args), future))
                else:
                    batch.append(([fast_pack(args)], future))
            except TypeError as exc:  # hiredis on a bool, None ...: as redis-py says it
                future.set_exception(DataError(str(exc)))
            except Exception as exc:  # an argument that cannot be encoded: its caller only
                future.set_exception(exc)
        if not batch:
            return
        done = 0  # replies handed out so far; a retry sends only the rest

        async def attempt() -> None:
            nonlocal done
            try:
                async with asyncio.timeout(self._deadline):
                    await conn.send_packed_command(
                        [chunk for packed, _ in batch[done:] for chunk in packed]
                    )
                    while done < len(batch):
                        future = batch[done][1]
                        try:
                            reply = await conn.read_response()
                        except ResponseError as exc:  # this command's own error
                            if not future.done():
                                future.set_exception(exc)
                        else:
                            if not future.done():
                                future.set_result(reply)
                        done += 1
            except TimeoutError:
                raise RedisTimeoutError("Timeout talking to redis") from None

        async def failed(error: Exception) -> None:
            await conn.disconnect(nowait=True)  # the retry connects afresh

        try:
            await conn.retry.call_with_retry(attempt, failed)
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else RedisConnectionError("client closed")
            _fail([future for _, future in batch[done:]], error)
            # Out of step or out of retries: nothing more can be read on this connection.
            await conn.disconnect(nowait=True)
            if not isinstance(exc, Exception):
                raise


def _fail(futures: list[asyncio.Future[Any]], error: Exception) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)


class RedisStorage:
    """A ``Storage`` in Redis, shared by every replica (see the module docstring)."""

    name = "redis"

    def __init__(
        self,
        config: RedisStorageConfig,
        *,
        tombstone_ttl: int = DEFAULT_TOMBSTONE_TTL,
        command_timeout: float = COMMAND_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        retries: int = 3,
    ) -> None:
        self._base = f"{config.key_prefix}{HASH_TAG}:"
        self._tombstone_ttl = int(tombstone_ttl)
        # Single commands and scripts (all the hot paths) go through the pipeliner, on
        # its own few connections made with this pool's settings; the pool itself serves
        # the rest (transactions, scans, ping). A blocking pool: with more calls in flight
        # than connections, a call waits (up to the command timeout) for a free
        # connection; the default pool raises "Too many connections" instead, a 503
        # under load (bench/README.md).
        pool = BlockingConnectionPool.from_url(
            config.url.get_secret_value(),
            decode_responses=True,
            socket_connect_timeout=connect_timeout,
            socket_timeout=command_timeout,
            socket_keepalive=True,
            health_check_interval=HEALTH_CHECK_INTERVAL,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), retries, _RETRYABLE),
            retry_on_error=list(_RETRYABLE),
            max_connections=64,
            timeout=command_timeout,
        )
        self._redis: Redis = Redis.from_pool(pool)
        self._pipe = CommandPipeliner(pool)
        r = self._redis
        self._consume_code = r.register_script(_CONSUME_CODE)
        self._create_grant = r.register_script(_CREATE_GRANT)
        self._revoke_grant = r.register_script(_REVOKE_GRANT)
        self._rotate = r.register_script(_ROTATE)
        self._put_client = r.register_script(_PUT_CLIENT)
        self._delete_client = r.register_script(_DELETE_CLIENT)
        self._delete_access = r.register_script(_DELETE_ACCESS)
        self._update_upstream = r.register_script(_UPDATE_UPSTREAM)
        self._access_by_jti = r.register_script(_ACCESS_BY_JTI)
        self._gc = r.register_script(_GC)
        self._add_signing_key = r.register_script(_ADD_SIGNING_KEY)
        self._list_signing_keys = r.register_script(_LIST_SIGNING_KEYS)
        self._delete_signing_key = r.register_script(_DELETE_SIGNING_KEY)

    # ----------------------------------------------------------------- plumbing
    def _k(self, kind: str, ident: str) -> str:
        return f"{self._base}{kind}:{ident}"

    async def _call(self, what: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run one Redis exchange, translating outages into ``StorageUnavailable``.

        Messages name the operation only: never the URL (it may hold a password), a key
        or a token hash.
        """
        try:
            return await fn()
        except _RETRYABLE as exc:
            raise StorageUnavailable(
                f"redis unavailable during {what} ({type(exc).__name__})"
            ) from None
        except RedisError as exc:
            raise StorageError(f"redis error during {what} ({type(exc).__name__})") from None

    async def _cmd(self, what: str, *args: EncodableT) -> Any:
        """One pipelined command (``CommandPipeliner``), errors translated as ``_call``."""
        try:
            return await self._pipe.execute(*args)
        except _RETRYABLE as exc:
            raise StorageUnavailable(
                f"redis unavailable during {what} ({type(exc).__name__})"
            ) from None
        except RedisError as exc:
            raise StorageError(f"redis error during {what} ({type(exc).__name__})") from None

    async def _script(
        self, what: str, script: AsyncScript, keys: list[str], args: list[Any]
    ) -> Any:
        return await self._call(what, lambda: self._pipe.run_script(script, keys, args))

    async def _scan(self, kind: str) -> AsyncIterator[list[str]]:
        """Batches of keys of one kind (or every kind when ``kind`` is empty)."""
        pattern = _glob_escape(self._base + (f"{kind}:" if kind else "")) + "*"
        cursor: int = 0
        while True:
            step = partial(self._redis.scan, cursor=cursor, match=pattern, count=SCAN_COUNT)
            cursor, keys = await self._call("scan", step)
            if keys:
                yield [str(k) for k in keys]
            if cursor == 0:
                return

    @staticmethod
    def _access_args(access: AccessTokenRecord) -> list[str]:
        return [
            access.token_hash,
            access.model_dump_json(),
            access.jti,
            access.grant_id,
            str(_ttl(access.expires_at, access.issued_at)),
        ]

    @staticmethod
    def _refresh_args(refresh: RefreshTokenRecord | None) -> list[str]:
        if refresh is None:
            return ["", "", "", "", ""]
        if refresh.rotated_at is not None:  # pragma: no cover - callers store fresh tokens
            raise StorageError("a new refresh token cannot be stored already rotated")
        return [
            refresh.token_hash,
            refresh.model_dump_json(),
            _f(refresh.expires_at),
            refresh.grant_id,
            str(_ttl(refresh.expires_at, refresh.issued_at)),
        ]

    # ----------------------------------------------------------------- lifecycle
    async def open(self) -> None:
        await self.ping()

    async def close(self) -> None:
        await self._pipe.aclose()
        await self._redis.aclose()

    async def ping(self) -> None:
        async def _ping() -> None:
            conn_ok = await self._redis.ping()
            if not conn_ok:  # pragma: no cover - PING answers PONG or raises
                raise RedisConnectionError("no PONG")

        try:
            await self._call("ping", lambda: asyncio.wait_for(_ping(), PING_TIMEOUT))
        except TimeoutError:
            raise StorageUnavailable("redis unavailable during ping (timeout)") from None

    # ----------------------------------------------------------------- clients
    async def put_client(self, client: ClientRecord) -> None:
        ttl: int | None = None
        if client.expires_at is not None:
            # Without a creation time the lifetime is unknown: count from the wall clock.
            issued = client.created_at if client.created_at > 0 else time.time()
            ttl = _ttl(client.expires_at, issued, CLIENT_TTL_MARGIN)
        args = [
            self._base,
            client.client_id,
            client.model_dump_json(),
            "" if ttl is None else str(ttl),
            client.registered_ip or "",
            "+inf" if client.expires_at is None else _f(client.expires_at),
        ]
        await self._script(
            "put_client", self._put_client, [self._k("client", client.client_id)], args
        )

    async def get_client(self, client_id: str) -> ClientRecord | None:
        key = self._k("client", client_id)
        raw = await self._cmd("get_client", "GET", key)
        return None if raw is None else ClientRecord.model_validate_json(raw)

    async def delete_client(self, client_id: str) -> bool:
        keys = [self._k("client", client_id), self._k("cgrants", client_id)]
        res = await self._script(
            "delete_client", self._delete_client, keys, [self._base, client_id]
        )
        return bool(int(res))

    async def count_clients_by_ip(self, ip: str, now: float) -> int:
        key = self._k("cip", ip)
        # Live: expires_at > now (exclusive lower bound); deletes keep the index exact.
        res = await self._cmd("count_clients_by_ip", "ZCOUNT", key, f"({_f(now)}", "+inf")
        return int(res)

    async def list_clients(self) -> list[ClientRecord]:
        found: list[ClientRecord] = []
        async for batch in self._scan("client"):
            raws = await self._call("list_clients", partial(self._redis.mget, batch))
            found.extend(ClientRecord.model_validate_json(r) for r in raws if r is not None)
        return sorted(found, key=lambda c: c.client_id)

    # ----------------------------------------------------------------- ephemeral
    def _eph_key(self, kind: str, key: str) -> str:
        return self._k("eph", f"{len(kind)}:{kind}:{key}")

    async def put_ephemeral(
        self, kind: str, key: str, data: dict[str, Any], expires_at: float
    ) -> None:
        raw = _dump_ephemeral(data, expires_at)
        # No issue time is given: the TTL alone reads the wall clock (never the semantics,
        # which use the caller's ``now``), floored at the margin for fake clocks.
        ttl = _ttl(expires_at, time.time())
        rkey = self._eph_key(kind, key)
        await self._cmd("put_ephemeral", "SET", rkey, raw, "EX", ttl)

    async def get_ephemeral(self, kind: str, key: str, now: float) -> dict[str, Any] | None:
        rkey = self._eph_key(kind, key)
        return _load_ephemeral(await self._cmd("get_ephemeral", "GET", rkey), now)

    async def take_ephemeral(self, kind: str, key: str, now: float) -> dict[str, Any] | None:
        rkey = self._eph_key(kind, key)
        raw = await self._cmd("take_ephemeral", "GETDEL", rkey)
        return _load_ephemeral(raw, now)

    # ----------------------------------------------------------------- codes
    async def put_code(self, code: CodeRecord) -> None:
        key = self._k("code", code.code_hash)
        fields = {"rec": code.model_dump_json(), "exp": _f(code.expires_at)}
        if code.consumed_at is not None:
            fields["used"] = _f(code.consumed_at)
        ttl = _ttl(code.expires_at, code.issued_at)

        async def _put() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                pipe.expire(key, ttl)
                await pipe.execute()

        await self._call("put_code", _put)

    async def consume_code(self, code_hash: str, now: float) -> ConsumeResult:
        key = self._k("code", code_hash)
        res = await self._script(
            "consume_code", self._consume_code, [key], [_f(now), secrets.token_hex(16)]
        )
        status = ConsumeStatus(res[0])
        if status is ConsumeStatus.MISSING:
            return ConsumeResult(status=status)
        code = CodeRecord.model_validate_json(res[1]).model_copy(
            update={"consumed_at": float(res[2])}
        )
        return ConsumeResult(status=status, code=code)

    # ----------------------------------------------------------------- grants and tokens
    def _grant_from(self, fields: list[str | None]) -> GrantRecord | None:
        rec, up, rev = fields
        if rec is None:
            return None
        grant = GrantRecord.model_validate_json(rec)
        update: dict[str, Any] = {}
        if up is not None:
            update.update(json.loads(up))
        if rev is not None:
            update["revoked_at"] = float(rev)
        return grant.model_copy(update=update) if update else grant

    async def create_grant(
        self,
        grant: GrantRecord,
        access: AccessTokenRecord,
        refresh: RefreshTokenRecord | None,
    ) -> None:
        gid = grant.grant_id
        keys = [self._k("grant", gid), self._k("gtok", gid), self._k("cgrants", grant.client_id)]
        args = [
            self._base,
            gid,
            grant.model_dump_json(),
            _f(grant.expires_at),
            grant.client_id,
            _f(grant.created_at),
            str(_ttl(grant.expires_at, grant.created_at)),
            secrets.token_hex(16),
            *self._access_args(access),
            *self._refresh_args(refresh),
        ]
        res = await self._script("create_grant", self._create_grant, keys, args)
        if res == "revoked":
            raise GrantRevoked("the grant was revoked before it was created")
        if res == "exists":
            raise StorageError("a grant with this id already exists")

    async def get_grant(self, grant_id: str) -> GrantRecord | None:
        key = self._k("grant", grant_id)
        fields = await self._cmd("get_grant", "HMGET", key, "rec", "up", "rev")
        return self._grant_from(list(fields))

    async def list_grants(
        self, subject: str | None = None, client_id: str | None = None
    ) -> list[GrantRecord]:
        batches: list[list[str]] = []
        if client_id is not None:
            ckey = self._k("cgrants", client_id)
            ids = await self._call("list_grants", lambda: self._redis.smembers(ckey))
            batches.append([self._k("grant", g) for g in ids])
        else:
            async for batch in self._scan("grant"):
                batches.append(batch)
        found: list[GrantRecord] = []
        for batch in batches:

            async def _read(b: list[str] = batch) -> list[Any]:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key in b:
                        pipe.hmget(key, ["rec", "up", "rev"])
                    return await pipe.execute()

            for fields in await self._call("list_grants", _read):
                grant = self._grant_from(list(fields))
                if (
                    grant is not None
                    and grant.revoked_at is None
                    and (subject is None or grant.subject == subject)
                    and (client_id is None or grant.client_id == client_id)
                ):
                    found.append(grant)
        return sorted(found, key=lambda g: (g.created_at, g.grant_id))

    async def update_grant_upstream(
        self, grant_id: str, upstream: str | None, upstream_expires_at: float | None
    ) -> bool:
        up = json.dumps({"upstream": upstream, "upstream_expires_at": upstream_expires_at})
        res = await self._script(
            "update_grant_upstream", self._update_upstream, [self._k("grant", grant_id)], [up]
        )
        return bool(int(res))

    async def revoke_grant(self, grant_id: str, now: float) -> bool:
        keys = [self._k("grant", grant_id), self._k("gtok", grant_id)]
        args = [
            self._base,
            grant_id,
            _f(now),
            str(self._tombstone_ttl),
            _f(now + self._tombstone_ttl),
        ]
        res = await self._script("revoke_grant", self._revoke_grant, keys, args)
        return bool(int(res))

    async def get_access_token(self, token_hash: str) -> AccessTokenRecord | None:
        key = self._k("at", token_hash)
        raw = await self._cmd("get_access_token", "GET", key)
        return None if raw is None else AccessTokenRecord.model_validate_json(raw)

    async def get_access_token_by_jti(self, jti: str) -> AccessTokenRecord | None:
        raw = await self._script(
            "get_access_token_by_jti", self._access_by_jti, [self._k("jti", jti)], [self._base]
        )
        return None if raw is None else AccessTokenRecord.model_validate_json(raw)

    async def delete_access_token(self, token_hash: str) -> bool:
        res = await self._script(
            "delete_access_token",
            self._delete_access,
            [self._k("at", token_hash)],
            [self._base, token_hash],
        )
        return bool(int(res))

    async def get_refresh_token(self, token_hash: str) -> RefreshTokenRecord | None:
        key = self._k("rt", token_hash)
        rec, rot, succ = await self._cmd("get_refresh_token", "HMGET", key, "rec", "rot", "succ")
        if rec is None:
            return None
        record = RefreshTokenRecord.model_validate_json(rec)
        if rot is None:
            return record
        return record.model_copy(update={"rotated_at": float(rot), "successor": succ})

    async def rotate_refresh_token(
        self,
        old_hash: str,
        access: AccessTokenRecord,
        refresh: RefreshTokenRecord,
        successor: str,
        now: float,
        grace: float,
    ) -> RotateResult:
        args = [
            self._base,
            old_hash,
            _f(now),
            _f(grace),
            successor,
            secrets.token_hex(16),
            str(self._tombstone_ttl),
            _f(now + self._tombstone_ttl),
            *self._access_args(access),
            *self._refresh_args(refresh),
        ]
        res = await self._script(
            "rotate_refresh_token", self._rotate, [self._k("rt", old_hash)], args
        )
        status = RotateStatus(res[0])
        if status is RotateStatus.MISSING:
            return RotateResult(status=status)
        if status is RotateStatus.GRACE:
            return RotateResult(status=status, grant_id=res[1], successor=res[2])
        return RotateResult(status=status, grant_id=res[1])

    # ----------------------------------------------------------------- consent
    def _consent_key(self, subject: str, client_id: str, resource: str) -> str:
        digest = hashlib.sha256(json.dumps([subject, client_id, resource]).encode()).hexdigest()
        return self._k("consent", digest)

    async def put_consent(self, consent: ConsentRecord) -> None:
        key = self._consent_key(consent.subject, consent.client_id, consent.resource)
        ttl = _ttl(consent.expires_at, consent.granted_at)
        raw = consent.model_dump_json()
        await self._cmd("put_consent", "SET", key, raw, "EX", ttl)

    async def get_consent(
        self, subject: str, client_id: str, resource: str
    ) -> ConsentRecord | None:
        key = self._consent_key(subject, client_id, resource)
        raw = await self._cmd("get_consent", "GET", key)
        return None if raw is None else ConsentRecord.model_validate_json(raw)

    # ----------------------------------------------------------------- signing keys
    async def add_signing_key(self, key: SigningKeyRecord) -> bool:
        keys = [self._k("sigkey", key.kid), self._base + "sigkeys"]
        args = [key.model_dump_json(), str(key.generation), key.kid]
        res = await self._script("add_signing_key", self._add_signing_key, keys, args)
        return bool(int(res))

    async def list_signing_keys(self) -> list[SigningKeyRecord]:
        raws = await self._script(
            "list_signing_keys", self._list_signing_keys, [self._base + "sigkeys"], [self._base]
        )
        found = [SigningKeyRecord.model_validate_json(r) for r in raws]
        return sorted(found, key=lambda k: k.generation)

    async def delete_signing_key(self, kid: str) -> bool:
        keys = [self._k("sigkey", kid), self._base + "sigkeys"]
        res = await self._script("delete_signing_key", self._delete_signing_key, keys, [kid])
        return bool(int(res))

    # ----------------------------------------------------------------- housekeeping
    async def gc(self, now: float) -> int:
        removed = 0
        async for batch in self._scan(""):
            removed += int(await self._script("gc", self._gc, batch, [self._base, _f(now)]))
        return removed


def _build(config: RedisStorageConfig) -> RedisStorage:
    return RedisStorage(config)


# Registered as the ``redis`` entry point of ``mcp_oauthd.storage`` (pyproject.toml).
PLUGIN = StoragePlugin(name="redis", config_model=RedisStorageConfig, factory=_build)
