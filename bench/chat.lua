-- wrk script: POST /v1/chat with the body {"message": "Hello"} and a bearer key that changes on
-- every request.
--
--   wrk [options] -s bench/chat.lua URL -- KEYS_FILE [LIMIT]
--
-- KEYS_FILE holds one key per line; the script uses its first LIMIT lines (default: all) and
-- sends them in turn as "Authorization: Bearer KEY". Every request is formatted once, in init(),
-- so that wrk spends the same small effort per request whatever the server under test: the rows
-- of bench/run.sh differ only in the server and in the keys.

wrk.method = "POST"
wrk.body = '{"message": "Hello"}'
wrk.headers["Content-Type"] = "application/json"

-- Setup phase (its own Lua state): number the threads so that each starts at another key.
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("thread_index", threads)
end

-- Running phase (one Lua state per thread).
local requests = {}
local count, current = 0, 0

function init(args)
    local path = args[1]
    local limit = tonumber(args[2] or "") or math.huge
    assert(path ~= nil, "usage: wrk -s chat.lua URL -- KEYS_FILE [LIMIT]")
    for key in io.lines(path) do
        if count >= limit then
            break
        end
        if key ~= "" then
            count = count + 1
            requests[count] = wrk.format(nil, nil, {
                ["Authorization"] = "Bearer " .. key,
                ["Content-Type"] = "application/json",
            }, nil)
        end
    end
    assert(count > 0, "no keys in " .. path)
    current = ((thread_index or 1) - 1) * 997 % count
end

function request()
    current = current % count + 1
    return requests[current]
end
