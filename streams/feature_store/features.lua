#!lua flags=allow-cross-slot-keys
-- Velocity and distinct-count features of a batch of clicks, in one call per Redis node.
--
-- State is one string per active entity (an IP, a session, an IP x advertiser pair...), a
-- MessagePack array whose size depends on the entity's recent activity, never on its total
-- clicks: click counts in time tiles per window, the entity's newest click times, and its
-- distinct elements with the tile they were last seen in. The layout, the windows and the
-- error bounds are in docs/redis-keys.md; the spec comes from slidr/features.py.
--
-- KEYS[1..n_ent]   entity state keys
-- KEYS[n_ent+1..]  feature-row keys, one per click (and node): a click seen again gets the
--                  row it got the first time, without counting it twice
-- ARGV[1]  spec, JSON: per entity kind {levels = {{tile_ms, tiles}...}, gap = 0|1,
--          sets = {{tile_ms, tiles}...}}
-- ARGV[2]  TTL of entity state, ms (wall clock, refreshed by every write)
-- ARGV[3]  TTL of feature rows, ms
-- ARGV[4]  n_ent
-- ARGV[5]  the work, MessagePack, flat: per click in (event time, click_id) order:
--          t_ms, row number, number of entities, then per entity: kind, state key index,
--          one element id per distinct set of the kind (0: the click has no such value)
-- ARGV[6]  DISTINCT_CAP: a set stops taking new elements at this size
--
-- Reply: MessagePack, flat: per click, per entity: a count per window, the gap in ms to the
-- previous click (-1: none known) if the kind has one, a count per distinct set.

local spec = cjson.decode(ARGV[1])
local entity_ttl = ARGV[2]
local row_ttl = ARGV[3]
local n_ent = tonumber(ARGV[4])
local n_rows = #KEYS - n_ent
local work = cmsgpack.unpack(ARGV[5])
local cap = tonumber(ARGV[6])
local floor = math.floor
local RING = 4 -- newest click times kept: exact gaps for clicks up to 3 behind the newest

local states = {} -- state key index -> decoded state

-- Running window sum of one velocity level, or distinct count of one set, relative to the
-- newest tile: recomputed when the newest tile moves, kept up to date otherwise.
local function level_sum(tiles, top, k)
  local s = 0
  for idx, c in pairs(tiles) do
    if idx > top - k and idx <= top then s = s + c end
  end
  return s
end

local function set_count(set, top, k)
  local s, size = 0, 0
  for _, tile in pairs(set) do
    size = size + 1
    if tile > top - k then s = s + 1 end
  end
  return s, size
end

local function load(ki, kind)
  local st = states[ki]
  if st then return st end
  local k = spec[kind]
  st = {k = k, ring = {}, levels = {}, tops = {}, sums = {}, sets = {}, stops = {}, counts = {},
    sizes = {}}
  local raw = redis.call('GET', KEYS[ki])
  local a = raw and cmsgpack.unpack(raw)
  if a then
    st.newest = a[1]
    for i, off in ipairs(a[2]) do st.ring[i] = a[1] - off end
  end
  for L, lv in ipairs(k.levels) do
    local tiles = {}
    local top = st.newest and floor(st.newest / lv[1]) or -1
    if a then
      local flat = a[3][L]
      for j = 1, #flat, 2 do tiles[top - flat[j]] = flat[j + 1] end
    end
    st.levels[L], st.tops[L] = tiles, top
    st.sums[L] = level_sum(tiles, top, lv[2])
  end
  for S, sv in ipairs(k.sets) do
    local set = {}
    local top = st.newest and floor(st.newest / sv[1]) or -1
    if a then
      local flat = a[4][S]
      for j = 1, #flat, 2 do set[flat[j]] = top - flat[j + 1] end
    end
    st.sets[S], st.stops[S] = set, top
    st.counts[S], st.sizes[S] = set_count(set, top, sv[2])
  end
  states[ki] = st
  return st
end

