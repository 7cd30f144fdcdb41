/**
 * Lua scripts of the Redis real-time store. Amounts are decimal strings of non-negative int64
 * nanos; Lua numbers are doubles (exact only to 2^53), so arithmetic splits each amount into
 * {hi, lo} with lo < 1e9 (both exact) and formats back with string.format. Redis's own HINCRBY
 * is exact int64. Keys of one wallet share the hash tag {wal_...} (one Redis Cluster slot):
 *   KEYS[1] s: hash gen, odlim, od, unc   (generation, overdraft limit, overdraft used, postpaid)
 *   KEYS[2] a: hash grant id -> available nanos
 *   KEYS[3] m: hash grant id -> "effective_ms|expires_ms|charge,ids|models"
 *   KEYS[4] o: zset of burn-down keys (score 0, ordered by member: see domain/burn-order.ts)
 */

const BIG = `
local function P(s)
  if s == false or s == nil or s == '' then return {0, 0} end
  local n = #s
  if n <= 9 then return {0, tonumber(s)} end
  return {tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))}
end
local function F(x)
  if x[1] == 0 then return string.format('%d', x[2]) end
  return string.format('%d%09d', x[1], x[2])
end
local function LT(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end
local function ADD(a, b)
  local hi, lo = a[1] + b[1], a[2] + b[2]
  if lo >= 1000000000 then lo = lo - 1000000000; hi = hi + 1 end
  return {hi, lo}
end
local function SUB(a, b)
  local hi, lo = a[1] - b[1], a[2] - b[2]
  if lo < 0 then lo = lo + 1000000000; hi = hi - 1 end
  return {hi, lo}
end
local function Z(a) return a[1] == 0 and a[2] == 0 end
local function AVAILABLE(od, now)
  local t = {0, 0}
  local kv = redis.call('HGETALL', KEYS[2])
  local mv = redis.call('HGETALL', KEYS[3])
  local metas = {}
  for i = 1, #mv, 2 do metas[mv[i]] = mv[i + 1] end
  for i = 1, #kv, 2 do
    local meta = metas[kv[i]] or ''
    local eff, exp = string.match(meta, '^([^|]*)|([^|]*)|')
    if eff ~= nil and tonumber(eff) <= now and (exp == '' or tonumber(exp) > now) then t = ADD(t, P(kv[i + 1])) end
  end
  if LT(t, od) then return '-' .. F(SUB(od, t)) end
  return F(SUB(t, od))
end
`;

/**
 * The debit decision as a Lua function over the wallet's keys (KEYS[1..4]): amount, mode ("all" |
 * "partial"), now_ms (number), charge_id, model. Returns {'nostate'} | {'insufficient', gen,
 * shortfall, available} | {'ok', gen, od_taken, uncovered, shortfall, available, id1, amt1, ...}.
 */
const DEBIT_FN = `
local function DEBIT(amountS, mode, now, chargeS, modelS)
  local st = redis.call('HMGET', KEYS[1], 'gen', 'odlim', 'od', 'unc')
  if not st[1] then return {'nostate'} end
  local amount = P(amountS)
  local rest = amount
  local charge = ',' .. chargeS .. ','
  local model = ',' .. modelS .. ','
  local takes = {}
  local members = redis.call('ZRANGE', KEYS[4], 0, -1)
  for i = 1, #members do
    if Z(rest) then break end
    local id = string.match(members[i], '([^|]+)$')
    local av = P(redis.call('HGET', KEYS[2], id))
    if not Z(av) then
      local meta = redis.call('HGET', KEYS[3], id) or ''
      local eff, exp, ch, md = string.match(meta, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
      local ok = eff ~= nil and tonumber(eff) <= now and (exp == '' or tonumber(exp) > now)
      if ok and ch ~= '' then ok = string.find(',' .. ch .. ',', charge, 1, true) ~= nil end
      if ok and md ~= '' then ok = string.find(',' .. md .. ',', model, 1, true) ~= nil end
      if ok then
        local take = av
        if LT(rest, av) then take = rest end
        takes[#takes + 1] = id
        takes[#takes + 1] = take
        rest = SUB(rest, take)
      end
    end
  end
  local odlim = P(st[2])
  local od = P(st[3])
  local room = {0, 0}
  if LT(od, odlim) then room = SUB(odlim, od) end
  local odtake = room
  if LT(rest, room) then odtake = rest end
  rest = SUB(rest, odtake)
  local unc = {0, 0}
  local short = {0, 0}
  if mode == 'all' then
    if not Z(rest) then
      if st[4] ~= '1' then
        return {'insufficient', st[1], F(amount), AVAILABLE(od, now)}
      end
      unc = rest
    end
  else
    short = rest
  end
  local out = {'ok', st[1], F(odtake), F(unc), F(short), ''}
  for i = 1, #takes, 2 do
    local s = F(takes[i + 1])
    redis.call('HINCRBY', KEYS[2], takes[i], '-' .. s)
    out[#out + 1] = takes[i]
    out[#out + 1] = s
  end
  od = ADD(od, odtake)
  if not Z(odtake) then redis.call('HSET', KEYS[1], 'od', F(od)) end
  out[6] = AVAILABLE(od, now)
  return out
end
`;

/** debit: ARGV amount, mode ("all" | "partial"), now_ms, charge_id, model; the result of DEBIT. */
export const DEBIT_LUA = `${BIG}${DEBIT_FN}
return DEBIT(ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5])
`;

/**
 * debit many (one wallet, one script run for a whole group's items, decided in order): ARGV now_ms,
 * then per item amount, mode, charge_id, model. Returns {'nostate'} (nothing decided) or one DEBIT
 * result per item.
 */
export const DEBIT_MANY_LUA = `${BIG}${DEBIT_FN}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'nostate'} end
local now = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 4 do out[#out + 1] = DEBIT(ARGV[i], ARGV[i + 1], now, ARGV[i + 2], ARGV[i + 3]) end
return out
`;

/**
 * credit: ARGV gen, od_release, id1, amt1, ... Gives back slices taken under gen. A missing state
 * or another generation (a rebuild happened) drops the state instead: {'stale'}; else {'ok'}.
 */
export const CREDIT_LUA = `${BIG}
local gen = redis.call('HGET', KEYS[1], 'gen')
local stale = (not gen) or gen ~= ARGV[1]
if not stale then
  for i = 3, #ARGV, 2 do
    if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then stale = true end
  end
end
if stale then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
  return {'stale'}
end
for i = 3, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
local rel = P(ARGV[2])
if not Z(rel) then
  -- Never below 0 (F formats non-negative amounts only; the in-process store clamps alike).
  local cur = P(redis.call('HGET', KEYS[1], 'od'))
  if LT(cur, rel) then redis.call('HSET', KEYS[1], 'od', '0') else redis.call('HSET', KEYS[1], 'od', F(SUB(cur, rel))) end
end
return {'ok'}
`;

/**
 * load: ARGV gen, odlim, od, unc, then per grant: id, available, burn key, meta. Installs the
 * snapshot only when the wallet has no state; returns the generation in force.
 */
export const LOAD_LUA = `
local cur = redis.call('HGET', KEYS[1], 'gen')
if cur then return cur end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
for i = 5, #ARGV, 4 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[4], 0, ARGV[i + 2])
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 3])
end
redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'odlim', ARGV[2], 'od', ARGV[3], 'unc', ARGV[4])
return ARGV[1]
`;

/** bench: the cheapest script, for the EVALSHA round-trip baseline. */
export const PING_LUA = `return ARGV[1]`;
