-- One binary-mode `user.storeUser` CloudEvent per request (attributes in
-- ce- headers, the user as a JSON body), as user-service's relay sends them.
-- Every request carries an id no other request of the run carries: the run
-- tag (first script argument) + the wrk thread + a counter. All connections
-- of a thread share its Lua state, so the counter is unique across them.
--   wrk -t1 -c64 -d10s -s bench/wrk/binary.lua URL -- RUN_TAG
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(here .. "report.lua")

setup = report.number_thread
done = report.done

local tag, counter = "run", 0

function init(args)
  tag = (args[1] or "run") .. "-" .. tostring(thread_no)
end

function request()
  counter = counter + 1
  -- A UUID-shaped user id, unique per request like the event id.
  local user = string.format("%08x-0000-4000-8000-%012x", thread_no, counter)
  return wrk.format("POST", nil, {
    ["ce-specversion"] = "1.0",
    ["ce-id"] = tag .. "-" .. counter,
    ["ce-source"] = "/user-service",
    ["ce-type"] = "user.storeUser",
    ["ce-subject"] = user,
    ["ce-time"] = "2026-11-27T00:00:00Z",
    ["Content-Type"] = "application/json",
  }, '{"id":"' .. user .. '","name":"bench user ' .. counter .. '"}')
end
