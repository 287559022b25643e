-- GET /v1/runs, a page deep in the list, through a cursor.
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
local path = "/v1/runs?type=inventory_sync&limit=50&cursor=" .. os.getenv("BENCH_CURSOR")
function request()
  return wrk.format("GET", path, headers)
end