local function save(ki, st)
  local k = st.k
  local newest = st.newest
  local ring = {}
  for i, t in ipairs(st.ring) do ring[i] = newest - t end
  local levels, sets = {}, {}
  for L, lv in ipairs(k.levels) do
    local top, flat = st.tops[L], {}
    for idx, c in pairs(st.levels[L]) do
      if idx > top - lv[2] then
        flat[#flat + 1] = top - idx
        flat[#flat + 1] = c
      end
    end
    levels[L] = flat
  end
  for S, sv in ipairs(k.sets) do
    local top, flat = st.stops[S], {}
    for h, tile in pairs(st.sets[S]) do
      if tile > top - sv[2] then
        flat[#flat + 1] = h
        flat[#flat + 1] = top - tile
      end
    end
    sets[S] = flat
  end
  redis.call('SET', KEYS[ki], cmsgpack.pack({newest, ring, levels, sets}), 'PX', entity_ttl)
end

-- Inserts t into the newest-first ring; returns the gap to the click before it (-1: none).
local function ring_gap(ring, t)
  local pos = #ring + 1
  for i, r in ipairs(ring) do
    if r <= t then pos = i break end
  end
  local gap = -1
  if ring[pos] then gap = t - ring[pos] end
  if pos <= RING then
    table.insert(ring, pos, t)
    ring[RING + 1] = nil
  end
  return gap
end

-- Counts click t of entity state st and appends its features to out.
local function count(st, t, w, wi, out)
  local k = st.k
  local late = st.newest ~= nil and t < st.newest
  if not late then st.newest = t end
  for L, lv in ipairs(k.levels) do
    local tile, n = lv[1], lv[2]
    local idx, top, tiles = floor(t / tile), st.tops[L], st.levels[L]
    if idx > top then
      -- The window slides: tiles falling out of it leave the running sum.
      if idx - top >= n then
        st.sums[L] = 0
      else
        for j = top - n + 1, idx - n do st.sums[L] = st.sums[L] - (tiles[j] or 0) end
      end
      st.tops[L], top = idx, idx
    end
    local kept = idx > top - n -- older tiles are never read again: a later click skips them
    if kept then
      tiles[idx] = (tiles[idx] or 0) + 1
      st.sums[L] = st.sums[L] + 1
    end
    if idx == top then
      out[#out + 1] = st.sums[L]
    else
      local s = kept and 0 or 1
      for j = idx - n + 1, idx do s = s + (tiles[j] or 0) end
      out[#out + 1] = s
    end
  end
  if k.gap == 1 then out[#out + 1] = ring_gap(st.ring, t) end
  for S, sv in ipairs(k.sets) do
    local tile, n = sv[1], sv[2]
    local cur, top, set = floor(t / tile), st.stops[S], st.sets[S]
    if cur > top then
      st.stops[S], top = cur, cur
      st.counts[S], st.sizes[S] = set_count(set, top, n)
    end
    local h = w[wi + S - 1]
    if h ~= 0 then
      local seen = set[h]
      if seen == nil then
        if st.sizes[S] < cap then
          set[h] = cur
          st.sizes[S] = st.sizes[S] + 1
          if cur > top - n then st.counts[S] = st.counts[S] + 1 end
        end
      elseif cur > seen then
        if seen <= top - n and cur > top - n then st.counts[S] = st.counts[S] + 1 end
        set[h] = cur
      end
    end
    out[#out + 1] = st.counts[S]
  end
end

-- Feature rows of clicks seen before, fetched in chunks (unpack has a stack limit).
local cached = {}
for first = 1, n_rows, 1000 do
  local last = math.min(first + 999, n_rows)
  local got = redis.call('MGET', unpack(KEYS, n_ent + first, n_ent + last))
  for i = first, last do cached[i] = got[i - first + 1] end
end

local out, fresh = {}, {}
local p = 1
while p <= #work do
  local t, row, n_ops = work[p], work[p + 1], work[p + 2]
  p = p + 3
  local start = #out + 1
  local known = cached[row]
  if known then
    for _, v in ipairs(cmsgpack.unpack(known)) do out[#out + 1] = v end
    for _ = 1, n_ops do p = p + 2 + #spec[work[p]].sets end
  else
    for _ = 1, n_ops do
      local kind, ki = work[p], work[p + 1]
      local st = load(ki, kind)
      count(st, t, work, p + 2, out)
      p = p + 2 + #st.k.sets
    end
    local values = {}
    for i = start, #out do values[#values + 1] = out[i] end
    local packed = cmsgpack.pack(values)
    cached[row] = packed -- the same click twice in one batch
    fresh[row] = packed
  end
end

for ki, st in pairs(states) do save(ki, st) end
for row, packed in pairs(fresh) do
  redis.call('SET', KEYS[n_ent + row], packed, 'PX', row_ttl)
end
return cmsgpack.pack(out)
