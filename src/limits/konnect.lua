#!lua name=konnect
-- Konnect's cluster-wide limits: every node calls these, one call per request, so that the limits
-- of an account (or a test key) hold across all nodes together, exactly. Each function runs
-- atomically and reads Redis's own clock, never a node's. Keys carry their account or key in a
-- hash tag ({a:ID}, {k:ID}).
--
-- kn_test   a test key's requests per minute (GCRA) and per UTC day, both checked before either
--           is taken
-- kn_admit  a live request: its account's requests per minute, requests in flight, monthly
--           requests and tokens, and its key's own monthly requests (counted over the key's line
--           of replacements); reserves one request and up to the tokens wanted, as a lease that
--           lapses if its node never settles it (a node that dies mid-request)
-- kn_settle the lease's request was billed: its tokens become usage
-- kn_release the lease's request was not billed: request and tokens go back. A release that finds
--           no lease (its admission timed out on the node and may still be on its way) leaves a
--           void fence, so that the admission, if it comes later, is refused and holds nothing
-- kn_reconcile raises a seeded month's counts to what the ledger holds, when Redis may have lost
--           some (restored from an older copy, a replica promoted before it caught up, settlements
--           of rows that reached the ledger late); never lowers them
-- kn_raise  the same for one count (a key line's): raises it to a floor, never lowers it

-- The version of these functions. A server loads them only when Redis holds none or an older
-- version (kn_version), so that a server of an older version that reconnects during a rolling
-- upgrade does not put its own back under the newer servers. (Servers from before kn_version
-- replace them whenever they connect: the functions accept their calls.)
local VERSION = 5

local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- GCRA over window_ms with a burst of limit. Returns allowed, remaining, reset_ms, retry_ms and
-- the new arrival time to store when allowed.
local function gcra(key, limit, window_ms, now)
    local interval = window_ms / limit
    local tat = tonumber(redis.call('GET', key))
    local base = now
    if tat ~= nil and tat > now then
        base = tat
    end
    local nxt = base + interval
    if nxt - now > window_ms then
        return 0, 0, base - now, nxt - now - window_ms, nil
    end
    return 1, math.floor((window_ms - (nxt - now)) / interval), nxt - now, 0, nxt
end

local function num(v)
    return tonumber(v) or 0
end

-- KEYS: the key's minute cell, its day prefix. ARGV: rpm, rpd.
-- Returns {refused (0, 1 day, 2 minute), minute remaining, minute reset ms, minute retry ms,
--          day remaining, day reset ms}.
local function kn_test(keys, args)
    local rpm, rpd = num(args[1]), num(args[2])
    local now = now_ms()
    local day = math.floor(now / 86400000)
    local day_key = keys[2] .. day
    local day_reset = (day + 1) * 86400000 - now
    local count = num(redis.call('GET', day_key))
    if rpd > 0 and count >= rpd then
        return {1, 0, 0, 0, 0, day_reset}
    end
    local ok, remaining, reset, retry, nxt = 1, 0, 0, 0, nil
    if rpm > 0 then
        ok, remaining, reset, retry, nxt = gcra(keys[1], rpm, 60000, now)
        if ok == 0 then
            return {2, 0, math.ceil(reset), math.ceil(retry), math.max(rpd - count, 0), day_reset}
        end
        redis.call('SET', keys[1], tostring(nxt), 'PX', math.ceil(nxt - now) + 1000)
    end
    if rpd > 0 then
        redis.call('INCR', day_key)
        redis.call('PEXPIRE', day_key, day_reset + 86400000)
    end
    return {0, remaining, math.ceil(reset), 0, math.max(rpd - count - 1, 0), day_reset}
end

-- Leases that lapsed (their node never settled them: it died, or was cut off for longer than any
-- request may last) count as billed, with the tokens they held: never an overshoot. Each is
-- remembered for a week, so that a settlement or release that arrives later (its node was cut
-- off from Redis, not dead) puts the count right: in `lapsed`, a sorted set by lapse time, and
-- what it was counted as in `held` under "x:" and its id (month:tokens:counted).
local LAPSED_MS = 7 * 86400000
local function lapse(leases, held, reserved, tokens, month, now, lapsed)
    if lapsed then
        for _, id in ipairs(redis.call('ZRANGEBYSCORE', lapsed, '-inf', now - LAPSED_MS)) do
            redis.call('HDEL', held, 'x:' .. id)
        end
        redis.call('ZREMRANGEBYSCORE', lapsed, '-inf', now - LAPSED_MS)
    end
    local gone = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
    for _, id in ipairs(gone) do
        local h = redis.call('HGET', held, id)
        redis.call('ZREM', leases, id)
        redis.call('HDEL', held, id)
        if h then
            local m, t = string.match(h, '^(%d+):(%d+)')
            local k = string.match(h, '(:k:.+)$') or ''
            redis.call('DECRBY', reserved, num(t))
            local counted = 0
            if m == month then
                redis.call('INCRBY', tokens, num(t))
                redis.call('PEXPIRE', tokens, 40 * 86400000)
                counted = 1
            end
            if lapsed then
                redis.call('ZADD', lapsed, now, id)
                redis.call('HSET', held, 'x:' .. id, m .. ':' .. t .. ':' .. counted .. k)
            end
        end
    end
end

-- What a lapsed lease was counted as: its month, its tokens counted as billed (0 when they were
-- not, at a month's turn), whether it counted in its key's line, or nil when the lease did not
-- lapse. Forgets it.
local function unlapse(lapsed, held, lease)
    if not lapsed or redis.call('ZREM', lapsed, lease) == 0 then
        return nil
    end
    local l = redis.call('HGET', held, 'x:' .. lease)
    redis.call('HDEL', held, 'x:' .. lease)
    if not l then
        return nil
    end
    local m, t, counted = string.match(l, '^(%d+):(%d+):(%d)')
    if counted ~= '1' then
        t = 0
    end
    return m, num(t), string.find(l, ':k:', 1, true) ~= nil
end

-- Gives back one request of a count (never below zero).
local function give_back(count)
    if count and num(redis.call('GET', count)) > 0 then
        redis.call('DECR', count)
    end
end

-- KEYS: the account's minute cell, the month's requests, the month's tokens, the leases (a sorted
-- set by lapse time), what each lease holds, the tokens reserved, the month's seeded mark, the
-- void fences (a sorted set by expiry: leases released before their admission arrived), the
-- lapsed leases (see lapse), and for a key with a line of its own the line's month's requests.
-- ARGV: rpm, max in flight, request quota (-1: none), token quota (-1: none), tokens wanted,
-- lease id, lease ms, month, and for a key with a line: its own monthly quota (0: counted
-- without a limit).
-- Returns {outcome, tokens held, minute remaining, minute reset ms, minute retry ms}: outcome 0
-- admitted, 1 not seeded (the month's usage is not in Redis yet: refuse, it is money), 2 rate,
-- 3 in flight, 4 requests used up, 5 tokens used up, 6 void (released already: nothing taken),
-- 7 the key's own requests used up. A lease that counted in the key's line names it (":k:" and
-- the line's key).
local function kn_admit(keys, args)
    local rate, requests, tokens, leases, held, reserved, seeded, voids, lapsed =
        keys[1], keys[2], keys[3], keys[4], keys[5], keys[6], keys[7], keys[8], keys[9]
    local rpm, max_inflight = num(args[1]), num(args[2])
    local quota_requests, quota_tokens, want = num(args[3]), num(args[4]), num(args[5])
    local lease, lease_ms, month = args[6], num(args[7]), args[8]
    local line, key_quota = keys[10], tonumber(args[9])
    local now = now_ms()

    -- A server of the version before (no fences) passes seven keys: during a rolling upgrade the
    -- newest server's functions replace its own, and its calls must still work.
    if voids then
        redis.call('ZREMRANGEBYSCORE', voids, '-inf', now)
        if redis.call('ZREM', voids, lease) == 1 then
            return {6, 0, 0, 0, 0}
        end
    end
    lapse(leases, held, reserved, tokens, month, now, lapsed)
    if redis.call('EXISTS', requests) == 0 and redis.call('EXISTS', seeded) == 0 then
        return {1, 0, 0, 0, 0}
    end
    local ok, remaining, reset, retry, nxt = 1, 0, 0, 0, nil
    if rpm > 0 then
        ok, remaining, reset, retry, nxt = gcra(rate, rpm, 60000, now)
        if ok == 0 then
            return {2, 0, 0, math.ceil(reset), math.ceil(retry)}
        end
    end
    if max_inflight > 0 and redis.call('ZCARD', leases) >= max_inflight then
        return {3, 0, remaining, math.ceil(reset), 0}
    end
    local used = num(redis.call('GET', requests))
    if quota_requests >= 0 and used >= quota_requests then
        return {4, 0, remaining, math.ceil(reset), 0}
    end
    if line and key_quota then
        -- Seeded with the month, from the ledger: a line missing before then is refused, like
        -- its account; one missing after had no request in the ledger then, and every request
        -- since counted here: it starts from 0.
        if redis.call('EXISTS', line) == 0 then
            if redis.call('EXISTS', seeded) == 0 then
                return {1, 0, 0, 0, 0}
            end
            redis.call('SET', line, 0, 'PX', 40 * 86400000)
        end
        if key_quota > 0 and num(redis.call('GET', line)) >= key_quota then
            return {7, 0, remaining, math.ceil(reset), 0}
        end
    else
        line = nil
    end
    local hold = 0
    if quota_tokens >= 0 then
        local billed, r = num(redis.call('GET', tokens)), num(redis.call('GET', reserved))
        if billed + r >= quota_tokens then
            return {5, 0, remaining, math.ceil(reset), 0}
        end
        hold = math.min(want, quota_tokens - billed - r)
    end
    if nxt ~= nil then
        redis.call('SET', rate, tostring(nxt), 'PX', math.ceil(nxt - now) + 1000)
    end
    redis.call('INCR', requests)
    redis.call('PEXPIRE', requests, 40 * 86400000)
    redis.call('INCRBY', reserved, hold)
    if line then
        redis.call('INCR', line)
        redis.call('PEXPIRE', line, 40 * 86400000)
    end
    redis.call('ZADD', leases, now + lease_ms, lease)
    redis.call('HSET', held, lease, month .. ':' .. hold .. (line and (':k:' .. line) or ''))
    return {0, hold, remaining, math.ceil(reset), 0}
end

-- KEYS: the month's tokens, the leases, what each holds, the tokens reserved, the month's
-- requests, the month's seeded mark, the lapsed leases. ARGV: lease id, tokens billed, "1" for a
-- settlement that waited on its node while Redis was away, the month. While the month is not
-- seeded (Redis lost it), the tokens are not added: the seeding, from the ledger where this
-- request's row already is, counts them, and a count made now would keep the seed out (SET NX).
-- A settlement that waited adds its tokens only if its lease is still there, or lapsed: if Redis
-- lost the lease, it was seeded again after the row was committed, so the seed counted them. A
-- lease that lapsed counted the tokens it held as billed; the difference is put right.
local function kn_settle(keys, args)
    local tokens, leases, held, reserved = keys[1], keys[2], keys[3], keys[4]
    local seeded = redis.call('EXISTS', keys[5]) == 1 or redis.call('EXISTS', keys[6]) == 1
    local h = redis.call('HGET', held, args[1])
    local leased = redis.call('ZREM', leases, args[1]) == 1
    if leased and h then
        local _, t = string.match(h, '^(%d+):(%d+)')
        redis.call('DECRBY', reserved, num(t))
        redis.call('HDEL', held, args[1])
    end
    local m, counted = nil, 0
    if not leased then
        m, counted = unlapse(keys[7], held, args[1])
    end
    if m ~= nil then
        if m == args[4] and seeded then
            local now = num(redis.call('GET', tokens))
            local delta = num(args[2]) - counted
            if now + delta < 0 then
                delta = -now
            end
            redis.call('INCRBY', tokens, delta)
            redis.call('PEXPIRE', tokens, 40 * 86400000)
        end
    elseif seeded and (args[3] ~= '1' or leased) then
        redis.call('INCRBY', tokens, num(args[2]))
        redis.call('PEXPIRE', tokens, 40 * 86400000)
    end
    return 1
end

-- KEYS: the month's requests, the leases, what each holds, the tokens reserved, the void fences,
-- the month's tokens, the lapsed leases, and for a key with a line the line's month's requests
-- (given back when the lease counted in it). ARGV: lease id, the month. Releasing twice is harmless:
-- the second finds no lease and leaves a fence that no admission ever meets (lease ids are
-- request ids, never reused), gone after ten minutes. A lease that lapsed gives back its request
-- and the tokens it was counted as billed.
local VOID_MS = 600000
local function kn_release(keys, args)
    local requests, leases, held, reserved, voids = keys[1], keys[2], keys[3], keys[4], keys[5]
    local h = redis.call('HGET', held, args[1])
    if redis.call('ZREM', leases, args[1]) == 1 and h then
        local _, t = string.match(h, '^(%d+):(%d+)')
        redis.call('DECRBY', reserved, num(t))
        redis.call('HDEL', held, args[1])
        give_back(requests)
        if string.find(h, ':k:', 1, true) then
            give_back(keys[8])
        end
        return 1
    end
    local m, counted, in_line = unlapse(keys[7], held, args[1])
    if m ~= nil then
        if m == args[2] then
            give_back(requests)
            if in_line then
                give_back(keys[8])
            end
            redis.call('DECRBY', keys[6], math.min(counted, num(redis.call('GET', keys[6]))))
        end
    elseif voids then -- (four keys from a server of the version before: no fence)
        local now = now_ms()
        redis.call('ZREMRANGEBYSCORE', voids, '-inf', now)
        redis.call('ZADD', voids, now + VOID_MS, args[1])
        redis.call('PEXPIRE', voids, VOID_MS)
    end
    return 1
end

-- KEYS: the month's requests, the month's tokens, the leases, the month's seeded mark. ARGV: the
-- requests and tokens the ledger holds for the month. The requests counted are at least those
-- billed and those in flight (leased); the tokens at least those billed. Both floors may count a
-- request committed but not settled yet twice (its settlement comes after): an error towards
-- refusing, made only when Redis may have lost counts. Unseeded months are the seeding's.
-- Returns 1 when a count was raised.
local function kn_reconcile(keys, args)
    if redis.call('EXISTS', keys[4]) == 0 then
        return 0
    end
    local raised = 0
    local counted = num(args[1]) + redis.call('ZCARD', keys[3])
    if num(redis.call('GET', keys[1])) < counted then
        redis.call('SET', keys[1], counted, 'PX', 40 * 86400000)
        raised = 1
    end
    local floor = num(args[2])
    if num(redis.call('GET', keys[2])) < floor then
        redis.call('SET', keys[2], floor, 'PX', 40 * 86400000)
        raised = 1
    end
    return raised
end

-- KEYS: a key line's month's requests, what each lease holds. ARGV: the requests the ledger
-- holds for the line, the month. The count is at least those and the line's leases of the month
-- in flight (never lowered). Returns 1 when it was raised.
local function kn_raise(keys, args)
    local floor = num(args[1])
    local held = redis.call('HGETALL', keys[2])
    local tag = ':k:' .. keys[1]
    for i = 1, #held, 2 do
        local v = held[i + 1]
        if string.sub(held[i], 1, 2) ~= 'x:' and string.sub(v, 1, #args[2] + 1) == args[2] .. ':'
            and string.sub(v, -#tag) == tag then
            floor = floor + 1
        end
    end
    if num(redis.call('GET', keys[1])) < floor then
        redis.call('SET', keys[1], floor, 'PX', 40 * 86400000)
        return 1
    end
    return 0
end

redis.register_function{function_name = 'kn_version', callback = function() return VERSION end,
                        flags = {'no-writes'}}
redis.register_function('kn_test', kn_test)
redis.register_function('kn_admit', kn_admit)
redis.register_function('kn_settle', kn_settle)
redis.register_function('kn_release', kn_release)
redis.register_function('kn_reconcile', kn_reconcile)
redis.register_function('kn_raise', kn_raise)
