#!lua flags=allow-cross-slot-keys
-- First call of a batch on one node: return each entity's state and append the batch's clicks
-- to it, atomically, so concurrent workers never lose a click. No arithmetic runs here: the
-- worker computes the features (streams/feature_store/entity.py).
--
-- A state is one string: a 2-byte length, the compacted base, then the log of clicks since.
--
-- KEYS     the n entity state keys, then the row hashes (one per event minute)
-- ARGV[1]  n;  ARGV[2]  TTL of a new state, ms
-- ARGV[3..n+2]  the records to append to each entity's log
-- ARGV[n+3..]   per row hash: the number of fields, then the fields (one per click)
--
-- Reply: {0, state 1, ..., state n} (nil where absent); or, when some clicks were seen
-- before, {1, row hash number, field number, stored row, ...} and nothing is written: the
-- worker resends the batch without them, so no click is counted twice.

local n = tonumber(ARGV[1])
local ttl = ARGV[2]
local out = {0}

local a = n + 3
for g = n + 1, #KEYS do
  local count = tonumber(ARGV[a])
  for first = a + 1, a + count, 1000 do
    local last = math.min(first + 999, a + count)
    local stored = redis.call('HMGET', KEYS[g], unpack(ARGV, first, last))
    for i = 1, #stored do
      if stored[i] then
        out[1] = 1
        out[#out + 1] = g - n
        out[#out + 1] = first + i - 1 - a
        out[#out + 1] = stored[i]
      end
    end
  end
  a = a + count + 1
end
if out[1] == 1 then
  return out
end

for i = 1, n do
  local state = redis.call('GET', KEYS[i])
  out[i + 1] = state
  if state then
    redis.call('APPEND', KEYS[i], ARGV[2 + i])
  else
    redis.call('SET', KEYS[i], '\0\0' .. ARGV[2 + i], 'PX', ttl)
  end
end
return out
