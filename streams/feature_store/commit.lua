#!lua flags=allow-cross-slot-keys
-- Second call of a batch on one node: store the clicks' feature rows, and fold entity logs
-- into their bases where the worker computed it, unless another worker did in between.
--
-- KEYS     the node's row hashes (one slot, see read_append.lua)
-- ARGV[1]  row TTL, ms;  ARGV[2]  entity TTL, ms
-- then per row hash: the number of fields, then field, row, field, row...
-- then per compaction: the entity state key, what the worker read of it up to the log (2-byte
-- length and base), the length it folded in (what it read plus what it appended), the new
-- length and base
--
-- Reply: the number of compactions done.

local row_ttl, entity_ttl = ARGV[1], ARGV[2]
local a = 3
for g = 1, #KEYS do
  local count = tonumber(ARGV[a])
  for first = a + 1, a + 2 * count, 1000 do
    redis.call('HSET', KEYS[g], unpack(ARGV, first, math.min(first + 999, a + 2 * count)))
  end
  redis.call('PEXPIRE', KEYS[g], row_ttl)
  a = a + 2 * count + 1
end

local done = 0
while a <= #ARGV do
  local key, expected, folded, base = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
  a = a + 4
  if redis.call('GETRANGE', key, 0, #expected - 1) == expected
      and redis.call('STRLEN', key) >= folded then
    redis.call('SET', key, base .. redis.call('GETRANGE', key, folded, -1), 'PX', entity_ttl)
    done = done + 1
  end
end
return done
