-- social.lua — wrk script for the social-network benchmark (bench/social.sh).
--
-- Usage: wrk -s bench/social.lua http://HOST:PORT -- SESSIONS.lua [SEED [HOME,USER,COMPOSE]]
--
-- SESSIONS.lua is written by bench/social_login.py: { users = N, names = {...}, tokens = {...} },
-- names[i] owning tokens[i]. Each request is drawn at random (per-thread generator seeded with
-- SEED and the thread's number, so a run is repeatable) from the classic mix:
--   60%  GET  /api/v1/timelines/home            as a random logged-in user (Bearer token)
--   30%  GET  /api/v1/accounts/userK/posts      K uniform in 1..N (any seeded user; no login)
--   10%  POST /api/v1/posts {"text": ...}       as a random logged-in user
-- The third argument changes the percentages (default 60,30,10), e.g. 100,0,0 for home pages only.
-- At the end, done() prints one line with how many requests of each kind were sent:
--   social-mix: home=H user=U compose=C
-- wrk itself counts non-2xx answers and socket errors; bench/social.sh requires both to be 0.

local threads = {}

function setup(thread)
    table.insert(threads, thread)
    thread:set("id", #threads)
end

function init(args)
    local file, seed = args[1], tonumber(args[2] or "1")
    local h, u, c = string.match(args[3] or "60,30,10", "^(%d+),(%d+),(%d+)$")
    if file == nil or seed == nil or h == nil or h + u + c ~= 100 then
        error("social.lua: usage: wrk -s social.lua URL -- SESSIONS.lua [SEED [HOME,USER,COMPOSE]]"
            .. " (percentages adding up to 100)")
    end
    pct_home, pct_user = tonumber(h), tonumber(h) + tonumber(u)
    local s = dofile(file)
    if type(s) ~= "table" or type(s.users) ~= "number" or s.users < 1 or type(s.tokens) ~= "table"
        or #s.tokens == 0 or type(s.names) ~= "table" or #s.names ~= #s.tokens then
        error("social.lua: " .. file .. " holds no sessions")
    end
    users = s.users
    math.randomseed(seed * 1000 + id)
    -- Home-timeline requests never change: build them once per session.
    home_reqs, auth = {}, {}
    for i, token in ipairs(s.tokens) do
        auth[i] = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }
        home_reqs[i] = wrk.format("GET", "/api/v1/timelines/home", { ["Authorization"] = "Bearer " .. token })
    end
    n_home, n_user, n_compose = 0, 0, 0
end

function request()
    local r = math.random(100)
    if r <= pct_home then
        n_home = n_home + 1
        return home_reqs[math.random(#home_reqs)]
    elseif r <= pct_user then
        n_user = n_user + 1
        return wrk.format("GET", "/api/v1/accounts/user" .. math.random(users) .. "/posts")
    end
    n_compose = n_compose + 1
    local body = string.format('{"text":"benchmark post %d of wrk thread %d"}', n_compose, id)
    return wrk.format("POST", "/api/v1/posts", auth[math.random(#auth)], body)
end

function done(summary, latency, requests)
    local h, u, c = 0, 0, 0
    for _, t in ipairs(threads) do
        h = h + t:get("n_home")
        u = u + t:get("n_user")
        c = c + t:get("n_compose")
    end
    io.write(string.format("social-mix: home=%d user=%d compose=%d\n", h, u, c))
end
