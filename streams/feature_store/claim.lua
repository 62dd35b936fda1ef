#!lua flags=allow-cross-slot-keys
-- The decision cache: the first decision stored for a click stays; a click decided before (a
-- redelivery, or two workers overlapping in a rebalance) gets that decision back.
--
-- ARGV[1]  the hashes' time to live in ms, set again on every call
-- ARGV     then, per hash of this node (one per bucket and event minute, see decisions.py):
--          its key, n, then n pairs (click_id, decision JSON). Keys go undeclared: declared
--          keys must share one slot, and a node's hashes span several.
-- returns  per click that had a decision already: its place in this call (1-based), that
--          decision
local ttl = ARGV[1]
local a, i = 2, 0
local earlier = {}
while a <= #ARGV do
  local key = ARGV[a]
  local n = tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, n do
    i = i + 1
    if redis.call('HSETNX', key, ARGV[a], ARGV[a + 1]) == 0 then
      earlier[#earlier + 1] = i
      earlier[#earlier + 1] = redis.call('HGET', key, ARGV[a])
    end
    a = a + 2
  end
  redis.call('PEXPIRE', key, ttl)
end
return earlier
