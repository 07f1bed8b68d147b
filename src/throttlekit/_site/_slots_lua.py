"""
The server-side script of cluster-wide operation slots (Lua, run atomically by Redis).

One script, :data:`SLOTS`, does every operation on one limits object (enter the line,
take a slot now or not at all, release, renew this member's leases, change the limits),
so a slot takes its total, kind and key counters in one atomic step, and every change is
followed by the same **grant pass**: the line is walked in order (priority, then arrival
at the server) and each waiter that fits, and shares no limited kind or key with a waiter
ahead of it that stays in line, becomes a holder (the rule of the local
:class:`~throttlekit.OperationLimits`). Grants are published on the object's channel, so
waiting members wake at once; the heartbeat's renew reports them too (the safety net).

After a restart that lost the data, nothing is granted for one lease (``grace``), so that
holders still running claim their slots back first (their renew re-enters them). The
grace starts when a member that has reached the object before finds it gone (a member
new to it cannot tell a restart from a first use). Renews also carry the largest token
the member has seen, so tokens go on above it even when the new server's clock is behind.

Keys (one hash tag per object): ``config`` (hash: total, per_kind as JSON, per_key,
token as text, seq, grace), ``entries`` (hash: id -> JSON entry), ``leases`` (zset: id -> lease end,
server ms), ``gone`` (zset: ids released or cancelled -> when the tombstone ends, so a
late renew never brings them back). Server time only. Counters are derived from the
entries on every call, so they can never drift from the holders.
"""

from __future__ import annotations

from typing import Final

__all__ = ["SLOTS"]

# KEYS: config, entries, leases, gone
# ARGV: op, channel, lease_ms, total ('' none), per_kind (JSON object), per_key ('' none),
#       write ('0': no; '1': set the limits; '2': set them, and the member has reached
#       this object before, so its absence means a restart), then the op's own arguments:
#   enter:   id, member, kind, key ('' none), priority, nowait ('1')
#   release: id
#   renew:   member, JSON list of {i, k, y, p, h, t}, JSON list of ids to drop, the
#            largest token the member has seen (tokens go on above it after a restart)
#   config:  (none: write is '1')
# Returns {status, token, total, per_kind, per_key, renew results (JSON)}
SLOTS: Final = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local CONF, ENT, LEASE, GONE = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, channel, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])

local write = ARGV[7] ~= '0'
if redis.call('EXISTS', CONF) == 0 and ARGV[7] ~= '1' then
  -- A member knows this object and the server does not: it restarted empty. For one
  -- lease nothing is granted, so that the holders still running can claim their slots
  -- back (their next renew) before anyone else is let in.
  redis.call('HSET', CONF, 'grace', now + lease)
  write = true
end
if write then
  redis.call('HSET', CONF, 'total', ARGV[4], 'per_kind', ARGV[5], 'per_key', ARGV[6])
end
local conf = redis.call('HMGET', CONF, 'total', 'per_kind', 'per_key', 'token', 'grace')
local grace = tonumber(conf[5] or '0') > now
local grace_over = conf[5] and not grace
if grace_over then redis.call('HDEL', CONF, 'grace') end
if not conf[4] then
  -- a fresh (or restarted, empty) server: tokens go on from the server's clock, so a
  -- token handed out after a restart is still larger than every one before it
  redis.call('HSET', CONF, 'token', string.format('%d', now * 1000))
end
local total = tonumber(conf[1])
local per_kind = cjson.decode(conf[2] or '{}')
local per_key = tonumber(conf[3])

redis.call('ZREMRANGEBYSCORE', GONE, '-inf', '(' .. now)
local changed = false
local dead = redis.call('ZRANGEBYSCORE', LEASE, '-inf', '(' .. now)
for i = 1, #dead do
  redis.call('HDEL', ENT, dead[i])
  redis.call('ZREM', LEASE, dead[i])
  changed = true
end
if write or grace_over then changed = true end

local function next_token()
  return redis.call('HINCRBY', CONF, 'token', 1)
end

