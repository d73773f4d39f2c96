-- Batch content mode: each request is a JSON array of 100 structured
-- `user.storeUser` events (`application/cloudevents-batch+json`), every
-- event with an id unique in the run (run tag, wrk thread, counter).
--   wrk -t1 -c64 -d10s -s bench/wrk/batch.lua URL -- RUN_TAG [BATCH=100]
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(here .. "report.lua")

setup = report.number_thread
done = report.done

local tag, counter, size = "run", 0, 100

function init(args)
  tag = (args[1] or "run") .. "-" .. tostring(thread_no)
  size = tonumber(args[2]) or size
end

function request()
  local events = {}
  for i = 1, size do
    counter = counter + 1
    local user = string.format("%08x-0000-4000-8000-%012x", thread_no, counter)
    events[i] = '{"specversion":"1.0","id":"' .. tag .. "-" .. counter ..
      '","source":"/user-service","type":"user.storeUser","subject":"' .. user ..
      '","time":"2026-11-27T00:00:00Z","datacontenttype":"application/json",' ..
      '"data":{"id":"' .. user .. '","name":"bench user ' .. counter .. '"}}'
  end
  return wrk.format("POST", nil,
    { ["Content-Type"] = "application/cloudevents-batch+json" },
    "[" .. table.concat(events, ",") .. "]")
end
