-- GET /v1/runs?created_after=…&created_before=… : the day before the newest runs.
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
local path = "/v1/runs?created_after=" .. os.getenv("BENCH_WINDOW_AFTER") .. "&created_before=" .. os.getenv("BENCH_WINDOW_BEFORE") .. "&limit=50"
function request()
  return wrk.format("GET", path, headers)
end
