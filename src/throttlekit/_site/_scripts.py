"""
The server-side scripts of a Redis site (Lua, run atomically by Redis or Valkey).

Every script reads the **server's** clock (``TIME``), never a member's: leases and the
request limiter's timetable are in server time, so a member whose clock is off changes
nothing. Each script touches the keys of one object only (one hash tag), so it runs on
Redis Cluster too. Numbers travel as text in ``%.17g`` (Lua would truncate a float reply
to an integer), infinity as ``inf``.

* :data:`SITE` renews (or ends) a member's site lease and drops expired members.
* :data:`SHARE` reports a member's want for one shared rate and answers its max-min
  fair share (the same division as :func:`._fair.fair_level`, computed in the same
  order so the two agree to the last bit).
* :data:`LEAVE_SHARE` removes a member from one shared rate at once.
* :data:`GCRA` reserves the next turn of a request limiter (GCRA with reservation:
  every caller is told when its turn comes, in order of arrival at the server).
* :data:`GCRA_REFUND` gives a cancelled reservation back when nobody reserved after it.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["GCRA", "GCRA_REFUND", "LEAVE_SHARE", "SCRIPTS", "SHARE", "SITE", "sha1"]

_COMMON: Final = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function num(s)
  if s == 'inf' or s == 'g' then return math.huge end
  return tonumber(s)
end
local function fmt(x)
  if x == math.huge then return 'inf' end
  return string.format('%.17g', x)
end
local function drop(key, members, also)
  for i = 1, #members, 500 do
    local chunk = {}
    for j = i, math.min(i + 499, #members) do chunk[#chunk + 1] = members[j] end
    redis.call('ZREM', key, unpack(chunk))
    if also then redis.call('HDEL', also, unpack(chunk)) end
  end
end
"""

# KEYS: members (zset member -> lease end, ms), info (hash member -> json)
# ARGV: member, lease_ms, info, leaving ('1' to leave)
SITE: Final = (
    _COMMON
    + r"""
local now = now_ms()
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
if #dead > 0 then drop(KEYS[1], dead, KEYS[2]) end
if ARGV[4] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
return {tostring(now), redis.call('ZCARD', KEYS[1])}
"""
)

# KEYS: config (hash), alive (zset member -> lease end, ms), wants (hash member -> want)
# ARGV: member, want ('g' greedy or a number), lease_ms, rate ('inf' or a number; the
#       member's last known site rate), kind, write ('1': this member sets the rate),
#       cache_ms (how long a division may be reused when there are many members),
#       family (how the rate is shown: 'SI', 'IEC', 'SI bits', 'IEC bits' or '')
# Returns: share, rate, kind, members, level, surplus, server time (ms), family
SHARE: Final = (
    _COMMON
    + r"""
local now = now_ms()
local member, want = ARGV[1], ARGV[2]
local family = ARGV[8] or ''
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[1], 'rate', ARGV[4], 'kind', ARGV[5], 'family', family)
  redis.call('HDEL', KEYS[1], 'level_at')
end
local conf = redis.call('HMGET', KEYS[1], 'rate', 'kind', 'level', 'surplus', 'level_at', 'family')
local rate, kind = conf[1], conf[2]
if not rate then
  -- a fresh (or restarted, empty) server: the site rate this member knew
  rate, kind = ARGV[4], ARGV[5]
  redis.call('HSET', KEYS[1], 'rate', rate, 'kind', kind, 'family', family)
  conf[5] = false
  conf[6] = family
end
local stale = not conf[5]
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
if #dead > 0 then drop(KEYS[2], dead, KEYS[3]); stale = true end
if redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), member) == 1 then stale = true end
-- a changed want is seen at once while the members are few (the division is then
-- computed on every call), and within cache_ms when they are many
local before = redis.call('HGET', KEYS[3], member)
redis.call('HSET', KEYS[3], member, want)
local n = redis.call('ZCARD', KEYS[2])
local level, surplus
if stale or n <= 64 or now - tonumber(conf[5]) >= tonumber(ARGV[7]) then
  local wants = redis.call('HVALS', KEYS[3])
  local values = {}
  for i = 1, #wants do values[i] = num(wants[i]) end
  table.sort(values)
  local cap = num(rate)
  level, surplus = math.huge, 0
  if #values > 0 and cap == math.huge then
    surplus = math.huge
  elseif #values > 0 then
    local left = cap
    local done = false
    for i = 1, #values do
      local equal = left / (#values - i + 1)
      if values[i] > equal then level = equal; done = true; break end
      left = left - values[i]
    end
    if not done then
      if left < 0 then left = 0 end
      surplus = left / #values
    end
  end
  redis.call('HSET', KEYS[1], 'level', fmt(level), 'surplus', fmt(surplus), 'level_at', now)
  before = false
else
  level, surplus = num(conf[3]), num(conf[4])
end
-- From a reused division, a member gets at most what that division gave it: its want
-- then. The level alone would hand every member whose want grew the whole water level
-- (an infinite one when every want fitted), far more than the site rate between them.
local share = math.min(num(want), level) + surplus
if before then share = math.min(num(want), num(before), level) + surplus end
return {fmt(share), rate, kind, n, fmt(level), fmt(surplus), tostring(now), conf[6] or ''}
"""
)

