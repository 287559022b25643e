-- GET /v1/runs/{id} for a random run of workspace 1 (seeded ids 10, 20, 30, ...).
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
local max_k = tonumber(os.getenv("BENCH_MAX_K"))
function request()
  return wrk.format("GET", "/v1/runs/" .. (10 * math.random(1, max_k)), headers)
end
