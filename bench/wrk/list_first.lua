-- GET /v1/runs, first page of one type.
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
function request()
  return wrk.format("GET", "/v1/runs?type=inventory_sync&limit=50", headers)
end
