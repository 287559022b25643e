-- GET /v1/backup-schedules/{id}/runs for a random schedule of workspace 1.
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
function request()
  return wrk.format("GET", "/v1/backup-schedules/" .. math.random(1, 200) .. "/runs", headers)
end
