-- POST /v1/runs/{id}/progress on one hot run: row-lock contention.
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
local path = "/v1/runs/" .. os.getenv("BENCH_HOT_ID") .. "/progress"
local body = '{"counts":{"processed":1}}'
function request()
  return wrk.format("POST", path, headers, body)
end
