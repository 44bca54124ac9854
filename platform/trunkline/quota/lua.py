"""The Redis store's two scripts. Each runs atomically, so a reservation is one round trip that
checks every limit of every scope and takes its share only if all of them pass.

Both mirror ``rules.check`` and ``InMemoryQuotaStore``; the contract suite holds them to it.
Times come from the caller (ARGV), never from the server, so an injected clock works; TTLs
are relative, so keys still expire in real time.
"""

from __future__ import annotations

# KEYS: six per scope (requests, tokens, leases, day tokens, month tokens, month cost), then
#       the reservation's key.
# ARGV: now_ms, lease_ms, request_id, tokens, cost, reservation_ttl_ms,
#       minute_ttl_ms, day_ttl_ms, month_ttl_ms, then six limits per scope (-1: none).
# Reply: {refused limit (0-based, -1 if admitted), refusing scope (0-based), never fits (0/1),
#         then the six counters of each scope}. A request id whose reservation is held already
#         is admitted again without counting twice: the client resends a call that timed out,
#         and Redis may have run the first one.
RESERVE = """
local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local rid, tokens, cost = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local res_ttl = tonumber(ARGV[6])
local ttl = {tonumber(ARGV[7]), tonumber(ARGV[7]), 0, tonumber(ARGV[8]),
             tonumber(ARGV[9]), tonumber(ARGV[9])}
local n = (#KEYS - 1) / 6
-- Numbers go to commands as integers written out: Redis 7.2.0 to 7.2.4 write a script's
-- number 300000000 as 3e+08, which INCRBY and PEXPIRE refuse (redis/redis#13113).
local function int(x) return string.format('%d', x) end
local need = {1, tokens, 1, tokens, tokens, cost}
local used = {}
for i = 1, n do
  local k = (i - 1) * 6
  redis.call('ZREMRANGEBYSCORE', KEYS[k + 3], '-inf', now)
  local row = {}
  for f = 1, 6 do
    if f == 3 then
      row[f] = redis.call('ZCARD', KEYS[k + 3])
    else
      row[f] = tonumber(redis.call('GET', KEYS[k + f]) or '0')
    end
  end
  used[i] = row
end
local function reply(limit, scope, never)
  local out = {limit, scope, never}
  for i = 1, n do
    for f = 1, 6 do out[#out + 1] = used[i][f] end
  end
  return out
end
if redis.call('EXISTS', KEYS[#KEYS]) == 1 then
  return reply(-1, -1, 0)  -- sent again (a retry after a timeout): already counted
end
for _, f in ipairs({6, 5, 4, 3, 1, 2}) do
  for i = 1, n do
    local bound = tonumber(ARGV[9 + (i - 1) * 6 + f])
    if bound >= 0 and used[i][f] + need[f] > bound then
      return reply(f - 1, i - 1, need[f] > bound and 1 or 0)
    end
  end
end
for i = 1, n do
  local k = (i - 1) * 6
  for f = 1, 6 do
    if f == 3 then
      redis.call('ZADD', KEYS[k + 3], now + lease, rid)
      redis.call('PEXPIRE', KEYS[k + 3], int(lease * 2))
    else
      redis.call('INCRBY', KEYS[k + f], int(need[f]))
      redis.call('PEXPIRE', KEYS[k + f], int(ttl[f]))
    end
    used[i][f] = used[i][f] + need[f]
  end
end
-- Written as sent: Lua prints a number of 15 digits or more as 1.2884901882e+14 (a costly
-- reservation's cost), which neither SETTLE nor the held read could parse back.
local deadline = int(now + res_ttl)
redis.call('SET', KEYS[#KEYS], ARGV[4] .. ':' .. ARGV[5] .. ':' .. deadline, 'PX', int(res_ttl))
return reply(-1, -1, 0)
"""

# KEYS: as for RESERVE.  ARGV: request_id, tokens, cost, now_ms.  Reply: 1 if settled now.
SETTLE = """
local n = (#KEYS - 1) / 6
for i = 1, n do
  redis.call('ZREM', KEYS[(i - 1) * 6 + 3], ARGV[1])
end
local record = redis.call('GET', KEYS[#KEYS])
if not record then return 0 end
redis.call('DEL', KEYS[#KEYS])
local tokens, cost, deadline = string.match(record, '^(%-?%d+):(%-?%d+):(%d+)$')
if tonumber(deadline) <= tonumber(ARGV[4]) then return 0 end
local dt = tonumber(ARGV[2]) - tonumber(tokens)
local delta = {0, dt, 0, dt, dt, tonumber(ARGV[3]) - tonumber(cost)}
for i = 1, n do
  local k = (i - 1) * 6
  for _, f in ipairs({2, 4, 5, 6}) do
    if delta[f] ~= 0 and redis.call('EXISTS', KEYS[k + f]) == 1 then
      redis.call('INCRBY', KEYS[k + f], string.format('%d', delta[f]))  -- as RESERVE's int
    end
  end
end
return 1
"""

# KEYS: per lease, its lease set then its request's reservation key.  ARGV: expires_at_ms,
#       lease_ms, then one request id per lease. A lease is set while its reservation is held,
#       added again if it expired meanwhile (the gateway could not renew it through an outage
#       longer than lease_ms; another gateway's reservation dropped it): its request is still in
#       flight. A settled request's reservation is gone, so a renewal that crossed its settle
#       takes no slot again.
RENEW = """
local expires, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local member = 3
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i + 1]) == 1 then
    redis.call('ZADD', KEYS[i], expires, ARGV[member])
    redis.call('PEXPIRE', KEYS[i], string.format('%d', lease * 2))  -- as RESERVE's int
  end
  member = member + 1
end
return 1
"""
