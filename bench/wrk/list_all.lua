-- GET /v1/runs?limit=50: the unfiltered first page, which the skewed filters are held to.
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
local path = "/v1/runs?limit=50"
function request()
  return wrk.format("GET", path, headers)
end
