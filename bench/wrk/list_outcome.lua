-- GET /v1/runs?outcome=failed&limit=50 (skewed: a rare outcome, behind the newest runs, all pending).
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
local path = "/v1/runs?outcome=failed&limit=50"
function request()
  return wrk.format("GET", path, headers)
end
