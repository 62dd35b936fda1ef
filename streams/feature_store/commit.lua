#!lua flags=allow-cross-slot-keys
-- Second call of a batch on one node: store the clicks' feature rows, and fold entity logs
-- into their bases where the worker computed it, unless another worker did in between.
--
-- KEYS     the node's row hashes (one slot, see read_append.lua)
-- ARGV[1] holds one MessagePack array A (see read_append.lua):
-- A[1]  row TTL, ms
-- then per row hash: the number of fields, then field, row, field, row...
-- then per compaction: the entity state key, what the worker read of it up to the log (2-byte
-- length and base), the length it folded in (what it read plus what it appended), the new
-- length and base, the state's TTL in ms
--
-- Reply: the number of compactions done.

local A = cmsgpack.unpack(ARGV[1])
local row_ttl = A[1]
local a = 2
for g = 1, #KEYS do
  local count = tonumber(A[a])
  for first = a + 1, a + 2 * count, 1000 do
    redis.call('HSET', KEYS[g], unpack(A, first, math.min(first + 999, a + 2 * count)))
  end
  redis.call('PEXPIRE', KEYS[g], row_ttl)
  a = a + 2 * count + 1
end

local done = 0
while a <= #A do
  local key, expected, folded, base = A[a], A[a + 1], tonumber(A[a + 2]), A[a + 3]
  local ttl = A[a + 4]
  a = a + 5
  if redis.call('GETRANGE', key, 0, #expected - 1) == expected
      and redis.call('STRLEN', key) >= folded then
    redis.call('SET', key, base .. redis.call('GETRANGE', key, folded, -1), 'PX', ttl)
    done = done + 1
  end
end
return done