# KEYS: config, alive, wants. ARGV: member
LEAVE_SHARE: Final = r"""
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[1], 'level_at')
return 1
"""

# KEYS: config (hash rate, burst, kind, family), tat (the theoretical arrival time, us)
# ARGV: amount, nowait ('1'), rate, burst, kind (the member's own view, used when the
#       server has none), write ('1': this member sets rate and burst), family
# Returns: status ('ok', 'busy' for nowait, 'paused'), wait (us), new tat, increment,
#          rate, burst, kind, family
GCRA: Final = (
    _COMMON
    + r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local family = ARGV[7] or ''
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[1], 'rate', ARGV[3], 'burst', ARGV[4], 'kind', ARGV[5], 'family', family)
end
local conf = redis.call('HMGET', KEYS[1], 'rate', 'burst', 'kind', 'family')
local rate_s, burst_s = conf[1], conf[2]
if not rate_s then
  rate_s, burst_s, conf[3], conf[4] = ARGV[3], ARGV[4], ARGV[5], family
  redis.call('HSET', KEYS[1], 'rate', rate_s, 'burst', burst_s, 'kind', ARGV[5], 'family', family)
end
local kind_s, family_s = conf[3] or ARGV[5], conf[4] or ''
local rate, burst, amount = num(rate_s), num(burst_s), tonumber(ARGV[1])
if rate == math.huge then return {'ok', '0', '0', '0', rate_s, burst_s, kind_s, family_s} end
if rate <= 0 then return {'paused', '0', '0', '0', rate_s, burst_s, kind_s, family_s} end
local interval = 1000000 / rate
local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
if tat < now then tat = now end
local new_tat = tat + amount * interval
local wait = new_tat - burst * interval - now
if wait < 0 then wait = 0 end
if wait > 0 and ARGV[2] == '1' then
  return {'busy', fmt(wait), '0', '0', rate_s, burst_s, kind_s, family_s}
end
redis.call('SET', KEYS[2], fmt(new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {'ok', fmt(wait), fmt(new_tat), fmt(amount * interval), rate_s, burst_s, kind_s, family_s}
"""
)

# KEYS: tat. ARGV: the reservation's tat, its increment.
GCRA_REFUND: Final = r"""
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) == tonumber(ARGV[1]) then
  local ttl = redis.call('PTTL', KEYS[1])
  local back = tonumber(ARGV[1]) - tonumber(ARGV[2])
  if ttl > 0 then
    redis.call('SET', KEYS[1], string.format('%.17g', back), 'PX', ttl)
  else
    redis.call('SET', KEYS[1], string.format('%.17g', back))
  end
  return 1
end
return 0
"""

SCRIPTS: Final = {
    "site": SITE,
    "share": SHARE,
    "leave_share": LEAVE_SHARE,
    "gcra": GCRA,
    "gcra_refund": GCRA_REFUND,
}


def sha1(source: str) -> str:
    """The SHA1 digest Redis knows a script by (for EVALSHA)."""
    return hashlib.sha1(source.encode()).hexdigest()
