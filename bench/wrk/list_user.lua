-- GET /v1/runs?user_id=1010&limit=50 (skewed: the newest runs are another user's).
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
local path = "/v1/runs?user_id=1010&limit=50"
function request()
  return wrk.format("GET", path, headers)
end
