#!lua flags=allow-cross-slot-keys
-- Second call of a batch on one node: store the clicks' feature rows, and fold entity logs
-- into their bases where the worker computed it, unless another worker did in between.
--
-- KEYS     the row hashes, then the entity state keys to compact
-- ARGV[1]  number of row hashes;  ARGV[2]  row TTL, ms;  ARGV[3]  entity TTL, ms
-- then per row hash: the number of fields, then field, row, field, row...
-- then per compaction: the length and base the worker read (2-byte length + base), the
-- length of state it folded in (what it read plus what it appended), the new length and base
--
-- Reply: the number of compactions done.

local groups = tonumber(ARGV[1])
local row_ttl, entity_ttl = ARGV[2], ARGV[3]
local a = 4
for g = 1, groups do
  local count = tonumber(ARGV[a])
  for first = a + 1, a + 2 * count, 1000 do
    redis.call('HSET', KEYS[g], unpack(ARGV, first, math.min(first + 999, a + 2 * count)))
  end
  redis.call('PEXPIRE', KEYS[g], row_ttl)
  a = a + 2 * count + 1
end

local done = 0
for k = groups + 1, #KEYS do
  local key, expected, folded, base = KEYS[k], ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2]
  a = a + 3
  if redis.call('GETRANGE', key, 0, #expected - 1) == expected
      and redis.call('STRLEN', key) >= folded then
    redis.call('SET', key, base .. redis.call('GETRANGE', key, folded, -1), 'PX', entity_ttl)
    done = done + 1
  end
end
return done
