-- aigw sliding-window limiter: reserve / reconcile / release / used, atomically.
--
-- Per rule i three keys:  KEYS[3i-2] log    sorted set  reservation id -> reserve time (ms)
--                         KEYS[3i-1] amts   hash        reservation id -> amount
--                         KEYS[3i]   total  string      sum of amounts in the log
-- ARGV[1] op, ARGV[2] reservation id, ARGV[3] amount (reserve) or actual (reconcile),
-- then per rule: ARGV[2+2i] limit, ARGV[3+2i] window (ms).
-- Time comes from the Redis server (TIME), so every node agrees.

if redis.replicate_commands then redis.replicate_commands() end  -- effects replication (TIME + writes)

local op = ARGV[1]
local id = ARGV[2]
local amount = tonumber(ARGV[3])
local nrules = #KEYS / 3
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local BATCH = 500

local function rule(i)
  return KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i], tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
end

local function sum_amounts(amts, ids)
  local s = 0
  local vals = redis.call('HMGET', amts, unpack(ids))
  for _, v in ipairs(vals) do
    if v then s = s + tonumber(v) end
  end
  return s
end

-- drop entries at or before the window start; returns the running total
local function purge(log, amts, total, window)
  local cutoff = now - window
  while true do
    local old = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff, 'LIMIT', 0, BATCH)
    if #old == 0 then break end
    local freed = sum_amounts(amts, old)
    redis.call('HDEL', amts, unpack(old))
    redis.call('ZREM', log, unpack(old))
    redis.call('DECRBY', total, freed)
  end
  if redis.call('ZCARD', log) == 0 then
    redis.call('DEL', log, amts, total)
    return 0
  end
  return tonumber(redis.call('GET', total) or '0')
end

-- ms until the oldest entries have freed at least `need`
local function wait_for(log, amts, window, need)
  local freed, start = 0, 0
  while true do
    local page = redis.call('ZRANGE', log, start, start + BATCH - 1, 'WITHSCORES')
    if #page == 0 then return window end
    for j = 1, #page, 2 do
      local v = redis.call('HGET', amts, page[j])
      if v then freed = freed + tonumber(v) end
      if freed >= need then return math.max(tonumber(page[j + 1]) + window - now, 1) end
    end
    start = start + BATCH
  end
end

local function reset_ms(log, window)
  local newest = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
  if #newest == 0 then return 0 end
  return math.max(tonumber(newest[2]) + window - now, 0)
end

if op == 'reserve' then
  local totals, already = {}, {}
  for i = 1, nrules do
    local log, amts, total, limit, window = rule(i)
    totals[i] = purge(log, amts, total, window)
    already[i] = redis.call('HEXISTS', amts, id) == 1  -- retried reserve: keep, don't double count
  end
  local deny = nil  -- of the denying rules, report the one that frees up last
  for i = 1, nrules do
    local log, amts, total, limit, window = rule(i)
    if not already[i] and totals[i] + amount > limit then
      local retry
      if amount > limit then retry = window
      else retry = wait_for(log, amts, window, totals[i] + amount - limit) end
      if deny == nil or retry > deny[4] then
        deny = {0, i, math.max(limit - totals[i], 0), retry, reset_ms(log, window)}
      end
    end
  end
  if deny then return deny end
  local out = {1}
  for i = 1, nrules do
    local log, amts, total, limit, window = rule(i)
    local used = totals[i]
    if not already[i] then
      redis.call('ZADD', log, now, id)
      redis.call('HSET', amts, id, ARGV[3])
      used = redis.call('INCRBY', total, ARGV[3])
    end
    redis.call('PEXPIRE', log, window)
    redis.call('PEXPIRE', amts, window)
    redis.call('PEXPIRE', total, window)
    out[#out + 1] = math.max(limit - used, 0)
    out[#out + 1] = reset_ms(log, window)
  end
  return out
elseif op == 'reconcile' then
  for i = 1, nrules do
    local log, amts, total = rule(i)
    local old = redis.call('HGET', amts, id)
    if old then  -- gone if released or expired: nothing to do
      redis.call('HSET', amts, id, ARGV[3])
      redis.call('INCRBY', total, amount - tonumber(old))
    end
  end
  return 1
elseif op == 'release' then
  for i = 1, nrules do
    local log, amts, total = rule(i)
    local old = redis.call('HGET', amts, id)
    if old then
      redis.call('HDEL', amts, id)
      redis.call('ZREM', log, id)
      redis.call('DECRBY', total, tonumber(old))
      if redis.call('ZCARD', log) == 0 then redis.call('DEL', log, amts, total) end
    end
  end
  return 1
elseif op == 'used' then
  local log, amts, total, limit, window = rule(1)
  return purge(log, amts, total, window)
end
return redis.error_reply('unknown op')
