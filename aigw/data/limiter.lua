-- aigw sliding-window limiter: a batch of reservations, a batch of settlements, atomically.
--
-- A request's reservations (ai-tokens' and ai-cost's, one "item" each) go in ONE call, and
-- their settlements in ONE call after the provider answered (docs/redis.md).
--
-- Per rule three keys:  log    sorted set  reservation id -> reserve time (ms)
--                       amts   hash        reservation id -> amount
--                       total  string      sum of amounts in the log
-- KEYS: the three keys of every rule of every item, in item order.
--
-- ARGV[1] = 'reserve':  ARGV[2] number of items, then per item:
--     id, amount, number of rules, then per rule: limit, window (ms)
--   All or nothing: every item is reserved, or none is and the reply is
--     {0, item index, rule index, remaining, retry ms, reset ms} of the first denied item
--     (of its denying rules, the one that frees up last).
--   Allowed: {1, then per item, per rule: remaining, reset ms}.
-- ARGV[1] = 'settle':   ARGV[2] number of items, then per item:
--     id, actual amount (or -1: release), number of rules
--   reconcile keeps the reservation's timestamp; release deletes it. Returns 1.
-- ARGV[1] = 'used':     ARGV[2] window (ms); KEYS: one rule. Returns the purged total.
--
-- Idempotent per reservation id: a retried reserve never counts twice, a retried settle
-- changes nothing more. Time comes from the Redis server (TIME), so every node agrees.

if redis.replicate_commands then redis.replicate_commands() end  -- effects replication (TIME + writes)

local op = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local BATCH = 500

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

-- the batch: items[n] = {id, amount (string), rules = {{log, amts, total, limit, window}}}
local function parse(with_limits)
  local items, a, k = {}, 3, 1
  for n = 1, tonumber(ARGV[2]) do
    local item = {id = ARGV[a], amount = ARGV[a + 1], rules = {}}
    local nrules = tonumber(ARGV[a + 2])
    a = a + 3
    for i = 1, nrules do
      local r = {KEYS[k], KEYS[k + 1], KEYS[k + 2]}
      k = k + 3
      if with_limits then
        r[4], r[5] = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
        a = a + 2
      end
      item.rules[i] = r
    end
    items[n] = item
  end
  return items
end

if op == 'reserve' then
  local items = parse(true)
  -- the counter of each key once purged, plus what earlier items of this batch add to it
  local totals = {}
  local deny = nil
  for n, item in ipairs(items) do
    local amount = tonumber(item.amount)
    item.already = {}
    for i, r in ipairs(item.rules) do
      local log, amts, total, window = r[1], r[2], r[3], r[5]
      if totals[log] == nil then totals[log] = purge(log, amts, total, window) end
      item.already[i] = redis.call('HEXISTS', amts, item.id) == 1  -- retried: keep, don't count twice
    end
    for i, r in ipairs(item.rules) do
      local log, amts, limit, window = r[1], r[2], r[4], r[5]
      if not item.already[i] and totals[log] + amount > limit then
        local retry
        if amount > limit then retry = window
        else retry = wait_for(log, amts, window, totals[log] + amount - limit) end
        if deny == nil or retry > deny[5] then
          deny = {0, n, i, math.max(limit - totals[log], 0), retry, reset_ms(log, window)}
        end
      end
    end
    if deny then return deny end  -- nothing was written yet: the whole batch is refused
    for i, r in ipairs(item.rules) do
      if not item.already[i] then totals[r[1]] = totals[r[1]] + amount end
    end
  end
  local out = {1}
  for _, item in ipairs(items) do
    for i, r in ipairs(item.rules) do
      local log, amts, total, limit, window = r[1], r[2], r[3], r[4], r[5]
      local used
      if item.already[i] then
        used = tonumber(redis.call('GET', total) or '0')
      else
        redis.call('ZADD', log, now, item.id)
        redis.call('HSET', amts, item.id, item.amount)
        used = redis.call('INCRBY', total, item.amount)
      end
      redis.call('PEXPIRE', log, window)
      redis.call('PEXPIRE', amts, window)
      redis.call('PEXPIRE', total, window)
      out[#out + 1] = math.max(limit - used, 0)
      out[#out + 1] = reset_ms(log, window)
    end
  end
  return out
elseif op == 'settle' then
  for _, item in ipairs(parse(false)) do
    local actual = tonumber(item.amount)
    for _, r in ipairs(item.rules) do
      local log, amts, total = r[1], r[2], r[3]
      local old = redis.call('HGET', amts, item.id)
      if old then  -- gone if released or expired: nothing to do
        if actual < 0 then
          redis.call('HDEL', amts, item.id)
          redis.call('ZREM', log, item.id)
          redis.call('DECRBY', total, tonumber(old))
          if redis.call('ZCARD', log) == 0 then redis.call('DEL', log, amts, total) end
        else
          redis.call('HSET', amts, item.id, item.amount)
          redis.call('INCRBY', total, actual - tonumber(old))
        end
      end
    end
  end
  return 1
elseif op == 'used' then
  return purge(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[2]))
end
return redis.error_reply('unknown op')
