-- GET /v1/runs, a page of one type created before a random instant of the last 180 days:
-- no two requests alike, so none share an execution.
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
function request()
  local before = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() - math.random(1, 180 * 86400))
  return wrk.format("GET", "/v1/runs?type=inventory_sync&limit=50&created_before=" .. before, headers)
end