local function load()
  local all = redis.call('HGETALL', ENT)
  local holders, waiters = {}, {}
  for i = 1, #all, 2 do
    local e = cjson.decode(all[i + 1])
    e.id = all[i]
    if e.h == 1 then holders[#holders + 1] = e else waiters[#waiters + 1] = e end
  end
  table.sort(waiters, function(a, b)
    if a.p ~= b.p then return a.p > b.p end
    return a.s < b.s
  end)
  local used, kinds, keys = #holders, {}, {}
  for _, e in ipairs(holders) do
    kinds[e.k] = (kinds[e.k] or 0) + 1
    if e.y ~= '' then keys[e.y] = (keys[e.y] or 0) + 1 end
  end
  return waiters, used, kinds, keys
end

local function fits(used, kinds, keys, kind, key)
  if total and used >= total then return false end
  local limit = per_kind[kind]
  if limit and (kinds[kind] or 0) >= limit then return false end
  if key ~= '' and per_key and (keys[key] or 0) >= per_key then return false end
  return true
end

local function grant_pass()
  if grace then return end
  local waiters, used, kinds, keys = load()
  local held_kinds, held_keys = {}, {}
  local granted = {}
  for _, e in ipairs(waiters) do
    local behind = held_kinds[e.k] or (e.y ~= '' and held_keys[e.y])
    if not behind and fits(used, kinds, keys, e.k, e.y) then
      used = used + 1
      kinds[e.k] = (kinds[e.k] or 0) + 1
      if e.y ~= '' then keys[e.y] = (keys[e.y] or 0) + 1 end
      local id = e.id
      e.id = nil
      e.h, e.t, e.a = 1, string.format('%d', next_token()), now
      redis.call('HSET', ENT, id, cjson.encode(e))
      redis.call('ZADD', LEASE, now + lease, id)
      granted[#granted + 1] = id .. ' ' .. e.t
    else
      if per_kind[e.k] then held_kinds[e.k] = true end
      if e.y ~= '' and per_key then held_keys[e.y] = true end
    end
  end
  if #granted > 0 then redis.call('PUBLISH', channel, table.concat(granted, ' ')) end
end

local function state(id)
  local raw = redis.call('HGET', ENT, id)
  if not raw then return 'none', '0' end
  local e = cjson.decode(raw)
  if e.h == 1 then return 'granted', e.t end
  return 'waiting', '0'
end

local status, token, renewed = 'ok', '0', '[]'
if op == 'enter' then
  local id, member, kind, key = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
  local prio, nowait = tonumber(ARGV[12]), ARGV[13] == '1'
  if redis.call('HEXISTS', ENT, id) == 0 then
    if redis.call('ZSCORE', GONE, id) then
      status = 'gone'
    elseif nowait then
      if changed then grant_pass(); changed = false end
      local waiters, used, kinds, keys = load()
      local ok = not grace and fits(used, kinds, keys, kind, key)
      for _, e in ipairs(waiters) do
        if not ok or e.p < prio then break end
        if (e.k == kind and per_kind[kind]) or (key ~= '' and e.y == key and per_key) then
          ok = false
        end
      end
      if ok then
        token = string.format('%d', next_token())
        redis.call('HSET', ENT, id, cjson.encode(
          {m = member, k = kind, y = key, p = prio, s = 0, h = 1, t = token, a = now}))
        redis.call('ZADD', LEASE, now + lease, id)
        status = 'granted'
      else
        status = 'busy'
      end
    else
      local seq = redis.call('HINCRBY', CONF, 'seq', 1)
      redis.call('HSET', ENT, id, cjson.encode(
        {m = member, k = kind, y = key, p = prio, s = seq, h = 0, t = 0, a = now}))
      redis.call('ZADD', LEASE, now + lease, id)
      changed = true
    end
  else
    redis.call('ZADD', LEASE, now + lease, id)
  end
  if changed then grant_pass() end
  if status == 'ok' then status, token = state(id) end
elseif op == 'release' then
  local id = ARGV[8]
  if redis.call('HDEL', ENT, id) == 1 then changed = true end
  redis.call('ZREM', LEASE, id)
  redis.call('ZADD', GONE, now + 3 * lease, id)
  if changed then grant_pass() end
elseif op == 'renew' then
  local member = ARGV[8]
  local mine = cjson.decode(ARGV[9])
  local drops = cjson.decode(ARGV[10])
  -- tokens go on above every token this member has seen: after a restart on a server
  -- whose clock is behind the old one's, they would otherwise start lower
  local floor = tonumber(ARGV[11] or '0') or 0
  if floor > tonumber(redis.call('HGET', CONF, 'token')) then
    redis.call('HSET', CONF, 'token', string.format('%d', floor))
  end
  for _, id in ipairs(drops) do
    if redis.call('HDEL', ENT, id) == 1 then changed = true end
    redis.call('ZREM', LEASE, id)
    redis.call('ZADD', GONE, now + 3 * lease, id)
  end
  local out = {}
  for _, e in ipairs(mine) do
    local id = e.i
    if redis.call('HEXISTS', ENT, id) == 1 then
      redis.call('ZADD', LEASE, now + lease, id)
      out[#out + 1] = 'kept'
    elseif redis.call('ZSCORE', GONE, id) then
      out[#out + 1] = 'gone'
    elseif e.h == 1 then
      -- a holder the server forgot (it restarted empty, or the lease ran out while this
      -- member could not reach it): it still runs, so it counts again from now on
      redis.call('HSET', ENT, id, cjson.encode(
        {m = member, k = e.k, y = e.y, p = e.p, s = 0, h = 1, t = e.t, a = now}))
      redis.call('ZADD', LEASE, now + lease, id)
      out[#out + 1] = 'reclaimed'
      changed = true
    else
      -- a waiter the server forgot takes its place in line again, at the back
      local seq = redis.call('HINCRBY', CONF, 'seq', 1)
      redis.call('HSET', ENT, id, cjson.encode(
        {m = member, k = e.k, y = e.y, p = e.p, s = seq, h = 0, t = 0, a = now}))
      redis.call('ZADD', LEASE, now + lease, id)
      out[#out + 1] = 'requeued'
      changed = true
    end
  end
  if changed then grant_pass() end
  for i, e in ipairs(mine) do
    if out[i] ~= 'gone' then
      local s, tok = state(e.i)
      if s == 'granted' then out[i] = out[i] .. ' ' .. tok end
    end
  end
  if #out > 0 then renewed = cjson.encode(out) end
elseif op == 'config' then
  if changed then grant_pass() end
end
local c = redis.call('HMGET', CONF, 'total', 'per_kind', 'per_key')
return {status, token, c[1] or '', c[2] or '{}', c[3] or '', renewed}
"""
