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
-- A[1]  n, the number of entities;  A[2]  TTL of a new state, ms
-- A[3..n+2]     the entity state keys, all on this node (reached undeclared)
-- A[n+3..2n+2]  the records to append to each entity's log
-- then per row hash: the number of fields, then the fields (one per click)
--
-- A key that moved to another node fails the call part-way (the worker refreshes the slot map
-- and resends): records appended twice are harmless, the worker counts each click hash once.
-- Reply: {0, state 1, ..., state n} (nil where absent); or, when some clicks were seen before,
-- {1, row hash number, field number, stored row, ...} and nothing is written: the worker
-- resends the batch without them, so no click counts twice.

local A = cmsgpack.unpack(ARGV[1])
local n = tonumber(A[1])
local ttl = A[2]
local out = {0}

local a = 2 * n + 3
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

for i = 1, n do
  local key, records = A[2 + i], A[2 + n + i]
  -- One call for a new entity (about half of them): create it, or get it if it exists.
  local state = redis.call('SET', key, '\0\0' .. records, 'NX', 'PX', ttl, 'GET')
  if state then
    redis.call('APPEND', key, records)
  end
  out[i + 1] = state
end
return out
