-- GET /v1/runs?status=completed&limit=50 (skewed: the workspace's newest runs are queued).
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
local path = "/v1/runs?status=completed&limit=50"
function request()
  return wrk.format("GET", path, headers)
end
