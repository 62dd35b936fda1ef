#!lua flags=allow-cross-slot-keys
-- First call of a batch on one node: return each entity's state and append the batch's clicks
-- to it, atomically, so concurrent workers never lose a click. No arithmetic runs here: the
-- worker computes the features (streams/feature_store/entity.py).
--
-- A state is one string: a 2-byte length, the compacted base, then the log of clicks since.
--
-- KEYS     the node's row hashes (one per event minute, all in one slot: Redis 7.0 refuses
--          declared keys of several slots even under allow-cross-slot-keys)
-- ARGV[1] holds one MessagePack array A (one argument: cheaper to send and parse than thousands):
-- A[1]  n, the number of entities;  A[2]  r, the number of runs of them by TTL
-- A[3..2r+2]    per run: how many consecutive entities, their TTL in ms (negative: every
--               append refreshes it; else it is set on creation and by commit.lua)
-- then n entity state keys, all on this node (reached undeclared)
-- then n records to append, one per entity's log
-- then per row hash: the number of fields, then the fields (one per click)
--
-- A key that moved to another node fails the call part-way (the worker refreshes the slot map
-- and resends): records appended twice are harmless, the worker counts each click hash once.
-- Reply: {0, state 1, ..., state n} (nil where absent); or, when some clicks were seen before,
-- {1, row hash number, field number, stored row, ...} and nothing is written: the worker
-- resends the batch without them, so no click counts twice.

local A = cmsgpack.unpack(ARGV[1])
local n = tonumber(A[1])
local k = 2 * tonumber(A[2]) + 2  -- A[k + i]: key i, A[k + n + i]: its records
local out = {0}

local a = k + 2 * n + 1
for g = 1, #KEYS do
  local count = tonumber(A[a])
  for first = a + 1, a + count, 1000 do
    local last = math.min(first + 999, a + count)
    local stored = redis.call('HMGET', KEYS[g], unpack(A, first, last))
    for i = 1, #stored do
      if stored[i] then
        out[1] = 1
        out[#out + 1] = g
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

local i = 1
for run = 3, k, 2 do
  local ttl = A[run + 1]
  local refresh = ttl < 0
  if refresh then
    ttl = -ttl
  end
  for _ = 1, A[run] do
    local key, records = A[k + i], A[k + n + i]
    -- One call for a new entity (about half of them): create it, or get it if it exists.
    local state = redis.call('SET', key, '\0\0' .. records, 'NX', 'PX', ttl, 'GET')
    if state then
      if refresh then
        -- Short-lived kinds: small states, rewritten with their TTL renewed in one call.
        redis.call('SET', key, state .. records, 'PX', ttl)
      else
        redis.call('APPEND', key, records)
      end
    end
    out[i + 1] = state
    i = i + 1
  end
end
return out
