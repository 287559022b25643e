-- GET /v1/backup-schedules/42/runs?status=completed (skewed: the schedule's newest runs are queued).
dofile(os.getenv("BENCH_DIR") .. "/wrk/common.lua")
local path = "/v1/backup-schedules/42/runs?status=completed"
function request()
  return wrk.format("GET", path, headers)
end
