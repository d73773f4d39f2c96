-- `POST /v1/user` with the seed's body shape and a name unique in the run,
-- to load user-service. With a second argument MAX, wrk exits as soon as
-- MAX users are created, without its summary: wrk's -d is a fixed time,
-- and a backlog wants a count. Requests in flight then may or may not have
-- created their user: count the users afterwards.
--   wrk -t1 -c8 -d10s -s bench/wrk/create.lua URL/v1/user -- RUN_TAG [MAX]
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(here .. "report.lua")

setup = report.number_thread
done = report.done

local tag, counter, created, max = "run", 0, 0, nil

function init(args)
  tag = (args[1] or "run") .. "-" .. tostring(thread_no)
  max = tonumber(args[2])
end

function request()
  counter = counter + 1
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" },
    '{"name":"bench ' .. tag .. "-" .. counter .. '","password":"bench-password"}')
end

function response(status, headers, body)
  if status == 201 then
    created = created + 1
    if max and created >= max then
      os.exit(0)
    end
  end
end
