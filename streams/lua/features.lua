-- Velocity and distinct-count features for a whole batch of clicks, in one call.
--
-- Clicks arrive sorted by (event time ms, click_id) and are processed in that order, so a click
-- sees exactly the clicks stored before it in that order: the result does not depend on how
-- the stream was cut into batches. Re-running a click adds nothing (ZADD of the same member,
-- PFADD of a present element) and, absent late predecessors, returns the same values.
--
-- ARGV[1]  key prefix
-- ARGV[2]  velocity windows in ms, ascending, comma-separated
-- ARGV[3]  keep_ms: sorted-set members older than (newest - keep_ms) are trimmed
-- ARGV[4]  TTL of velocity keys, seconds, refreshed by the first click of each event-time hour
-- ARGV[5]  TTL of HyperLogLog keys, seconds, refreshed whenever PFADD changes the key
-- ARGV[6]  n, the number of clicks
-- ARGV[7..12]  NUL-separated columns of n values each: event time ms, click_id, session_id,
--              customer_id ('' when not logged in), ip, user agent
--
-- Reply: one comma-separated string, per click: counts per window for customer, session, ip;
-- gaps in ms to the previous click (-1 when none) for customer, session, ip; then distinct
-- sessions per ip, customers per ip, ips per customer, user agents per ip.

local prefix = ARGV[1]
local windows = {}
for w in string.gmatch(ARGV[2], '%d+') do
  windows[#windows + 1] = tonumber(w)
end
local keep_ms = tonumber(ARGV[3])
local velocity_ttl = tonumber(ARGV[4])
local hll_ttl = tonumber(ARGV[5])
local n = tonumber(ARGV[6])
local DAY_MS, HOUR_MS = 86400000, 3600000

local function split(s)
  local out, pos = {}, 1
  for i = 1, n - 1 do
    local j = string.find(s, '\0', pos, true)
    out[i] = string.sub(s, pos, j - 1)
    pos = j + 1
  end
  out[n] = string.sub(s, pos)
  return out
end

local times, ids, sessions = split(ARGV[7]), split(ARGV[8]), split(ARGV[9])
local customers, ips, agents = split(ARGV[10]), split(ARGV[11]), split(ARGV[12])

-- Housekeeping is collected per key and done once at the end; redis.call is what costs.
local trim = {}     -- velocity key -> newest time of a click that has clicks past every window
local expire = {}   -- velocity key -> true when its TTL is due for a refresh
local changed = {}  -- HLL key -> times PFADD changed it in this call (also: TTL is due)
local added = {}    -- HLL key .. NUL .. member -> true once added in this call
local cached = {}   -- HLL key -> {changes, previous day's changes, count}
local out = {}

-- Appends the window counts of click (t, id) in key's sorted set; returns the gap in ms.
local function velocity(key, t, id)
  redis.call('ZADD', key, t, id)
  local rank = redis.call('ZRANK', key, id)  -- clicks ordered before this one
  -- Clicks at or before t - w fall outside window w. Windows ascend, so once none do, none
  -- do for the larger windows either and the ZCOUNT calls stop.
  local older = rank
  for _, w in ipairs(windows) do
    if older > 0 then
      older = redis.call('ZCOUNT', key, '-inf', t - w)
    end
    out[#out + 1] = rank + 1 - older
  end
  if older > 0 and (trim[key] == nil or trim[key] < t) then
    trim[key] = t
  end
  if rank == 0 then
    expire[key] = true
    return -1
  end
  local prev = tonumber(redis.call('ZRANGE', key, rank - 1, rank - 1, 'WITHSCORES')[2])
  if math.floor(prev / HOUR_MS) ~= math.floor(t / HOUR_MS) then
    expire[key] = true
  end
  return t - prev
end

local function absent()
  for _ = 1, #windows do
    out[#out + 1] = 0
  end
  return -1
end

-- Adds member (unless '') to the day's HLL; returns the union count with the previous day.
-- PFCOUNT of two keys merges 16k registers, so it is skipped when neither key changed.
local function distinct(cur, prev, member)
  local seen = cur .. '\0' .. member
  if member ~= '' and not added[seen] then
    added[seen] = true
    if redis.call('PFADD', cur, member) == 1 then
      changed[cur] = (changed[cur] or 0) + 1
    end
  end
  local vc, vp = changed[cur] or 0, changed[prev] or 0
  local c = cached[cur]
  if c == nil or c[1] ~= vc or c[2] ~= vp then
    c = {vc, vp, redis.call('PFCOUNT', cur, prev)}
    cached[cur] = c
  end
  return c[3]
end

-- Appends a cached row (comma-separated) to out.
local function replay_row(row)
  for v in string.gmatch(row, '[^,]+') do
    out[#out + 1] = v
  end
end

for i = 1, n do
  local t, id = tonumber(times[i]), ids[i]
  -- A click seen before (redelivery after a restart or rebalance) gets the row it got then:
  -- HyperLogLogs cannot be rewound, so recomputing could count entities that came later.
  local row_key = prefix .. 'row:{click:' .. id .. '}'
  local row = redis.call('GET', row_key)
  if row then
    replay_row(row)
  else
    local first = #out + 1
    local customer, ip = customers[i], ips[i]
    local day = math.floor(t / DAY_MS)
    local ip_tag = ':{ip:' .. ip .. '}'
    local customer_tag = ':{cust:' .. customer .. '}'

    local customer_gap
    if customer ~= '' then
      customer_gap = velocity(prefix .. 'vel' .. customer_tag, t, id)
    else
      customer_gap = absent()
    end
    local session_gap = velocity(prefix .. 'vel:{sess:' .. sessions[i] .. '}', t, id)
    local ip_gap = velocity(prefix .. 'vel' .. ip_tag, t, id)
    out[#out + 1] = customer_gap
    out[#out + 1] = session_gap
    out[#out + 1] = ip_gap

    local today, yesterday = ':' .. day, ':' .. (day - 1)
    local h = prefix .. 'hll:'
    out[#out + 1] = distinct(h .. 'sess' .. today .. ip_tag, h .. 'sess' .. yesterday .. ip_tag,
      sessions[i])
    out[#out + 1] = distinct(h .. 'cust' .. today .. ip_tag, h .. 'cust' .. yesterday .. ip_tag,
      customer)
    if customer ~= '' then
      out[#out + 1] = distinct(h .. 'ip' .. today .. customer_tag,
        h .. 'ip' .. yesterday .. customer_tag, ip)
    else
      out[#out + 1] = 0
    end
    out[#out + 1] = distinct(h .. 'ua' .. today .. ip_tag, h .. 'ua' .. yesterday .. ip_tag,
      agents[i])
    redis.call('SET', row_key, table.concat(out, ',', first, #out), 'EX', velocity_ttl)
  end
end

for key, t in pairs(trim) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (t - keep_ms))
end
for key in pairs(expire) do
  redis.call('EXPIRE', key, velocity_ttl)
end
-- A day's HLL is created by a PFADD that returns 1, so every HLL key gets its TTL.
for key in pairs(changed) do
  redis.call('EXPIRE', key, hll_ttl)
end
return table.concat(out, ',')
